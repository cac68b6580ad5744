"""Non-finite model output and wrong shapes at every diffusion entry point (issue #16).

The denoiser ``_half_nan`` is the exact ring8 model except that it returns NaN below ``THR`` for points
with ``x[0] > 0``: some samples go bad, at a known noise level, and the others are untouched.  The
tracking runs inside the compiled programs (a per-sample first non-finite step carried in the loop)
and the calls say where (step, sigma) and how many; when everything is non-finite they raise.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import diffusion as dm
from samplax.diffusion import train as T

THR = 1.0
MODEL = dm.ring8()


def _half_nan(x, sigma):
    return jnp.where((sigma < THR) & (x[0] > 0), jnp.nan, 1.0) * MODEL(x, sigma)


def _all_nan(x, sigma):
    return MODEL(x, sigma) * jnp.nan


SOLVERS = [s for s in dm.solver_names() if s != "auto"]


# usf (per-step schedules) tracks like unipc_bh2 (keeps_nonfinite False, the elementwise running check): slow tier
@pytest.mark.parametrize("solver", [pytest.param(s, marks=pytest.mark.slow) if s == "usf" else s for s in SOLVERS])
def test_sample_reports_nonfinite_model_output(solver):
    nfe = 14 if solver == "restart" else 10
    with pytest.warns(UserWarning, match=r"sample: the denoiser returned non-finite values"):
        x, info = dm.sample(_half_nan, key=jax.random.key(1), shape=(32, 2), sigma_max=80.0, nfe=nfe, solver=solver)
    x = np.asarray(x)
    rows_bad = ~np.all(np.isfinite(x), axis=1)
    step = np.asarray(info.nonfinite_step)
    assert 0 < rows_bad.sum() < 32
    np.testing.assert_array_equal(step >= 0, rows_bad)  # tracked in the program: exactly the NaN samples
    (w,) = info.warnings
    assert w["code"] == "nonfinite_samples" and w["value"] == int(rows_bad.sum())
    assert f"{int(rows_bad.sum())} of 32 samples are non-finite" in w["message"]
    first = int(step[rows_bad].min())
    sig = float(np.asarray(info.nonfinite_sigma)[step == first][0])
    assert f"step {first} of" in w["message"] and f"sigma {sig:.4g}" in w["message"]
    # the first step that evaluates the model below THR: at its start (j) or inside the step before (j - 1:
    # Heun's corrector, DPM-Solver's stages, Restart's Heun steps; Restart's own steps come later, near 0.06)
    nodes = info.sigmas
    j = int(np.argmax(nodes < THR))
    assert first in (j - 1, j) and sig == pytest.approx(nodes[first]), (first, j, nodes)
    assert np.all(np.isnan(np.asarray(info.nonfinite_sigma)[~rows_bad]))


@pytest.mark.parametrize("solver", ["dpmpp_2m", "restart", "euler_maruyama"])
def test_sample_all_nonfinite_is_an_error(solver):
    with pytest.raises(ValueError, match=r"32 of 32 samples are non-finite; the first at step 0 of .*sigma 80\)"
                                         r".*every output is non-finite"):
        dm.sample(_all_nan, key=jax.random.key(0), shape=(32, 2), sigma_max=80.0, nfe=14, solver=solver)


def test_finite_sample_has_no_warning():
    x, info = dm.sample(MODEL, key=jax.random.key(0), shape=(8, 2), sigma_max=80.0, nfe=6)
    assert info.warnings == () and np.all(np.asarray(info.nonfinite_step) == -1)


def test_sample_shapes_are_checked_before_compiling():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"sample: the denoiser fails on one point of shape \(3,\) .*given by shape"):
        dm.sample(MODEL, key=key, shape=(16, 3), sigma_max=80.0, nfe=5)
    with pytest.raises(ValueError, match=r"sample: the denoiser fails on one point of shape \(2, 16\) .*by x_init"):
        dm.sample(MODEL, key=key, x_init=jnp.ones((1, 2, 16)), sigma_max=80.0, nfe=5)
    with pytest.raises(ValueError, match=r"sample: denoiser\(x, sigma\) must return .*\(2,\) .*returned shape \(3,\)"):
        dm.sample(lambda x, s: jnp.ones(3), key=key, shape=(16, 2), sigma_max=80.0, nfe=5)
    with pytest.raises(ValueError, match=r"returned shape \(4, 2\); it is vmapped over the batch"):
        dm.sample(lambda x, s: jnp.ones((4, 2)), key=key, shape=(4, 2), sigma_max=80.0, nfe=5)
    with pytest.raises(ValueError, match=r"sample: x_init has non-finite values in 1 of its 3 points \(first: index 1"):
        dm.sample(MODEL, key=key, x_init=jnp.array([[0.0, 1.0], [jnp.nan, 0.0], [1.0, 1.0]]), sigma_max=80.0, nfe=5)


@pytest.mark.slow  # 20-45 s: the default tier must fit 15 min on 2 cores
def test_log_likelihood_reports_nonfinite_and_does_not_stall():
    def nan_above(x, sigma):  # the ODE runs up from sigma_min: NaN above THR for x[0] > 0
        return jnp.where((sigma > THR) & (x[0] > 0), jnp.nan, 1.0) * MODEL(x, sigma)

    x = jnp.array([[1.0, 0.2], [-1.0, 0.3], [0.5, -1.0], [-0.4, -0.7]])
    with pytest.warns(UserWarning, match=r"log_likelihood: .*non-finite.*2 of 4 points"):
        lp, info = dm.log_likelihood(nan_above, x, key=jax.random.key(0), sigma_max=80.0)
    lp_ok, info_ok = dm.log_likelihood(MODEL, x, key=jax.random.key(0), sigma_max=80.0)
    bad = np.asarray(info["nonfinite"])
    np.testing.assert_array_equal(bad, [True, False, True, False])  # the ODE of a point barely moves x[0]'s sign
    assert np.all(np.isnan(np.asarray(lp)[bad]))
    np.testing.assert_array_equal(np.asarray(lp)[~bad], np.asarray(lp_ok)[~bad])  # the others are untouched
    sig = np.asarray(info["nonfinite_sigma"])[bad]
    assert np.all((sig >= THR) & (sig < 1.05 * THR)), sig  # stopped in the step that crossed THR
    assert np.all(np.asarray(info["num_steps"]) < 200)  # no stall until max_steps (10000)
    assert info["warnings"][0]["code"] == "nonfinite_samples"
    with pytest.raises(ValueError, match="4 of 4 points are non-finite.*every result is non-finite"):
        dm.log_likelihood(_all_nan, x, key=jax.random.key(0), sigma_max=80.0)
    with pytest.raises(ValueError, match=r"log_likelihood: the denoiser fails on one point of shape \(5,\).*by x"):
        dm.log_likelihood(MODEL, jnp.ones((2, 5)), key=jax.random.key(0), sigma_max=80.0)


def test_solve_pf_ode_reports_nonfinite():
    x = 80.0 * jax.random.normal(jax.random.key(3), (6, 2))
    with pytest.warns(UserWarning, match=r"solve_pf_ode: .* of 6 samples are non-finite"):
        y = np.asarray(dm.solve_pf_ode(_half_nan, x, 80.0, 0.0, rtol=1e-6, atol=1e-6))
    rows_bad = np.all(np.isnan(y), axis=1)
    assert 0 < rows_bad.sum() < 6 and np.all(np.isfinite(y[~rows_bad]))
    with pytest.raises(ValueError, match="every result is non-finite"):
        dm.solve_pf_ode(_all_nan, x, 80.0, 0.0, rtol=1e-6, atol=1e-6)


def test_train_nonfinite_loss_says_where():
    cfg = T.TrainConfig(dim=2, width=16, depth=1, batch_size=32)

    def data_nan(k, n):  # point 3 of the batch is NaN at about one step in five
        x = jax.random.normal(k, (n, 2))
        return x.at[3].set(jnp.where(jax.random.uniform(k) < 0.2, jnp.nan, x[3]))

    key = jax.random.key(0)
    first = next(i for i in range(40)  # step i's data key is split(fold_in(key, i))[0]
                 if float(jax.random.uniform(jax.random.split(jax.random.fold_in(key, i))[0])) < 0.2)
    with pytest.raises(ValueError, match=rf"train: non-finite loss at step {first}: data_fn returned 1 of 32 points"):
        T.train(key, cfg, data_nan, 40, chunk=16)
    big = T.TrainConfig(dim=2, width=16, depth=1, batch_size=32, learning_rate=1e9, grad_clip=1e9)
    with pytest.raises(T.NonFiniteLossError, match=r"of the batch's 32 point losses are non-finite \(the denoiser's "
                                                   r"output at noise level sigma"):
        T.train(jax.random.key(0), big, lambda k, n: 1e3 * jax.random.normal(k, (n, 2)), 100, chunk=50)
    with pytest.raises(ValueError, match=r"train: data_fn\(key, batch_size\) must return .*\(32, 2\).*got \(32, 3\)"):
        T.train(jax.random.key(0), cfg, lambda k, n: jax.random.normal(k, (n, 3)), 5)


@pytest.mark.parametrize("keeps", [False, True])
def test_untracked_run_flags_samples_that_were_nonfinite_on_the_way(keeps):
    """run_solver with a traced `track`: without tracking it flags the samples to run again (`unsure`); a solver
    whose state can turn finite again (keeps_nonfinite=False) is watched by the elementwise running check, so a
    sample that was NaN only in between is flagged too. (With keeps_nonfinite=True the solver promises that
    this cannot happen, and only the end state is looked at.)"""
    from samplax.diffusion.solvers import Solver, no_nonfinite, run_solver
    from samplax.diffusion.solvers.ode import XCarry

    def step(c, i, ctx):  # sample 0 is NaN after step 1 only
        x = jnp.where(jnp.isnan(c.x), 1.0, 0.5 * c.x)
        return XCarry(jnp.where((i == 1) & (jnp.arange(3) == 0)[:, None], jnp.nan, x)), 1

    s = Solver("transient", 1, False, lambda x, sg, p: XCarry(x), step, None, None, keeps_nonfinite=keeps)
    x0, sig = jnp.ones((3, 2)), jnp.asarray([4.0, 3.0, 2.0, 1.0])
    run = jax.jit(lambda track: run_solver(s, None, x0, sig, {}, None, {}, nonfinite=no_nonfinite(x0), track=track))
    x, ne, nf, unsure = run(np.bool_(False))
    assert np.all(np.isfinite(np.asarray(x))) and int(ne) == 3 and np.all(np.asarray(nf.step) == -1)
    np.testing.assert_array_equal(np.asarray(unsure), [not keeps, False, False])
    x, ne, nf, unsure = run(np.bool_(True))  # the same program, tracked: the step and its sigma
    np.testing.assert_array_equal(np.asarray(nf.step), [1, -1, -1])
    assert float(nf.sigma[0]) == 3.0 and not np.any(np.asarray(unsure))
