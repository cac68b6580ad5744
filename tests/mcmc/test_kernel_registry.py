"""The kernel registry: every registered kernel declares its spec (key-first init/step, params, gradient use,
invariance) and the chain method of the same name agrees with it; samplax.mcmc exposes every registered kernel."""
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.mcmc.registry import KernelSpec, get_kernel, kernel_names, register_kernel
from samplax.methods import get_method
from samplax.smc import mutation

SHIPPED = {"rwm", "mala", "hmc", "nuts", "gpss", "elliptical_slice", "hit_and_run_slice", "ula",
           "randomized_midpoint_overdamped", "kinetic_langevin", "randomized_midpoint", "mclmc", "adjusted_mclmc",
           "myula", "bregman_myula", "coordinate_slice"}
EXACT = {"rwm", "mala", "hmc", "nuts", "gpss", "elliptical_slice", "hit_and_run_slice", "adjusted_mclmc",
         "coordinate_slice"}
NAMES = kernel_names()
D = 3


def _logp(x):
    return -0.5 * jnp.sum((x - 0.5) ** 2 / jnp.arange(1.0, x.shape[0] + 1.0))


def _params(spec, dtype):
    """A valid params value from the field names (step size, metric, whitening, friction, L, smoothing)."""
    fill = {"step_size": 0.3, "inverse_mass_matrix": jnp.ones(D, dtype), "center": jnp.zeros(D, dtype),
            "scale": jnp.ones(D, dtype), "width": 2.0, "friction": 1.0, "L": math.sqrt(D), "metropolize": False,
            "smoothing": 0.1}
    return spec.params_cls(**{f: jnp.asarray(fill[f], dtype) if f != "metropolize" else fill[f]
                              for f in spec.params_cls._fields})


def test_the_shipped_kernels_are_registered_and_public():
    assert SHIPPED <= set(NAMES)
    for name in NAMES:
        proxy = getattr(samplax.mcmc, name)
        assert name in samplax.mcmc.__all__
        assert proxy.__name__ == name and proxy._factory is get_kernel(name).factory
    assert samplax.mcmc.nuts.build_kernel is get_kernel("nuts").build_kernel
    with pytest.raises(KeyError, match="unknown kernel 'nutz'; did you mean 'nuts'"):
        get_kernel("nutz")


def test_exactness_as_declared():
    assert {n for n in SHIPPED if get_kernel(n).invariant} == EXACT


@pytest.mark.parametrize("name", NAMES)
def test_declared_spec(name):
    spec = get_kernel(name)
    assert isinstance(spec, KernelSpec) and spec.name == name
    assert list(inspect.signature(spec.init).parameters)[:2] == ["key", "position"]
    assert isinstance(spec.gradient_based, bool) and isinstance(spec.invariant, bool)
    fields = spec.params_cls._fields
    if spec.tunable:
        assert fields[:2] == ("step_size", "inverse_mass_matrix")
        assert set(fields[2:]) <= set(spec.params_cls._field_defaults)
    for ta in (spec.target_accept, spec.population_target_accept):
        assert ta is None or 0.0 < ta < 1.0
    if spec.initial_step_size is not None:
        eps = [spec.initial_step_size(d) for d in (1, 10, 1000)]
        assert all(e > 0 for e in eps)
        if spec.tunable:  # in units of the metric: shrinks with the dimension
            assert eps[0] > eps[1] > eps[2]
    # the chain method of the same name reads its facts from the spec
    method = get_method(name)
    assert method.gradient_based == spec.gradient_based
    assert (method.bias is None) == spec.invariant  # unadjusted methods carry the bias warning
    if "target_accept" in method.options:
        assert method.options["target_accept"].default == spec.target_accept


