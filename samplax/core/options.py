"""Checks of method option values: one definition of each, shared by every method module.

Each check takes the value and returns True when it is valid; the requirement in
words goes with it into :class:`~samplax.core.method.Option`.  Booleans are not
numbers here (``True`` is not a positive int), and NumPy scalars count like
Python numbers.
"""
from __future__ import annotations

import ast
import math
import numbers
from typing import Callable


def is_number(v) -> bool:
    """A real number (Python or NumPy int or float), not a bool, not NaN."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return False
    return isinstance(v, numbers.Integral) or not math.isnan(float(v))


def is_int(v) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def pos_int(v) -> bool:
    """An int >= 1."""
    return is_int(v) and bool(v >= 1)


def nonneg_int(v) -> bool:
    """An int >= 0."""
    return is_int(v) and bool(v >= 0)


def pos_number(v) -> bool:
    """A number > 0 (``inf`` included: e.g. a threshold that never triggers)."""
    return is_number(v) and bool(v > 0)


def pos_float(v) -> bool:
    """A finite number > 0."""
    return pos_number(v) and (isinstance(v, numbers.Integral) or math.isfinite(float(v)))


def prob(v) -> bool:
    """A number in the open interval (0, 1)."""
    return is_number(v) and bool(0 < v < 1)


def boolean(v) -> bool:
    """True or False."""
    return isinstance(v, bool)


def one_of(choices) -> Callable:
    """A check for a member of ``choices`` (a collection or mapping of names; unhashable values are not members)."""
    def ok(v) -> bool:
        try:
            return v in choices
        except TypeError:
            return False

    ok.__name__ = "one_of"
    return ok


def or_none(check: Callable) -> Callable:
    """``check`` that also accepts None."""
    def ok(v) -> bool:
        return v is None or check(v)

    ok.__name__ = f"{getattr(check, '__name__', 'check')}_or_none"
    ok.__doc__ = f"None, or: {check.__doc__ or ''}".strip()
    return ok


def int_at_least(n: int) -> Callable:
    """A check for an int >= ``n``."""
    def ok(v) -> bool:
        return is_int(v) and bool(v >= n)

    ok.__name__ = f"int_at_least_{n}"
    return ok


pos_int_or_none = or_none(pos_int)
pos_number_or_none = or_none(pos_number)
pos_float_or_none = or_none(pos_float)
prob_or_none = or_none(prob)


def parse_value(text: str):
    """A command-line option value: ``true``/``false``, ``none``/``null``, a Python literal (number, string, tuple,
    list, dict), else the text itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_assignments(pairs, flag: str = "--set") -> dict:
    """``{key: parse_value(value)}`` of command-line ``key=value`` strings (ValueError naming ``flag`` otherwise)."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ValueError(f"{flag} expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out
