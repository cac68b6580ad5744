"""Reference posterior moments for the ``german_credit`` target, by NumPyro NUTS.

This script is an *independent* implementation of the samplax target
``german_credit`` (Bayesian logistic regression on the UCI German credit
numeric data): it reads the raw data file itself, standardizes it itself and
writes the model with ``numpyro.distributions`` (no samplax code is used except
the path of the data file).  Its output,
``samplax/data/german_credit_reference.json``, is the ground truth that
``samplax.targets.logistic.GermanCredit.ground_truth()`` returns.

Model (Dua & Graff, UCI "Statlog (German Credit Data)", file ``german.data-numeric``):
  * 1000 rows, 24 numeric covariates (columns 0..23) and a label in {1, 2}
    (column 24); ``y = label - 1`` in {0, 1}.
  * covariates standardized column-wise: ``(x - mean) / std`` with the
    population std (ddof = 0); an intercept column of ones is appended last,
    giving 25 coefficients ``w``.
  * prior ``w_j ~ N(0, 1)`` for all 25 coefficients (intercept included);
  * likelihood ``y_n ~ Bernoulli(sigmoid(x_n . w))``.

Run settings (recorded in the JSON): 8 chains, 2000 warm-up and 20000 kept
draws each, NUTS with diagonal mass-matrix adaptation, target acceptance 0.8,
seed 20261129, float64.  Mean/std MCSEs and bulk ESS / R-hat from ArviZ.

Usage::

    JAX_PLATFORMS=cpu python benchmarks/make_reference_german_credit.py
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import arviz as az  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "samplax" / "data" / "german.data-numeric"
OUT = ROOT / "samplax" / "data" / "german_credit_reference.json"

SEED = 20261129
NUM_CHAINS = 8
NUM_WARMUP = 2000
NUM_SAMPLES = 20000
TARGET_ACCEPT = 0.8


def load():
    """Raw file -> (standardized covariates with intercept [1000, 25], labels in {0,1})."""
    raw = np.loadtxt(DATA)
    x = raw[:, :-1]
    y = raw[:, -1] - 1.0
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    return x, y


def model(x, y):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(x.shape[1]), 1.0).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)


def main():
    x, y = load()
    t0 = time.time()
    mcmc = MCMC(
        NUTS(model, target_accept_prob=TARGET_ACCEPT, dense_mass=False),
        num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES, num_chains=NUM_CHAINS,
        chain_method="sequential", progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(SEED), jnp.asarray(x), jnp.asarray(y))
    wall = time.time() - t0
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["w"])  # [chains, draws, 25]
    extra = mcmc.get_extra_fields(group_by_chain=True)
    divergences = int(np.sum(np.asarray(extra["diverging"])))
    idata = az.from_dict(posterior={"w": draws})
    mean = draws.reshape(-1, draws.shape[-1]).mean(axis=0)
    std = draws.reshape(-1, draws.shape[-1]).std(axis=0, ddof=1)
    mcse_mean = az.mcse(idata, method="mean")["w"].values
    mcse_sd = az.mcse(idata, method="sd")["w"].values
    ess_bulk = az.ess(idata, method="bulk")["w"].values
    rhat = az.rhat(idata)["w"].values
    names = [f"w[{i}]" for i in range(24)] + ["intercept"]
    out = {
        "target": "german_credit",
        "variant": "uci_numeric_standardized_ddof0_intercept_last_N01_prior",
        "version": "1",
        "names": names,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "mcse_mean": mcse_mean.tolist(),
        "mcse_std": mcse_sd.tolist(),
        "ess_bulk": ess_bulk.tolist(),
        "rhat": rhat.tolist(),
        "max_rhat": float(np.max(rhat)),
        "min_ess_bulk": float(np.min(ess_bulk)),
        "divergences": divergences,
        "settings": {
            "sampler": "numpyro.infer.NUTS (diag mass matrix, dual-averaging step size)",
            "num_chains": NUM_CHAINS, "num_warmup": NUM_WARMUP, "num_samples": NUM_SAMPLES,
            "target_accept_prob": TARGET_ACCEPT, "seed": SEED, "chain_method": "sequential",
            "dtype": "float64",
        },
        "data_sha256": hashlib.sha256(DATA.read_bytes()).hexdigest(),
        "script": "benchmarks/make_reference_german_credit.py",
        "software": {
            "python": platform.python_version(), "jax": jax.__version__,
            "numpyro": numpyro.__version__, "arviz": az.__version__, "numpy": np.__version__,
        },
        "wall_time_s": wall,
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT} in {wall:.0f}s; max R-hat {out['max_rhat']:.5f}, "
          f"min bulk ESS {out['min_ess_bulk']:.0f}, divergences {divergences}", file=sys.stderr)


if __name__ == "__main__":
    main()
