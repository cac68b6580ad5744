"""The run engine: the one place that turns (target, method or kernel, seed or key, run length,
devices) into compiled programs and a :class:`~samplax.core.result.Result`.

It stands on :mod:`samplax.core` (and the diagnostics that assemble a Result);
it never imports a method.  Methods are data (:class:`~samplax.core.method.MethodSpec`):

* :func:`run_chains`: chain methods and user kernels: keys, initial points,
  the chunked ``lax.scan`` loop, warm-up, checkpoints, progress, Ctrl-C,
  sharding over devices.
* :func:`run_population`: independent runs of population methods, batched
  and sharded, compiled once.
* :func:`train`: the generic training loop of trained methods (a pure ``step``, compiled
  chunks, progress, checkpoints, a clear stop at a non-finite loss), and :func:`run_trained`.
* the public pieces that controlled methods (``auto``) build their own host
  loop from: :class:`RunKeys`, :func:`find_initial_points` (and
  :func:`search_evaluations`, what it computed), :func:`check_user_init`, :class:`Progress`, :data:`PROGRAMS`,
  :func:`program_key`, :func:`target_id`.

See ``docs/architecture.md``.
"""
from samplax.run.cache import PROGRAMS, ProgramCache, program_key
from samplax.run.chains import CHAIN_BLOCK, build_algorithm, run_chains
from samplax.run.checkpoint import CheckpointMismatchError, array_digest, config_hash, target_id
from samplax.run.engine import check_int, execute
from samplax.run.init import MAX_INIT_ATTEMPTS, check_user_init, find_initial_points, search_evaluations
from samplax.run.kernel import kernel_method, kernel_reports_counts
from samplax.run.keys import RunKeys, batch_keys, root_key, run_keys
from samplax.run.population import run_population
from samplax.run.progress import Progress
from samplax.run.trained import run_trained
from samplax.run.training import NonFiniteLossError, TrainOutput, train

__all__ = [
    "CHAIN_BLOCK", "MAX_INIT_ATTEMPTS", "PROGRAMS", "CheckpointMismatchError", "NonFiniteLossError", "ProgramCache",
    "Progress", "TrainOutput",
    "RunKeys", "array_digest", "batch_keys", "build_algorithm", "check_int", "check_user_init", "config_hash",
    "execute", "find_initial_points", "kernel_method", "kernel_reports_counts", "program_key", "root_key",
    "run_chains", "run_keys", "run_population", "run_trained", "search_evaluations", "target_id", "train",
]
