"""Conformance suite over every registered kernel and target (DESIGN.md section 5).

The run-level properties of every method (compiles once, deterministic, batch invariant, resume,
non-finite targets, options, exact counts) are in ``test_conformance_methods.py``."""
import inspect

import equinox as eqx

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.methods import get_method

# chain methods whose build needs only a log-density (the composite-target ones need the target itself)
KERNEL_METHODS = [n for n in samplax.method_names()
                  if get_method(n).kind == "chain" and not get_method(n).needs_target]


def _gauss(d=3):
    return samplax.targets.get("std_gaussian", dim=d)


@pytest.mark.parametrize("name", KERNEL_METHODS)
def test_kernel_protocol(name, key):  # noqa: D103
    """key-first signatures, stable state shapes/dtypes, works under vmap, finite infos."""
    spec = get_method(name)
    target = _gauss(3)
    opts = spec.resolve_options({})
    algo = spec.build(target.logdensity, 3, 100, 2, **opts)
    for fn in (algo.init, algo.step):
        first = next(iter(inspect.signature(fn).parameters))
        assert first == "key", f"{name}: {fn} must take key first, takes {first!r}"
    x0 = jnp.full((2, 3), 0.3)
    keys = jax.random.split(key, 2)
    states = jax.vmap(algo.init)(keys, x0)
    astate, _ = algo.adapter.init(keys, states)
    params = algo.adapter.params(astate)
    new_states, infos = jax.jit(jax.vmap(algo.step))(keys, states, params)
    for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(new_states)):
        assert a.shape == b.shape and a.dtype == b.dtype
    for field in ("acceptance_rate", "is_nonfinite", "num_logdensity_evals", "num_grad_evals"):
        assert hasattr(infos, field), f"{name}: info lacks {field}"
    assert np.all(np.isfinite(np.asarray(infos.acceptance_rate)))
    assert np.all(np.asarray(infos.num_logdensity_evals) >= 1)
    stats = jax.vmap(algo.stats)(new_states, infos, params)
    for v in stats.values():
        assert np.asarray(v).shape == (2,)


@pytest.mark.parametrize("name", samplax.targets.names())
def test_target_protocol(name):
    """Every registered target: scalar finite log-density at its initial point, provenance, truth shapes."""
    target = samplax.targets.get(name)
    assert isinstance(target, samplax.Target)
    x = target.initial_point(jax.random.key(0))
    assert x.shape == tuple(target.event_shape)
    lp = eqx.filter_jit(lambda t, y: t.logdensity(y))(target, x)
    assert lp.shape == ()
    g = jax.grad(target.logdensity)(x)
    assert g.shape == x.shape
    prov = target.provenance()
    assert "source" in prov
    gt = target.ground_truth()
    q = target.constrain(x)
    assert q.ndim == 1
    if gt is not None and gt.mean is not None:
        assert len(gt.mean) == q.shape[0] == len(gt.std)
        assert np.all(np.asarray(gt.std) > 0)
    if target.has_exact_sampler:
        s = target.sample(jax.random.key(1), 5)
        assert s.shape == (5,) + tuple(target.event_shape)
