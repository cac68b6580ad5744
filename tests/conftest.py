import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
# No persistent compilation cache by default: full default-tier runs segfaulted reading back an entry
# written earlier in the same session (jax compilation_cache.get_executable_and_time, at the same test
# each time, also with a fresh folder); the in-memory caches still compile identical programs once.
# SAMPLAX_TEST_JAX_CACHE names a folder to use one anyway.
_cache_dir = os.environ.get("SAMPLAX_TEST_JAX_CACHE")
if _cache_dir:
    jax.config.update("jax_compilation_cache_dir", _cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def key():
    return jax.random.key(20261129)
