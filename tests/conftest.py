import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
# Identical programs compiled by different tests are compiled once per session.
jax.config.update("jax_compilation_cache_dir", os.environ.get("SAMPLAX_TEST_JAX_CACHE", "/tmp/samplax-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def key():
    return jax.random.key(20261129)
