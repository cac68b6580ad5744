"""What a method is, as data: the contract between a method module and the run engine.

A method module declares a :class:`MethodSpec` and registers it once; the run
engine (:mod:`samplax.run`) turns (target, spec, seed, run length, devices)
into a compiled program and a :class:`~samplax.core.result.Result`.  Nothing
here runs anything: these are the types both sides agree on.

Four shapes of method:

* **chain methods** (``spec.build``): one Markov chain's ``init``/``step``, an
  :class:`Adapter` over the batch of chains and per-draw ``stats``
  (:class:`Algorithm`).  The engine runs the chunked loop, warm-up,
  checkpoints, progress, sharding.
* **population methods** (``spec.population``): one *independent run* of a
  population (SMC, nested sampling, parallel tempering, ensembles, particle
  flows) as a jittable ``run(key, run_index, target, *inputs)`` plus a host-side
  ``finish`` (:class:`PopulationPlan`).  The engine derives the run keys,
  batches and shards the runs, compiles once, times and assembles the Result.
* **controlled methods** (``spec.runner``): warm-up decisions made on the host
  between compiled chunks (``auto``).  They build their programs with the
  engine's public pieces (keys, initial points, program cache, progress).
* **trained methods** (``spec.trainer``): a sampler learned from the target
  (PIS, DDS): a pure training ``step`` the engine runs in compiled chunks
  (:func:`samplax.run.train`: progress, checkpoints, non-finite loss stop), then a
  jittable ``sample`` per chain and a host ``finish`` (:class:`TrainingPlan`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp


class Adapter(NamedTuple):
    """Warm-up over a batch of chains.

    ``init(keys[C], states[C]) -> (astate, num_grad_evals[C])``,
    ``update(astate, i, states[C], infos[C]) -> astate``,
    ``params(astate) -> params`` with a leading chain axis.
    """

    init: Callable
    update: Callable
    params: Callable
    #: True when chains adapt independently (the state has a leading chain axis
    #: and ``update`` on a batch of one chain equals that chain's slice of the
    #: batched update).  The engine then may run chains in blocks or one by one,
    #: which makes draws bitwise independent of the number of chains, and shard
    #: them over devices.  Pooled adapters set False.
    per_chain: bool = True
    #: The update during sampling (iterations ``i >= num_warmup``), same signature as
    #: ``update``.  ``None`` (the usual case) means the state is frozen after warm-up,
    #: so the engine skips the update there (``lax.cond``) instead of computing it and
    #: throwing it away.  ChEES sets it to advance its jitter counter.
    sampling_update: Optional[Callable] = None


def fixed_adapter(params_fn: Callable, num_chains: int = 0) -> Adapter:
    """No adaptation: ``params_fn()`` (one chain's params), copied to every chain of the batch.

    The state is the per-chain params themselves (leading chain axis), so the
    adapter works on any batch of chains (``per_chain=True``).
    """
    del num_chains  # the batch size comes from the keys

    def init(keys, states):
        del states
        n = keys.shape[0]
        p = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (n,) + jnp.shape(a)), params_fn())
        return p, jnp.zeros((n,), jnp.int32)

    def update(astate, i, states, infos):
        del i, states, infos
        return astate

    def params(astate):
        return astate

    return Adapter(init, update, params)


class Algorithm(NamedTuple):
    """What the engine runs for a chain method.

    Attributes:
      init: ``init(key, position) -> state`` for one chain (flat position).
      step: ``step(key, state, params) -> (state, info)`` for one chain; ``info`` has
        ``num_logdensity_evals`` and ``num_grad_evals``.
      adapter: warm-up over all chains (:class:`Adapter`).
      stats: ``stats(state, info, params) -> dict`` of per-draw scalars for one
        chain, with ArviZ ``sample_stats`` names.
      position: ``position(state) -> flat position``.
      logdensity: ``logdensity(state) -> scalar``.
    """

    init: Callable
    step: Callable
    adapter: Any
    stats: Callable
    position: Callable = lambda s: s.position
    logdensity: Callable = lambda s: s.logdensity


@dataclasses.dataclass(frozen=True)
class Option:
    """One documented option of a method: default, doc, and a validity check with its requirement in words."""

    default: Any
    doc: str
    check: Optional[Callable[[Any], bool]] = None
    requirement: str = ""
    #: ``explain(value) -> str``: why a value the check refuses is invalid, added to the error after the
    #: requirement (e.g. which property a named kernel lacks); None: the requirement says it all.
    explain: Optional[Callable[[Any], str]] = None


class PopulationContext(NamedTuple):
    """What the engine hands a population method when it plans a run.

    Attributes:
      num_chains: independent runs.
      num_warmup, num_samples: run length as the method defines it (see its docs).
      init: the user's ``init`` (``None``: the method's default start).
      progress: ``progress(message: str)`` shows ``message`` as the note of the run's progress
        line when progress is on (redrawn on a terminal, at most every 30 s elsewhere), nothing
        otherwise; safe to call from ``jax.debug.callback``.  It must not close over anything of
        one call (the compiled program is cached and re-used by later calls).
      show_progress: whether progress is on (compile a callback only then; put it after a tuning
        loop rather than inside one: a host callback inside a loop can change how XLA compiles
        the loop, and the draws must not depend on ``progress``).
      initial_points: ``initial_points(key, n, gradient_based) -> [n, d]``: the engine's
        Stan-style initial points (uniform(-2, 2), retried until finite); point ``j``
        uses ``fold_in(key, j)``.  The engine counts the evaluations of this search in the
        run's cost (the method's own counts leave them out).
      init_key: the run's initialisation key (derived once by the engine from the seed).
      label: ``"method/target"`` for messages.
      method: the method's registered name (for messages).
    """

    num_chains: int
    num_warmup: int
    num_samples: int
    init: Any
    progress: Callable
    show_progress: bool
    initial_points: Callable
    init_key: Any
    label: str
    method: str


class PopulationOutput(NamedTuple):
    """A population method's results on the host (numpy), returned by :attr:`PopulationPlan.finish`.

    ``samples`` ``[num_chains, num_draws, d]`` (equal-weight draws per run), ``stats``
    ``{name: [num_chains, num_draws]}``, exact evaluation counts summed over runs (every
    evaluation the plan computes, in its program or while planning, except
    ``PopulationContext.initial_points``, which the engine counts),
    optional ``log_Z``/``log_Z_se``/``log_weights``, ``extra`` and ``warnings``, and ``num_model_evals``: the
    network / model passes of the run (e.g. a trained sampler's score network while sampling; None: not applicable).
    """

    samples: Any
    stats: dict
    num_logdensity_evals: int
    num_grad_evals: int
    log_Z: Optional[float] = None
    log_Z_se: Optional[float] = None
    log_weights: Any = None
    extra: Optional[dict] = None
    warnings: Optional[list] = None
    config: Optional[dict] = None
    num_model_evals: Optional[int] = None


class PopulationPlan(NamedTuple):
    """One independent run of a population method, and how its output becomes results.

    Attributes:
      run: ``run(key, run_index, target, *inputs) -> out``: a pure, jittable function
        for ONE run (``target`` arrives with its arrays traced, so new data never
        retraces; ``inputs`` are per-run arrays).  The engine caches the compiled
        program by the method's options, the target's structure and the run lengths,
        so ``run`` must close over nothing else: anything drawn from the seed or
        taken from ``init`` travels in ``inputs``.  The engine maps it over runs
        (``lax.map``: one run at a time), sharding the runs over devices.
      finish: ``finish(out) -> PopulationOutput`` on host arrays (leading run axis).
      inputs: per-run arrays ``[num_chains, ...]`` passed to ``run`` (e.g. initial particles).
      shared: a pytree of arrays every run uses (e.g. the reference distribution), passed to
        ``run`` as the keyword ``shared=`` (traced arguments, not constants baked into the
        program; ``None``: no keyword).
    """

    run: Callable
    finish: Callable
    inputs: tuple = ()
    shared: Any = None


class TrainingContext(NamedTuple):
    """What the engine hands a trained method when it plans a run.

    Attributes:
      num_chains, num_samples: the draws asked for (``num_chains`` groups of ``num_samples``
        draws from the trained sampler; chain ``c`` uses ``fold_in(keys.run, c)``).
      label: ``"method/target"`` for messages.
      method: the method's registered name (for messages).
    """

    num_chains: int
    num_samples: int
    label: str
    method: str


class TrainingPlan(NamedTuple):
    """A trained method's run: training (what :func:`samplax.run.train` runs), then sampling.

    Attributes:
      init: ``init(key) -> state``: the initial training state (a pytree of arrays: parameters,
        optimizer state, ...), from the run's ``init`` key.
      step: ``step(key, state, target) -> (state, metrics)``: one pure training step (``target``
        arrives with its arrays traced); ``metrics`` is a dict of scalars with at least ``loss``,
        and ``num_logdensity_evals`` / ``num_grad_evals`` (the target evaluations of the step);
        ``log_Z`` (the step's estimate) is shown in the progress line when present.  Step ``i``
        gets ``fold_in(keys.adapt, i)``.
      num_steps: training steps (from the method's budget).
      sample: ``sample(key, state, target) -> out``: ``num_samples`` draws of ONE chain from the
        trained state (jittable; the engine maps it over chains with ``lax.map``).
      finish: ``finish(state, out) -> PopulationOutput`` on host arrays (``out`` with a leading chain
        axis); its evaluation counts are those of sampling (the engine adds training's).
    """

    init: Callable
    step: Callable
    num_steps: int
    sample: Callable
    finish: Callable


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registered sampling method (see the module docstring for the three shapes).

    ``build(logdensity_fn, dim, num_warmup, num_chains, **options) -> Algorithm`` for chain
    methods (with ``target=`` too when ``needs_target``); ``population(target, context,
    **options) -> PopulationPlan`` for population methods; ``runner(target, spec, *, keys, ...)``
    for controlled ones.  ``options`` documents every keyword the method accepts (with
    defaults); unknown or invalid options are rejected with a clear error.
    """

    name: str
    build: Optional[Callable]
    description: str
    options: dict
    family: str = "mcmc"
    gradient_based: bool = True
    #: Controlled methods: ``runner(target, spec, *, keys, num_chains, num_warmup, num_samples, init,
    #: progress, thinning, **options) -> Result`` built from the engine's public pieces.
    runner: Optional[Callable] = None
    #: Population methods: ``population(target, context, **options) -> PopulationPlan``.
    population: Optional[Callable] = None
    #: Trained methods: ``trainer(target, context, **options) -> TrainingPlan``.
    trainer: Optional[Callable] = None
    #: Trained methods: ``sampling_cost(options) -> int``, the target evaluations (a value and gradient
    #: counting once) that one returned draw costs at these (checked) options.  With it a total budget
    #: splits into ``num_samples x sampling_cost`` for sampling and the rest for the option
    #: ``training_evals`` (``samplax bench learned``).
    sampling_cost: Optional[Callable] = None
    #: A registered target this method is made for (the conformance suite runs
    #: the method on it); None means any target (a standard Gaussian is used).
    example_target: Optional[str] = None
    #: Whether the method writes checkpoints; None: chain methods do, the others do not.
    checkpoints: Optional[bool] = None
    #: ``prepare(target, options) -> options``: checks that the target suits the method (clear
    #: error otherwise) and resolves target-dependent defaults, before anything is built.
    prepare: Optional[Callable] = None
    #: ``build`` also receives ``target=`` (the target itself, arrays traced), e.g. for the
    #: composite structure of proximal methods.
    needs_target: bool = False
    #: Unadjusted methods: ``bias(options) -> message``; the engine warns (``UserWarning``) and
    #: attaches a ``biased`` run warning with the final step size.
    bias: Optional[Callable] = None
    #: Which fold of the root key drives the run (``fold_in(root, run_stream)``); the engine
    #: derives every key from the seed with it.  Kept per method so that seeded draws stay
    #: those of earlier releases.
    run_stream: int = 1

    @property
    def kind(self) -> str:
        """``"chain"``, ``"population"``, ``"controlled"`` or ``"trained"``."""
        if self.trainer is not None:
            return "trained"
        if self.population is not None:
            return "population"
        if self.runner is not None:
            return "controlled"
        return "chain"

    @property
    def supports_checkpoints(self) -> bool:
        """Whether ``sample(..., checkpoint_dir=...)`` works: chain methods, unless ``checkpoints=False``.
        Population methods run as one compiled program and have no checkpoints; ``auto`` makes warm-up
        decisions on the host and declares none; trained methods checkpoint their training."""
        if self.checkpoints is not None:
            return self.checkpoints
        return self.kind in ("chain", "trained")

    def resolve_options(self, given: dict) -> dict:
        """The full option dict: defaults filled in, unknown names (``TypeError``) and invalid values
        (``ValueError``) refused with the option's name and requirement."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            raise TypeError(
                f"method {self.name!r} got unknown option(s) {unknown}; "
                f"it accepts {sorted(self.options)}"
            )
        out = {}
        for k, opt in self.options.items():
            v = given.get(k, opt.default)
            if k in given and opt.check is not None and not opt.check(v):
                why = f"; {opt.explain(v)}" if opt.explain is not None else ""
                raise ValueError(f"method {self.name!r}: option {k}={v!r} is invalid: {opt.requirement}{why}")
            out[k] = v
        return out