@pytest.mark.parametrize("name", [n for n in NAMES if not get_kernel(n).composite])
def test_one_step_key_first(name, key):
    spec = get_kernel(name)
    x0 = jnp.linspace(-0.5, 0.5, D)
    state = spec.init(key, x0, _logp)
    step = spec.build_kernel(_logp)
    assert list(inspect.signature(step).parameters) == ["key", "state", "params"]
    new, info = jax.jit(step)(jax.random.fold_in(key, 1), state, _params(spec, x0.dtype))
    assert new.position.shape == (D,) and bool(jnp.isfinite(new.logdensity))
    assert 0.0 <= float(info.acceptance_rate) <= 1.0 and not bool(info.is_nonfinite)
    assert int(info.num_logdensity_evals) >= 1
    assert (int(info.num_grad_evals) > 0) == spec.gradient_based
    if spec.tunable:  # the state at a known point (SMC particles) has the structure of init's state
        lp, g = jax.value_and_grad(_logp)(x0)
        known = mutation.known_state(spec, x0, lp, g)
        assert jax.tree.structure(known) == jax.tree.structure(state)
        np.testing.assert_array_equal(np.asarray(known.logdensity), np.asarray(state.logdensity))


@pytest.mark.parametrize("name", [n for n in NAMES if get_kernel(n).composite])
def test_composite_kernels_are_key_first(name):
    spec = get_kernel(name)
    assert list(inspect.signature(spec.init).parameters)[:3] == ["key", "position", "smooth_logdensity_fn"]
    assert list(inspect.signature(spec.build_kernel).parameters)[0] == "smooth_logdensity_fn"


def test_duplicate_and_wrong_registrations_are_refused():
    with pytest.raises(ValueError, match="kernel 'rwm' is already registered"):
        register_kernel(get_kernel("rwm"))
    with pytest.raises(TypeError, match="expected a KernelSpec"):
        register_kernel("rwm")


def test_kernel_declared_chain_method_needs_no_other_registration():
    """A kernel registered with a ChainMethod is a method at once (samplax.sample(target, name)), its options are
    the adapter kind's plus its own, checked, and passed to build_kernel by name; declared exactly like rwm's it
    gives rwm's draws bit for bit."""
    from samplax.core.method import Option
    from samplax.core.options import pos_int
    from samplax.mcmc import declare, rwm
    from samplax.mcmc.registry import KERNELS, ChainMethod
    from samplax.methods import METHODS, method_names

    seen = []

    def build_kernel(logdensity_fn, num_sweeps=1):
        seen.append(num_sweeps)
        return rwm.build_kernel(logdensity_fn)

    name = "test_declared_walk"
    decl = ChainMethod("a random walk declared in a test", declare.basic_stats,
                       default_step_size=lambda dim: 2.38 / dim**0.5, settings={"find_initial_step_size": False},
                       options={"num_sweeps": Option(1, "sweeps per step", pos_int, "an int >= 1")})
    register_kernel(KernelSpec(name, rwm.init, build_kernel, rwm.RWMParams, rwm.rwm, gradient_based=False,
                               invariant=True, tunable=True, target_accept=get_kernel("rwm").target_accept,
                               method=decl))
    try:
        assert name in method_names()
        spec = get_method(name)
        assert set(spec.options) == set(get_method("rwm").options) | {"num_sweeps"}
        assert not spec.gradient_based and spec.bias is None
        target = samplax.targets.get("correlated_gaussian")
        kw = dict(seed=4, num_chains=2, num_warmup=100, num_samples=50, progress=False)
        mine = samplax.sample(target, name, num_sweeps=3, **kw)
        assert seen and set(seen) == {3}  # (the engine builds the algorithm more than once)
        ref = samplax.sample(target, "rwm", **kw)
        np.testing.assert_array_equal(mine.samples, ref.samples)
        with pytest.raises(ValueError, match="num_sweeps"):
            samplax.sample(target, name, num_sweeps=0, **kw)
    finally:
        KERNELS._entries.pop(name, None)
        METHODS._entries.pop(name, None)
