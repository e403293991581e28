"""Parameter validation with errors that name the parameter, the value and what is allowed.

Every public entry point (package functions, notebook parameter cells, YAML loaders) checks its
inputs with these helpers, so a bad value fails at the boundary with a readable message instead of
a traceback from deep inside numpy or torch.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any


class ParameterError(ValueError):
    """A parameter has a value outside what is allowed.

    Attributes name the parameter, the rejected value and a description of the allowed values so
    callers (and the reproduction runner) can report them.
    """

    def __init__(self, name: str, value: Any, allowed: str, hint: str | None = None):
        self.name = name
        self.value = value
        self.allowed = allowed
        self.hint = hint
        message = f"parameter '{name}' = {value!r} is invalid; allowed: {allowed}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; otherwise raise, suggesting close matches."""
    options = list(allowed)
    if value in options:
        return value
    hint = None
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(o) for o in options], n=3)
        if close:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    raise ParameterError(name, value, "one of " + ", ".join(repr(o) for o in options), hint)


def _is_real_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    integer: bool = False,
) -> Any:
    """Check that ``value`` is a finite real (an integer if asked) inside the given bounds."""
    kind = "an integer" if integer else "a finite number"
    lo = "" if minimum is None else (f">= {minimum}" if min_inclusive else f"> {minimum}")
    hi = "" if maximum is None else (f"<= {maximum}" if max_inclusive else f"< {maximum}")
    bounds = " and ".join(b for b in (lo, hi) if b)
    allowed = kind + (f" {bounds}" if bounds else "")
    if integer:
        # numpy integers are fine; floats that happen to be whole are not (they hide bugs).
        if not (isinstance(value, int) or type(value).__name__.startswith(("int", "uint"))) or isinstance(
            value, bool
        ):
            raise ParameterError(name, value, allowed)
        value = int(value)
    else:
        if not _is_real_number(value) and not type(value).__name__.startswith(("float", "int")):
            raise ParameterError(name, value, allowed)
        if not math.isfinite(float(value)):
            raise ParameterError(name, value, allowed)
    if minimum is not None and (value < minimum if min_inclusive else value <= minimum):
        raise ParameterError(name, value, allowed)
    if maximum is not None and (value > maximum if max_inclusive else value >= maximum):
        raise ParameterError(name, value, allowed)
    return value


def check_positive_int(name: str, value: Any) -> int:
    """An integer >= 1."""
    return check_number(name, value, minimum=1, integer=True)


def check_nonnegative_int(name: str, value: Any) -> int:
    """An integer >= 0."""
    return check_number(name, value, minimum=0, integer=True)


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    return check_number(name, value, minimum=0, min_inclusive=False)


def check_fraction(name: str, value: Any) -> float:
    """A number in [0, 1]."""
    return check_number(name, value, minimum=0.0, maximum=1.0)


def check_list(name: str, value: Any, item_check, *, min_length: int = 1) -> list:
    """Check a non-empty list (or tuple) and each item with ``item_check(f"{name}[i]", item)``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ParameterError(name, value, f"a list with at least {min_length} item(s)")
    items = list(value)
    if len(items) < min_length:
        raise ParameterError(name, value, f"a list with at least {min_length} item(s)")
    return [item_check(f"{name}[{i}]", item) for i, item in enumerate(items)]


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` only: strings such as ``'yes'`` or ``'false'`` and the integers 0/1 are refused."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ParameterError(name, value, "true or false (a boolean)")


def suggest(value: Any, options: Iterable[Any]) -> str | None:
    """A ``did you mean ...?`` hint for a misspelt name, or None."""
    if not isinstance(value, str):
        return None
    close = difflib.get_close_matches(value, [str(o) for o in options], n=3, cutoff=0.6)
    return ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else None


def check_known_name(name: str, known: Iterable[str], *, what: str = "a parameter of this notebook", value: Any = None) -> str:
    """Refuse a parameter ``name`` that is not one of ``known``, with a did-you-mean hint."""
    options = list(known)
    if name in options:
        return name
    raise ParameterError(name, value, f"{what}: " + ", ".join(options), suggest(name, options) or "unknown name")


#: Python type names a notebook parameter may be declared with, and what each accepts.
TYPE_DESCRIPTIONS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "list": "a list",
    "dict": "a mapping",
}


def check_declared_type(name: str, value: Any, type_name: str) -> Any:
    """Check ``value`` against a parameter declared as ``type_name`` (``int``, ``float``, ``str``,
    ``bool``, ``list``, ``dict``, or a subscripted form such as ``list[int]``).

    Booleans are not integers here, an ``int`` is accepted (and returned as a float) for a
    ``float`` parameter, and a tuple for a ``list`` one.
    """
    base = type_name.split("[", 1)[0].strip()
    allowed = TYPE_DESCRIPTIONS.get(base)
    if allowed is None:
        return value
    allowed = f"{allowed} ({type_name})"
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise ParameterError(name, value, allowed)
    if base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ParameterError(name, value, allowed)
    if base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ParameterError(name, value, allowed)
    if base == "str":
        if isinstance(value, str):
            return value
        raise ParameterError(name, value, allowed)
    if base == "list":
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ParameterError(name, value, allowed)
    if base == "dict":
        if isinstance(value, dict):
            return value
        raise ParameterError(name, value, allowed)
    return value
