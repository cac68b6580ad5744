"""The shared cost record (samplax.core.cost.Cost) of diffusion sampling, likelihoods, training and the CLI."""
import argparse
import json
import math
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import diffusion as sd
from samplax.core.cost import Cost
from samplax.diffusion import _compiled, cli
from samplax.diffusion import train as tr

TIMED = ("num_model_evals", "compile_seconds", "sampling_seconds", "num_compilations", "num_devices")


def _fresh_denoiser():
    """A denoiser whose program no cache (in memory or JAX's persistent one) can hold yet: its constant is new."""
    c = 0.5 + (time.time_ns() % 10**9) * 1e-13 + os.getpid() * 1e-16

    def D(x, s):
        return c * x / (1.0 + 0.01 * s)

    return D


def _check_seconds(cost):
    for name in ("compile_seconds", "sampling_seconds"):
        v = cost[name]
        assert isinstance(v, float) and math.isfinite(v) and v >= 0.0, (name, v)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "restart"])
def test_sample_cost_record_and_cache(solver, key):
    D = _fresh_denoiser()
    kw = dict(shape=(6, 2), sigma_max=80.0, nfe=12, solver=solver)
    x1, info1 = sd.sample(D, key=key, **kw)
    x2, info2 = sd.sample(D, key=key, **kw)
    for info in (info1, info2):
        cost = info.cost
        assert isinstance(cost, Cost) and tuple(cost) == TIMED
        assert isinstance(cost["num_model_evals"], int)
        assert cost["num_model_evals"] == int(info.num_model_evals) <= kw["nfe"]
        assert cost["num_devices"] == 1
        _check_seconds(cost)
    # first call: the program is new, so it was traced and compiled (restart also compiles its eager steps' ops)
    assert info1.cost["num_compilations"] >= 1 and info1.cost["compile_seconds"] > 0.0
    if solver != "restart":
        assert info1.cost["num_compilations"] == 1
    # second identical call: everything from the cache
    assert info2.cost["num_compilations"] == 0 and info2.cost["compile_seconds"] == 0.0
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))


def test_sample_recompiles_only_for_new_shapes(key):
    D = _fresh_denoiser()
    kw = dict(sigma_max=80.0, solver="dpmpp_2m")
    _, a = sd.sample(D, key=key, shape=(4, 2), nfe=10, **kw)
    _, b = sd.sample(D, key=jax.random.fold_in(key, 1), shape=(4, 2), nfe=7, sigma_end=0.01, **kw)  # same program
    _, c = sd.sample(D, key=key, shape=(5, 2), nfe=10, **kw)  # new batch size: new executable
    assert a.cost["num_compilations"] == 1
    assert b.cost["num_compilations"] == 0 and b.cost["compile_seconds"] == 0.0
    assert c.cost["num_compilations"] == 1 and c.cost["compile_seconds"] > 0.0
    assert (a.cost["num_model_evals"], b.cost["num_model_evals"]) == (10, 7)
    # x_init with a different batch than before is a new executable too, then cached
    x0 = 80.0 * jax.random.normal(jax.random.key(1), (3, 2))
    _, d = sd.sample(D, key=key, x_init=x0, nfe=10, **kw)
    _, e = sd.sample(D, key=key, x_init=x0 + 1.0, nfe=10, **kw)
    assert d.cost["num_compilations"] == 1 and e.cost["num_compilations"] == 0


@pytest.mark.parametrize("solver", ["dpmpp_2m", "restart"])
def test_ahead_of_time_compilation_gives_the_jit_results(solver, key, monkeypatch):
    """The executables compiled ahead of time give bit for bit what calling the jitted functions gave."""
    model = sd.ring8()
    kw = dict(shape=(8, 2), sigma_max=80.0, nfe=12, solver=solver)
    x_aot, i_aot = sd.sample(model, key=key, **kw)
    monkeypatch.setattr(_compiled.Clock, "call",
                        lambda self, jitted, args, cache=None, static_argnums=(): jitted(*args))
    x_jit, i_jit = sd.sample(model, key=key, **kw)
    np.testing.assert_array_equal(np.asarray(x_aot), np.asarray(x_jit))
    assert int(i_aot.num_model_evals) == int(i_jit.num_model_evals)


def test_sample_inside_jit_records_planned_evals(key):
    model = sd.ring8()
    kw = dict(shape=(4, 2), sigma_max=80.0, nfe=9, solver="dpmpp_3m")
    _, eager = sd.sample(model, key=key, **kw)
    seen = []

    def f(k):
        x, info = sd.sample(model, key=k, **kw)
        seen.append(info.cost)
        return x

    jax.jit(f)(key)
    (cost,) = seen
    assert isinstance(cost, Cost) and dict(cost) == {"num_model_evals": eager.cost["num_model_evals"], "num_devices": 1}


