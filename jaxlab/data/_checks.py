"""Argument checks shared by the data loaders (private).

Each check raises a ``ValueError`` that names the argument, what was expected
and what was received, so a bad call fails before any data is touched.
"""

from __future__ import annotations

import numbers


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Returns ``value`` as a Python int if it is an integer ``>= minimum``.

    Args:
      name: the argument's name, used in the error message.
      value: the received value (a Python or NumPy integer; bools are refused).
      minimum: the smallest allowed value.

    Returns:
      ``int(value)``.

    Raises:
      ValueError: if ``value`` is not an integer or is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r} of type {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value}.")
    return int(value)


def check_fraction(name: str, value: object) -> float:
    """Returns ``value`` as a float if it lies strictly between 0 and 1.

    Raises:
      ValueError: if ``value`` is not a real number in the open interval (0, 1).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:  # type: ignore[operator]  # typeshed's Real lacks __gt__
        raise ValueError(f"`{name}` must be a number strictly between 0 and 1; got {value!r}.")
    return float(value)
