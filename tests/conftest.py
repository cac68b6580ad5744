import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
# Identical programs compiled by different tests are compiled once per session: a cache folder of this
# session's own (a folder shared with other test processes once served an entry whose read crashed the
# process in JAX's compilation cache); SAMPLAX_TEST_JAX_CACHE names a folder to keep across sessions.
_cache_dir = os.environ.get("SAMPLAX_TEST_JAX_CACHE")
if _cache_dir is None:
    _cache_dir = tempfile.mkdtemp(prefix="samplax-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache_dir, True)
jax.config.update("jax_compilation_cache_dir", _cache_dir)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def key():
    return jax.random.key(20261129)
