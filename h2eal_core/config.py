"""Constants with units and provenance, read from YAML.

Every reconstructed number in this artifact is data, not a comment: a YAML entry

.. code-block:: yaml

    bank_bandwidth:
      value: 25.6
      unit: GB/s
      source: "H2-LLM (ISCA'25) open artifact, main.py default"
      confidence: medium          # high | medium | low
      band: [6.4, 51.2]           # plausible range used by the sensitivity study

becomes a :class:`Quantity`. Units are checked against the dimension the consumer expects and
converted to SI base units, so a YAML author may write ``GB/s`` or ``MB/s``, ``pJ/bit`` or
``fJ/bit``. Errors name the file and the field. A value is checked in the order a reader would:
a number, a known unit of the expected dimension, the sign the dimension allows (a bandwidth,
a frequency or a size must be positive; an energy, a power, a count or a ratio must not be
negative), then the sensitivity band.

YAML is read with YAML 1.2 booleans: only ``true``/``false`` are booleans (``yes``, ``no``,
``on``, ``off`` stay strings, so a notebook parameter given as ``yes`` is refused instead of
silently taken as true). A syntax error names the file and the line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .validation import ParameterError

#: unit -> (dimension, factor to SI base). Dimensions are plain names, compared as strings.
UNITS: dict[str, tuple[str, float]] = {
    # counts and ratios
    "count": ("count", 1.0),
    "ratio": ("ratio", 1.0),
    # data size
    "B": ("bytes", 1.0),
    "KB": ("bytes", 1e3),
    "MB": ("bytes", 1e6),
    "GB": ("bytes", 1e9),
    "KiB": ("bytes", 2.0**10),
    "MiB": ("bytes", 2.0**20),
    "GiB": ("bytes", 2.0**30),
    "bit": ("bytes", 1 / 8),
    # bandwidth
    "B/s": ("bytes/s", 1.0),
    "MB/s": ("bytes/s", 1e6),
    "GB/s": ("bytes/s", 1e9),
    "TB/s": ("bytes/s", 1e12),
    "B/cycle": ("bytes/cycle", 1.0),
    # frequency and time
    "Hz": ("Hz", 1.0),
    "MHz": ("Hz", 1e6),
    "GHz": ("Hz", 1e9),
    "s": ("s", 1.0),
    "ms": ("s", 1e-3),
    "us": ("s", 1e-6),
    "ns": ("s", 1e-9),
    "cycle": ("cycle", 1.0),
    # energy
    "J": ("J", 1.0),
    "pJ": ("J", 1e-12),
    "fJ": ("J", 1e-15),
    "J/bit": ("J/bit", 1.0),
    "pJ/bit": ("J/bit", 1e-12),
    "fJ/bit": ("J/bit", 1e-15),
    "pJ/bit/hop": ("J/bit/hop", 1e-12),
    "pJ/MAC": ("J/MAC", 1e-12),
    "pJ/op": ("J/op", 1e-12),
    # power
    "W": ("W", 1.0),
    "mW": ("W", 1e-3),
    # compute
    "MAC/cycle": ("MAC/cycle", 1.0),
    "lanes": ("count", 1.0),
    "element/cycle": ("element/cycle", 1.0),
    "op/element": ("op/element", 1.0),
    # element sizes (bytes per stored number: FP16 = 2, INT4 = 0.5)
    "B/element": ("bytes/element", 1.0),
    "bit/element": ("bytes/element", 1 / 8),
}

CONFIDENCE_LEVELS = ("high", "medium", "low")

#: Dimensions whose value may be zero (an ideal, free operation; nothing counted); every other
#: dimension (sizes, bandwidths, frequencies, times, throughputs) must be strictly positive.
#: No dimension here may be negative.
NONNEGATIVE_DIMENSIONS = ("count", "ratio", "J", "J/bit", "J/bit/hop", "J/MAC", "J/op", "W", "op/element")


def sign_rule(dimension: str) -> tuple[float, bool, str]:
    """``(bound, inclusive, words)`` of the sign a value of ``dimension`` must have."""
    if dimension in NONNEGATIVE_DIMENSIONS:
        return 0.0, True, "must not be negative"
    return 0.0, False, "must be positive"


@dataclasses.dataclass(frozen=True)
class Quantity:
    """One constant: its value in the unit it was written in, plus where it comes from."""

    name: str
    value: float
    unit: str
    source: str
    confidence: str = "medium"
    band: tuple[float, float] | None = None
    note: str = ""

    @property
    def dimension(self) -> str:
        return UNITS[self.unit][0]

    @property
    def si(self) -> float:
        """The value in SI base units (bytes, bytes/s, Hz, s, J, J/bit, ...)."""
        return self.value * UNITS[self.unit][1]

    @property
    def band_si(self) -> tuple[float, float]:
        """The sensitivity band in SI units (the value itself twice when no band is given)."""
        lo, hi = self.band if self.band is not None else (self.value, self.value)
        factor = UNITS[self.unit][1]
        return lo * factor, hi * factor

    def with_value(self, value: float, *, unit: str | None = None, source: str | None = None) -> Quantity:
        """A copy with another value (for sweeps); the source notes the override."""
        return dataclasses.replace(
            self,
            value=float(value),
            unit=unit or self.unit,
            source=source or f"override (was {self.value:g} {self.unit}: {self.source})",
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"value": self.value, "unit": self.unit, "source": self.source, "confidence": self.confidence}
        if self.band is not None:
            out["band"] = list(self.band)
        if self.note:
            out["note"] = self.note
        return out


def parse_quantity(name: str, entry: Any, *, expected_dimension: str | None = None, where: str = "") -> Quantity:
    """Build a :class:`Quantity` from a YAML mapping, checking every field."""
    field = f"{where}{name}" if not where else f"{where}:{name}"
    if not isinstance(entry, Mapping):
        raise ParameterError(field, entry, "a mapping with keys value, unit, source, confidence (and optional band)")
    missing = [k for k in ("value", "unit", "source") if k not in entry]
    if missing:
        raise ParameterError(field, dict(entry), f"a mapping that also has {', '.join(missing)}")
    unknown = set(entry) - {"value", "unit", "source", "confidence", "band", "note"}
    if unknown:
        raise ParameterError(
            f"{field}.{sorted(unknown)[0]}", entry[sorted(unknown)[0]], "keys value, unit, source, confidence, band, note"
        )
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"{field}.value", value, "a number")
    unit = entry["unit"]
    if unit not in UNITS:
        raise ParameterError(f"{field}.unit", unit, "one of " + ", ".join(sorted(UNITS)))
    if expected_dimension is not None and UNITS[unit][0] != expected_dimension:
        allowed = sorted(u for u, (dim, _) in UNITS.items() if dim == expected_dimension)
        raise ParameterError(f"{field}.unit", unit, f"a unit of {expected_dimension}: {', '.join(allowed)}")
    dimension = UNITS[unit][0]
    bound, inclusive, words = sign_rule(dimension)
    if not math.isfinite(value) or (value < bound if inclusive else value <= bound):
        raise ParameterError(
            f"{field}.value", value, f"a finite number {'>=' if inclusive else '>'} 0 {unit}", f"{words}: a {dimension} quantity"
        )
    source = entry["source"]
    if not isinstance(source, str) or not source.strip():
        raise ParameterError(f"{field}.source", source, "a non-empty citation string")
    confidence = entry.get("confidence", "medium")
    if confidence not in CONFIDENCE_LEVELS:
        raise ParameterError(f"{field}.confidence", confidence, "one of " + ", ".join(CONFIDENCE_LEVELS))
    band = entry.get("band")
    if band is not None:
        if (
            not isinstance(band, (list, tuple))
            or len(band) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in band)
            or band[0] > band[1]
        ):
            raise ParameterError(f"{field}.band", band, "[low, high] with low <= high")
        if not band[0] <= value <= band[1]:
            raise ParameterError(f"{field}.band", band, f"a range that contains the value {value}")
        band = (float(band[0]), float(band[1]))
    return Quantity(
        name=name,
        value=float(value),
        unit=unit,
        source=source.strip(),
        confidence=confidence,
        band=band,
        note=str(entry.get("note", "")),
    )


class StrictBoolLoader(yaml.SafeLoader):
    """:class:`yaml.SafeLoader` with YAML 1.2 booleans: only true/false (any case), not yes/no/on/off."""


StrictBoolLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictBoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory or the repository when inside one of them."""
    from .io import repo_root

    resolved = path.resolve()
    for base in (Path.cwd().resolve(), repo_root()):
        try:
            return str(resolved.relative_to(base))
        except ValueError:
            continue
    return str(path)


