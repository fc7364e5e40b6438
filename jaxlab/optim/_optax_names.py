"""``optax.contrib.muon``'s argument names, accepted by :func:`jaxlab.optim.muon` as aliases.

Each alias maps onto jaxlab options; giving an alias and the jaxlab spelling
it stands for raises ``TypeError`` naming both, and an optax option jaxlab
has no equivalent for raises ``TypeError`` unless it is given its no-op value.
"""

from __future__ import annotations

import jax
import numpy as np

# optax's preset names of Newton–Schulz coefficient tables → jaxlab's.
_OPTAX_COEFF_PRESETS = {"standard": "keller"}


def _is_default(value, default) -> bool:
    """Whether a jaxlab argument still holds its default.

    Values injected by ``optax.inject_hyperparams`` arrive as JAX arrays, which
    cannot be told apart from a default; they count as the default, so there the
    alias wins.
    """
    if isinstance(value, jax.Array):
        return True
    plain = isinstance(value, (str, int, float)) and not isinstance(value, bool)
    return value is default or (plain and value == default)


def _shape(coeffs) -> tuple[int, ...]:
    if isinstance(coeffs, str):
        return ()
    try:
        return tuple(np.shape(coeffs))
    except ValueError:  # a ragged table: coefficient_table reports it
        return ()


def _take(fn, given: dict, defaults: dict, alias: str, value, names: dict) -> None:
    """Writes ``names`` (jaxlab name → value) into ``given``; ``TypeError`` if one was given too."""
    for name, new in names.items():
        if not _is_default(given[name], defaults[name]):
            raise TypeError(
                f"{fn}: got both {alias!r} (optax.contrib.muon's name) and {name!r}; {alias}={value!r} sets {name}={new!r}, so pass only one of them"
            )
        given[name] = new


def _unsupported(fn, alias: str, value, noop: str, is_noop: bool) -> None:
    if not is_noop:
        raise TypeError(f"{fn}: optax.contrib.muon's {alias}={value!r} has no jaxlab equivalent (only {alias}={noop}, what jaxlab does, is accepted)")


def resolve_optax_names(fn: str, given: dict, defaults: dict, optax_names: dict) -> dict:
    """The jaxlab arguments after applying the optax aliases in ``optax_names`` (``None``: not given).

    Args:
        fn: name of the function, for messages.
        given: the jaxlab arguments as passed (all of them).
        defaults: their defaults.
        optax_names: ``ns_steps``, ``ns_coeffs``, ``eps``, ``preconditioning``,
            ``consistent_rms``, ``muon_weight_dimension_numbers``, ``adaptive``,
            ``adam_eps_root`` as passed.

    Returns:
        A new dict of the jaxlab arguments.

    Raises:
        TypeError: an alias given with its jaxlab spelling, or an optax option
            without a jaxlab equivalent.
        ValueError: an optax coefficient preset jaxlab does not have.
    """
    given = dict(given)
    opts = {k: v for k, v in optax_names.items() if v is not None}
    if "adaptive" in opts:
        _unsupported(fn, "adaptive", opts["adaptive"], "False", opts["adaptive"] is False)
    if "adam_eps_root" in opts:
        root = opts["adam_eps_root"]
        zero = isinstance(root, (int, float)) and not isinstance(root, bool) and root == 0
        _unsupported(fn, "adam_eps_root", root, "0.0", zero)
    if "preconditioning" in opts:
        value = opts["preconditioning"]
        if value != "frobenius":
            raise TypeError(
                f"{fn}: optax.contrib.muon's preconditioning={value!r} has no jaxlab equivalent; "
                "preconditioning='frobenius' maps to normalize='frobenius' (jaxlab's own is normalize='power')"
            )
        _take(fn, given, defaults, "preconditioning", value, {"normalize": "frobenius"})
    if "ns_coeffs" in opts:
        value = opts["ns_coeffs"]
        coeffs = value
        if isinstance(value, str):
            if value not in _OPTAX_COEFF_PRESETS:
                raise ValueError(
                    f"{fn}: ns_coeffs preset {value!r} has no jaxlab preset; expected one of "
                    f"{sorted(_OPTAX_COEFF_PRESETS)} (optax's names) or a (3,)/(k, 3) table"
                )
            coeffs = _OPTAX_COEFF_PRESETS[value]
        _take(fn, given, defaults, "ns_coeffs", value, {"coeffs": coeffs})
        shape = _shape(coeffs)
        if len(shape) == 2 and "ns_steps" not in opts and given["steps"] is None:
            given["steps"] = shape[0]  # optax applies a (k, 3) table once, row by row
    if "ns_steps" in opts:
        _take(fn, given, defaults, "ns_steps", opts["ns_steps"], {"steps": opts["ns_steps"]})
    if "eps" in opts:
        _take(fn, given, defaults, "eps", opts["eps"], {"normalize_eps": opts["eps"], "adam_eps": opts["eps"]})
    if "consistent_rms" in opts:
        value = opts["consistent_rms"]
        _take(fn, given, defaults, "consistent_rms", value, {"shape_scaling": "moonlight", "update_rms": value})
    if "muon_weight_dimension_numbers" in opts:
        value = opts["muon_weight_dimension_numbers"]
        _take(fn, given, defaults, "muon_weight_dimension_numbers", value, {"dimension_numbers": value})
    return given
