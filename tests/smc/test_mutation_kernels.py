"""SMC mutations and parallel tempering take their kernel from the kernel registry: any registered kernel that
leaves the target invariant and takes (step_size, inverse_mass_matrix) params; others are refused, saying why."""
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.mcmc.registry import KERNELS, KernelSpec, get_kernel
from samplax.smc import mutation, parallel_tempering, paths
from smc_helpers import gaussian_log_Z, gaussian_logdensity

MEAN, STD, OFFSET = jnp.asarray([1.0, -1.0]), jnp.asarray([0.5, 2.0]), -1.0


def _target():
    return samplax.from_logdensity(gaussian_logdensity(MEAN, STD, OFFSET), 2)


def test_eligible_kernels_come_from_the_registry():
    names = mutation.kernel_names()
    assert {"hmc", "mala", "rwm", "nuts"} <= set(names)
    for n in names:
        spec = get_kernel(n)
        assert spec.invariant and spec.tunable
    assert "ula" not in names and "adjusted_mclmc" not in names and "gpss" not in names
    # the tables they replace, as the specs declare them
    assert [mutation.default_target_accept(k) for k in ("hmc", "mala", "rwm")] == [0.65, 0.57, 0.3]
    assert mutation.initial_step_size("hmc", 16) == 16 ** -0.25
    assert mutation.initial_step_size("mala", 8) == 8 ** (-1 / 3)
    assert mutation.initial_step_size("rwm", 4) == 2.38 * 4 ** -0.5
    assert mutation.is_gradient_based("nuts") and not mutation.is_gradient_based("rwm")


@pytest.mark.parametrize("kernel,why", [
    ("ula", "kernel 'ula' does not leave the target invariant"),
    ("mclmc", "kernel 'mclmc' does not leave the target invariant"),
    ("adjusted_mclmc", r"kernel 'adjusted_mclmc' does not take \(step_size, inverse_mass_matrix\) params"),
    ("hcm", "'hcm' is not a registered kernel"),
])
def test_ineligible_kernels_are_refused_with_the_reason(kernel, why):
    t = _target()
    for method in ("smc", "ais", "population_annealing", "waste_free_smc", "parallel_tempering"):
        with pytest.raises(ValueError, match=rf"method '{method}': option kernel='{kernel}' is invalid: one of "
                                             rf"\['hmc', 'mala', 'nuts', 'rwm'\]; {why}"):
            samplax.sample(t, method, kernel=kernel, num_samples=10)
    with pytest.raises(ValueError, match=why):
        mutation.build_mutation(t.flat_logdensity(), paths.GaussianReference(jnp.zeros(2), jnp.ones(2)), kernel)
    with pytest.raises(ValueError, match=why):
        parallel_tempering.build(t.flat_logdensity(), paths.GaussianReference(jnp.zeros(2), jnp.ones(2)),
                                 parallel_tempering.PTConfig(kernel=kernel))


@pytest.mark.parametrize("kernel", ["mala", "rwm", "nuts"])
def test_smc_runs_with_registered_kernels(kernel):
    t = _target()
    r = samplax.sample(t, "smc", kernel=kernel, seed=1, num_chains=2, num_samples=400, progress=False,
                       num_mcmc_steps=10 if kernel == "rwm" else 5)
    assert r.samples.shape == (2, 400, 2) and np.all(np.isfinite(r.samples))
    assert abs(r.log_Z - gaussian_log_Z(np.asarray(STD), OFFSET, 2)) < 0.3
    assert np.all(np.abs(r.samples.mean(axis=(0, 1)) - np.asarray(MEAN)) < 0.3 * np.asarray(STD) + 0.1)
    assert (r.cost["num_grad_evals"] > 0) == (kernel != "rwm")


@pytest.mark.slow  # moved from the default tier: its 15-minute budget
def test_parallel_tempering_with_nuts():
    t = _target()
    r = samplax.sample(t, "parallel_tempering", kernel="nuts", seed=2, num_chains=1, num_warmup=200,
                       num_samples=400, progress=False, num_temperatures=4)
    assert np.all(np.isfinite(r.samples)) and r.cost["num_grad_evals"] > 0
    assert np.all(np.abs(r.samples.mean(axis=(0, 1)) - np.asarray(MEAN)) < 3 * np.asarray(STD))


def test_a_newly_registered_invariant_kernel_is_a_mutation(monkeypatch):
    """No table to edit: registering a kernel that declares itself invariant and tunable is enough."""
    rwm = get_kernel("rwm")
    spec = KernelSpec("my_walk", rwm.init, rwm.build_kernel, rwm.params_cls, rwm.factory, gradient_based=False,
                      invariant=True, tunable=True, target_accept=0.3, initial_step_size=lambda d: d ** -0.5,
                      state_from_point=rwm.state_from_point)
    monkeypatch.setitem(KERNELS._entries, "my_walk", spec)
    assert "my_walk" in mutation.kernel_names()
    r = samplax.sample(_target(), "ais", kernel="my_walk", seed=0, num_chains=1, num_samples=50, progress=False,
                       num_temperatures=5)
    assert np.all(np.isfinite(r.samples)) and r.cost["num_grad_evals"] == 0
