import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# solver="auto" of samplax.diffusion caches its tuned grids on disk: keep the tests' grids out of the user's cache
if "SAMPLAX_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["SAMPLAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="samplax-test-cache-")
# ... and tune briefly where a test (the README, the CLI) runs the default: the default tier's time budget
os.environ.setdefault("SAMPLAX_AUTO_TUNE", '{"batch": 64, "iters": 25}')

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
# No persistent compilation cache unless SAMPLAX_TEST_JAX_CACHE names a folder for one (also when the
# environment sets JAX_COMPILATION_CACHE_DIR): the in-memory caches compile identical programs once.
_cache_dir = os.environ.get("SAMPLAX_TEST_JAX_CACHE")
if _cache_dir:
    jax.config.update("jax_compilation_cache_dir", _cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
else:
    jax.config.update("jax_enable_compilation_cache", False)


@pytest.fixture(autouse=True, scope="module")
def _fresh_programs_per_module():
    """Drop every compiled program after each test module (``samplax.clear_caches``).

    Each live XLA:CPU executable holds memory mappings of its own; kept for a whole
    session, the default tier's programs passed the kernel's limit of 65530 mappings per
    process (vm.max_map_count) about a third of the way through, and XLA crashed with a
    segmentation fault while compiling the next one.
    """
    yield
    import samplax

    samplax.clear_caches()


@pytest.fixture
def key():
    return jax.random.key(20261129)