def test_optimized_grid_records_grid_seconds(key):
    D = _fresh_denoiser()  # the tuned grids are cached per denoiser
    kw = dict(shape=(4, 2), sigma_max=80.0, nfe=6, solver="ipndm", grid="optimized", grid_options=dict(iters=3, batch=8))
    _, first = sd.sample(D, key=key, **kw)
    _, again = sd.sample(D, key=key, **kw)
    assert first.cost["grid_seconds"] > 0.0 and again.cost["grid_seconds"] == 0.0
    assert again.cost["num_model_evals"] == int(again.num_model_evals) <= 6


def test_log_likelihood_cost_record(key):
    model = sd.ring8()
    x = model.sample(key, 5)
    for _ in range(2):
        _, info = sd.log_likelihood(model, x, key=key, sigma_max=80.0, sigma_min=0.01)
        cost = info["cost"]
        evals = np.asarray(info["num_model_evals"])
        assert isinstance(cost, Cost)
        assert cost["num_model_evals"] == int(evals.max()) and cost["num_model_evals_total"] == int(evals.sum())
        assert cost["num_devices"] == 1
        _check_seconds(cost)
        # the solve is a fresh closure on every call, so it is traced and compiled every time
        assert cost["num_compilations"] == 1 and cost["compile_seconds"] > 0.0


def test_train_cost_record(key):
    cfg = tr.TrainConfig(width=8, depth=1, batch_size=16)

    c = _fresh_denoiser()(1.0, 0.0)  # a fresh constant

    def data(k, n):  # a new data function: a program no cache holds yet
        return c * jax.random.normal(k, (n, 2))

    s1, l1, c1 = tr.train(key, cfg, data, 7, chunk=3, return_cost=True)
    assert isinstance(c1, Cost)
    assert c1["num_training_steps"] == 7 and c1["num_model_evals"] == 7 * 16 and c1["num_devices"] == 1
    _check_seconds(c1)
    assert c1["num_compilations"] == 2 and c1["compile_seconds"] > 0.0  # chunks of 3 and of 1 step
    s2, l2, c2 = tr.train(key, cfg, data, 7, chunk=3, return_cost=True)
    assert c2["num_compilations"] == 0 and c2["compile_seconds"] == 0.0
    np.testing.assert_array_equal(l1, l2)
    s3, l3 = tr.train(key, cfg, data, 7, chunk=3)
    np.testing.assert_array_equal(l1, l3)
    a, b = jax.tree_util.tree_leaves(eqx.filter(s1, eqx.is_array)), jax.tree_util.tree_leaves(eqx.filter(s3, eqx.is_array))
    assert len(a) == len(b) and all(bool(jnp.all(u == v)) for u, v in zip(a, b))
    _, _, c0 = tr.train(key, cfg, data, 0, return_cost=True)
    assert c0["num_training_steps"] == 0 and c0["num_model_evals"] == 0 and c0["num_compilations"] == 0


def _parser():
    p = argparse.ArgumentParser(prog="samplax")
    cli.add_subparser(p.add_subparsers(dest="command"))
    return p


@pytest.mark.slow  # 25-35 s: the default tier must fit 15 min on 2 cores
def test_cli_reports_cost(tmp_path, capsys):
    npz = tmp_path / "s.npz"
    assert cli.run(_parser().parse_args(["diffusion", "sample", "--model", "ring8", "--n", "16", "--nfe", "6",
                                         "--solver", "dpmpp_2m", "--out", str(npz)])) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cost = summary["cost"]
    assert set(TIMED) <= set(cost) and cost["num_model_evals"] == summary["num_model_evals"] <= 6
    with np.load(npz) as f:  # no pickled objects: the record is flattened
        assert int(f["cost_num_model_evals"]) == cost["num_model_evals"]
        assert float(f["cost_compile_seconds"]) == cost["compile_seconds"]
    out = str(tmp_path / "ck")
    base = ["diffusion", "train", "--data", "moons", "--out", out, "--width", "8", "--depth", "1",
            "--batch-size", "16", "--chunk", "4"]
    assert cli.run(_parser().parse_args(base + ["--steps", "4"])) == 0
    assert cli.run(_parser().parse_args(base + ["--steps", "6", "--resume"])) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the record is of this invocation (2 steps); the summary's count is of the whole checkpoint
    assert summary["cost"]["num_training_steps"] == 2 and summary["cost"]["num_model_evals"] == 2 * 16
    assert summary["steps"] == 6 and summary["num_model_evals"] == 6 * 16
