"""The engine's front door: argument checks, keys, and the run of a chain, population or
controlled method (or of a user's :class:`~samplax.core.types.Kernel`)."""
from __future__ import annotations

import inspect
import warnings as _warnings
from typing import Optional

import numpy as np

from samplax.core.method import MethodSpec
from samplax.core.result import Result
from samplax.core.target import Target
from samplax.run.chains import CHAIN_METHODS, run_chains
from samplax.run.keys import key_digest, root_key, run_keys
from samplax.run.population import run_population
from samplax.run.trained import run_trained


def check_int(name: str, v, lo: int) -> int:
    """``v`` as an int ``>= lo``, or a ``ValueError`` naming the argument."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"sample: {name} must be an int >= {lo}, got {v!r}")
    return int(v)


def execute(target: Target, spec: MethodSpec, *, seed: int = 0, key=None, num_chains: int = 4,
            num_warmup: int = 1000, num_samples: int = 1000, init=None, checkpoint_dir: Optional[str] = None,
            progress: bool = True, thinning: int = 1, chunk_size: Optional[int] = None,
            checkpoint_interval: float = 30.0, chain_method: str = "auto", devices=None,
            keep_warmup: bool = False, **method_options) -> Result:
    """Run ``spec`` on ``target`` (see :func:`samplax.sample` for the arguments)."""
    if not isinstance(target, Target):
        raise TypeError(
            f"sample: target must be a samplax Target, got {type(target).__name__}; wrap a function "
            "with samplax.from_logdensity(fn, event_shape) or use samplax.targets.get(name)")
    root = root_key(seed, key)
    seed_id = int(seed) if key is None else f"key:{key_digest(root)}"
    num_chains = check_int("num_chains", num_chains, 1)
    num_warmup = check_int("num_warmup", num_warmup, 0)
    num_samples = check_int("num_samples", num_samples, 1)
    thinning = check_int("thinning", thinning, 1)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, 1)
    if chain_method not in CHAIN_METHODS:
        raise ValueError("sample: chain_method must be 'auto', 'blocked', 'vectorized' or 'sequential', "
                         f"got {chain_method!r}")
    if not isinstance(keep_warmup, (bool, np.bool_)):
        raise ValueError(f"sample: keep_warmup must be True or False, got {keep_warmup!r}")
    if keep_warmup and spec.kind == "population":
        raise ValueError(f"sample: keep_warmup=True: method {spec.name!r} runs independent runs that have no "
                         "warm-up draws to keep")
    if keep_warmup and spec.kind == "trained":
        raise ValueError(f"sample: keep_warmup=True: method {spec.name!r} trains a sampler and has no warm-up "
                         "draws to keep")
    if keep_warmup and spec.kind == "controlled" and "keep_warmup" not in inspect.signature(spec.runner).parameters:
        raise ValueError(f"sample: keep_warmup=True: method {spec.name!r} cannot keep its warm-up draws")
    options = spec.resolve_options(method_options)
    if spec.prepare is not None:
        options = spec.prepare(target, options)
    keys = run_keys(root, spec.run_stream)
    if checkpoint_dir is not None and not spec.supports_checkpoints:
        raise ValueError(f"sample: method {spec.name!r} does not support checkpoint_dir"
                         + ("; use method='nuts_fisher'" if spec.name == "auto" else ""))
    if spec.kind in ("population", "trained") and thinning != 1:
        raise ValueError(f"sample: method {spec.name!r} does not support thinning (it returns independent draws)")
    bias = spec.bias(options) if spec.bias is not None else None
    if bias is not None:
        _warnings.warn(f"{spec.name}: {bias}", UserWarning, stacklevel=3)
    if spec.kind == "population":
        result = run_population(target, spec, options, keys=keys, seed_id=seed_id, num_chains=num_chains,
                                num_warmup=num_warmup, num_samples=num_samples, init=init, progress=progress,
                                devices=devices)
    elif spec.kind == "trained":
        result = run_trained(target, spec, options, keys=keys, seed_id=seed_id, num_chains=num_chains,
                             num_samples=num_samples, init=init, checkpoint_dir=checkpoint_dir, progress=progress,
                             chunk_size=chunk_size, checkpoint_interval=checkpoint_interval, devices=devices)
    elif spec.kind == "controlled":
        kept = {"keep_warmup": True} if keep_warmup else {}
        if "chain_method" in inspect.signature(spec.runner).parameters:  # a runner that runs chains (neutra)
            kept["chain_method"] = chain_method
        result = spec.runner(target, spec, keys=keys, seed_id=seed_id, num_chains=num_chains,
                             num_warmup=num_warmup, num_samples=num_samples, init=init, progress=progress,
                             thinning=thinning, devices=devices, **kept, **options)
    else:
        result = run_chains(target, spec, options, keys=keys, seed_id=seed_id, num_chains=num_chains,
                            num_warmup=num_warmup, num_samples=num_samples, init=init,
                            checkpoint_dir=checkpoint_dir, progress=progress, thinning=thinning,
                            chunk_size=chunk_size, checkpoint_interval=checkpoint_interval,
                            chain_method=chain_method, devices=devices, keep_warmup=bool(keep_warmup))
    if bias is not None:
        step = result.extra.get("final_step_size")
        result.warnings.append({"code": "biased", "value": step,
                                "message": f"{spec.name} is not Metropolis-adjusted: {bias}"
                                + ("" if step is None else
                                   f" (final step size {np.round(np.asarray(step), 4).tolist()})")})
    if spec.kind != "chain":
        n_bad = int(np.sum(~np.isfinite(result.samples)))
        if n_bad and not any(w.get("code") in ("nonfinite_draws", "nonfinite_samples") for w in result.warnings):
            result.warnings.append({"code": "nonfinite_samples", "value": n_bad,
                                    "message": f"{n_bad} non-finite values in the returned samples of "
                                               f"{spec.name!r}"})
    return result
