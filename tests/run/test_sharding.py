"""Sharding over devices: with four forced host devices, chain and population methods are split over
them by default and give the draws of a single-device run (run in a subprocess: the device count is
fixed when JAX starts)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, os, warnings
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import samplax
    warnings.simplefilter("ignore")
    assert jax.device_count() == 4, jax.device_count()
    t = samplax.targets.get("correlated_gaussian")
    out = {}
    runs = {
        "nuts": dict(num_chains=16, num_warmup=100, num_samples=50),
        "nuts_vectorized": dict(method="nuts", num_chains=8, num_warmup=100, num_samples=50,
                                chain_method="vectorized"),
        "smc": dict(num_chains=4, num_samples=200),  # default HMC moves
        "smc_rwm": dict(method="smc", num_chains=4, num_samples=200, kernel="rwm"),
        "nested_sampling": dict(num_chains=4, num_samples=50),
    }
    for name, kw in runs.items():
        kw = dict(kw)
        method = kw.pop("method", name)
        sharded = samplax.sample(t, method, seed=5, progress=False, **kw)
        single = samplax.sample(t, method, seed=5, progress=False, devices=1, **kw)
        diff = float(np.max(np.abs(sharded.samples - single.samples)))
        out[name] = {"devices": sharded.cost["num_devices"], "single_devices": single.cost["num_devices"],
                     "max_abs_diff": diff, "log_Z": [sharded.log_Z, single.log_Z],
                     "log_Z_se": max(sharded.log_Z_se or 0, single.log_Z_se or 0),
                     "evals": [sharded.cost["num_logdensity_evals"], single.cost["num_logdensity_evals"]]}
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow  # four compilations of nuts, smc and nested sampling in a subprocess: minutes on 2 cores
def test_nuts_smc_nested_sampling_sharded_over_four_devices_equal_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    for name, r in out.items():
        assert r["devices"] == 4, (name, r)
        assert r["single_devices"] == 1, (name, r)
        assert r["max_abs_diff"] <= 1e-12, (name, r)
        assert r["evals"][0] == r["evals"][1], (name, r)
        if r["log_Z"][0] is not None:
            assert abs(r["log_Z"][0] - r["log_Z"][1]) <= 1e-12, (name, r)
