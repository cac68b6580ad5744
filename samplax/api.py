"""``samplax.sample``: the public entry point; names become specs here, the engine runs them."""
from __future__ import annotations

from typing import Any, Optional

from samplax.core.method import MethodSpec
from samplax.core.result import Result
from samplax.core.target import Target
from samplax.methods import get_method
from samplax.run import execute, kernel_method, kernel_reports_counts


class _NoKernel:
    """The default of :func:`sample`'s ``kernel``: none given (so that an explicit ``kernel=None`` can reach
    a method's own ``kernel`` option and be refused there)."""

    def __repr__(self):
        return "<no kernel>"


_NO_KERNEL = _NoKernel()


def sample(target: Target, method: Any = "nuts", *, kernel=_NO_KERNEL, seed: int = 0, key=None, num_chains: int = 4,
           num_warmup: int = 1000, num_samples: int = 1000, init=None, checkpoint_dir: Optional[str] = None,
           progress: bool = True, thinning: int = 1, chunk_size: Optional[int] = None,
           checkpoint_interval: float = 30.0, chain_method: str = "auto", devices=None,
           keep_warmup: bool = False, **method_options) -> Result:
    """Draw ``num_samples`` post-warm-up draws from each of ``num_chains`` chains (or runs).

    Every method goes through one run engine (:mod:`samplax.run`): keys derived once
    from the seed, initial points, one compiled program per run, checkpoints, progress,
    sharding over devices, and the same :class:`~samplax.core.result.Result`.

    Args:
      target: a :class:`~samplax.core.target.Target` (see :func:`samplax.from_logdensity`).
      method: a name from :func:`samplax.method_names` (default ``"nuts"``) or a
        :class:`~samplax.core.method.MethodSpec`.
      kernel: instead of ``method``, your own :class:`samplax.Kernel` ``(init, step)``
        whose state has ``.position`` (e.g. :class:`samplax.PointState`); ``init`` receives
        a point of the target's ``event_shape``.  It runs without adaptation, with the
        same diagnostics, progress and checkpoints.  Any other value given (a string, ``None``,
        ...) is not a kernel object: for a method with its own ``kernel`` option (the mutation
        kernel of the SMC family and of parallel tempering, e.g. ``sample(t, "smc", kernel="mala")``)
        it is that option, checked there (``kernel=None`` is then refused, not read as the
        default); for other methods ``kernel=None`` means no kernel.
      seed: integer seed; all randomness derives from ``(seed, chain, step)``.
      key: a JAX key to use instead of ``seed``.
      num_chains, num_warmup, num_samples, thinning: run length.  For population methods
        (SMC, nested sampling, ensembles, particle flows) ``num_chains`` is the number of
        independent runs and ``num_samples`` the draws per run (see each method's docs).
      init: initial point ``[*event_shape]`` or ``[num_chains, *event_shape]``; default:
        uniform(-2, 2) in unconstrained space, retried up to 100 times per chain (Stan).
      checkpoint_dir: folder for atomic checkpoints; a run with the same configuration
        resumes from it (bitwise-identical draws), a different configuration is refused.
      progress: show a progress line on stderr.
      chunk_size: steps per compiled chunk (structural; part of the configuration).
      checkpoint_interval: minimum seconds between checkpoints (0: after every chunk).
      chain_method: ``"vectorized"`` (one ``vmap`` over all chains), ``"blocked"`` (``vmap``
        inside blocks of ``CHAIN_BLOCK`` chains, ``lax.map`` over blocks; the last block is
        padded), ``"sequential"`` (blocks of one) or ``"auto"`` (blocked on CPU, vectorized on
        accelerators).  XLA may vectorize reductions differently for different batch sizes,
        so under one ``vmap`` over all chains, draws of runs with different numbers of chains
        agree only to round-off, which chaotic dynamics amplify.  In blocked and sequential
        mode chain ``c`` always sits at the same place of a block of the same size: 8 chains
        reproduce the first 8 of 64 bit for bit.  Pooled adaptation is always vectorized.
      devices: ``None`` (default: shard the chains' blocks, or the independent runs, over
        every local device when they divide evenly), an int ``n`` (the first ``n`` devices),
        or a list of devices.  Draws equal a single-device run with the same seed;
        ``result.cost["num_devices"]`` says how many were used.  Multi-host: call
        ``jax.distributed.initialize()`` on each host first.
      keep_warmup: also return the warm-up draws (every ``thinning``-th warm-up step) and their
        per-draw stats: ``Result.warmup_samples``, ``.warmup_posterior``, ``.warmup_stats`` and the
        ``warmup_posterior`` / ``warmup_sample_stats`` groups of ``to_arviz()`` (chain methods and
        ``auto``; population methods have no warm-up draws and refuse it).
      **method_options: options of the method (see ``samplax list methods``).

    Returns:
      a :class:`~samplax.core.result.Result`.
    """
    is_kernel = callable(getattr(kernel, "init", None)) and callable(getattr(kernel, "step", None))
    if kernel is not _NO_KERNEL and not is_kernel:
        named = method if isinstance(method, MethodSpec) else get_method(method)
        if isinstance(kernel, str) or "kernel" in named.options:
            # not a Kernel object: the method's own ``kernel`` option (e.g. the SMC mutation), checked there
            method_options["kernel"], kernel = kernel, _NO_KERNEL
        elif kernel is None:  # no kernel, said explicitly
            kernel = _NO_KERNEL
    if kernel is not _NO_KERNEL:
        if not isinstance(target, Target):
            raise TypeError(f"sample: target must be a samplax Target, got {type(target).__name__}")
        if method_options:
            raise TypeError(f"sample: a user kernel takes no method options, got {sorted(method_options)}")
        spec = kernel_method(kernel, target.event_shape)
        counts_known = kernel_reports_counts(kernel, tuple(target.event_shape))
    else:
        counts_known = True
        spec = method if isinstance(method, MethodSpec) else get_method(method)
    result = execute(target, spec, seed=seed, key=key, num_chains=num_chains, num_warmup=num_warmup,
                     num_samples=num_samples, init=init, checkpoint_dir=checkpoint_dir, progress=progress,
                     thinning=thinning, chunk_size=chunk_size, checkpoint_interval=checkpoint_interval,
                     chain_method=chain_method, devices=devices, keep_warmup=keep_warmup, **method_options)
    if not counts_known:
        result.cost["num_logdensity_evals"] = None
        result.cost["num_grad_evals"] = None
        result.warnings.append({"code": "cost_unknown", "value": None,
                                "message": "the kernel's info has no num_logdensity_evals / num_grad_evals: "
                                           "the run's evaluation counts are unknown"})
    return result