def parse_yaml_text(text: str, *, where: str = "<text>") -> Any:
    """Parse YAML ``text`` (strict booleans); a syntax error names ``where`` and the line, in one line."""
    try:
        return yaml.load(text, Loader=StrictBoolLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        lines = text.splitlines()
        snippet = lines[line - 1].strip() if line and line <= len(lines) else "<unparsable>"
        location = f"{where}:{line}" if line else where
        col = f", column {mark.column + 1}" if mark is not None else ""
        raise ParameterError(location, snippet, "valid YAML", f"line {line}{col}: {problem}") from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error when the file is missing, unparsable or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"YAML file not found: {path}")
    data = parse_yaml_text(path.read_text(encoding="utf-8"), where=_display_path(path))
    if not isinstance(data, dict):
        raise ParameterError(_display_path(path), type(data).__name__, "a YAML mapping at the top level")
    return data


def resolve_named_file(name_or_path: str | os.PathLike, folder: Path, what: str) -> Path:
    """Resolve ``name`` to ``folder/<name>.yaml`` or accept an existing path; list names if unknown."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ParameterError(what, name_or_path, "one of " + ", ".join(repr(k) for k in known) + " or a path to a .yaml file")
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    path = folder / f"{name_or_path}.yaml"
    if path.is_file():
        return path
    known = sorted(p.stem for p in folder.glob("*.yaml"))
    from .validation import suggest

    raise ParameterError(
        what, str(name_or_path), "one of " + ", ".join(repr(k) for k in known) + " or a path to a .yaml file", suggest(str(name_or_path), known)
    )
