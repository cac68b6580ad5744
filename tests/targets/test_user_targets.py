"""Targets built from a user's function: the construction-time checks of event_shape and indexing (issue #16)."""
import jax.numpy as jnp
import numpy as np
import pytest

import samplax


def _gauss(x):
    return -0.5 * jnp.sum(x**2)


@pytest.mark.parametrize("bad", ["2", "23", 2.0, 2.5, -1, 0, True, None, (2, "3"), (2.0,), (), (2, -1)])
def test_event_shape_must_be_positive_ints(bad):
    for ctor in (samplax.from_logdensity, samplax.from_energy):
        with pytest.raises(ValueError, match="event_shape"):
            ctor(_gauss, bad)


@pytest.mark.parametrize("good,shape", [(2, (2,)), ((2, 3), (2, 3)), ([4], (4,)), (np.int64(3), (3,)),
                                        ((np.int32(2),), (2,)), (np.array([2, 2]), (2, 2))])
def test_event_shape_accepted(good, shape):
    assert samplax.from_logdensity(_gauss, good).event_shape == shape


def test_indexing_past_event_shape_is_refused():
    """``x[2]`` of a 2-vector reads ``x[1]`` in JAX (clamped): the target would silently be wrong."""
    def banana(x):
        return -0.5 * x[0] ** 2 - 0.5 * (x[2] - x[0] ** 2) ** 2

    with pytest.raises(ValueError, match=r"from_logdensity: the log-density 'banana' .*event_shape \(2,\)"
                                         r".*index 2 is out of bounds"):
        samplax.from_logdensity(banana, 2)
    assert samplax.from_logdensity(banana, 3).event_shape == (3,)  # the right shape is fine
    with pytest.raises(ValueError, match=r"from_energy: the energy function 'e2d' .*event_shape \(2, 2\)"):
        samplax.from_energy(lambda x: jnp.sum(x) + x[1, 3], (2, 2), name="e2d")
    with pytest.raises(ValueError, match="event_shape"):  # a negative index past the start, inside a loop
        samplax.from_logdensity(lambda x: sum(x[i] for i in range(-3, 2)), 2)


def test_indexing_check_can_be_turned_off_for_intended_clipping():
    def clipped(x):
        return -jnp.take(x, 5, mode="clip") ** 2

    with pytest.raises(ValueError, match="check_indexing=False"):
        samplax.from_logdensity(clipped, 2)
    t = samplax.from_logdensity(clipped, 2, check_indexing=False)
    assert float(t.logdensity(jnp.array([0.0, 3.0]))) == -9.0
