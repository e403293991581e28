"""Checks shared by the reliability tier: one-line errors that name the parameter, files left unchanged."""

import hashlib
from pathlib import Path

from h2eal_core.validation import ParameterError

REPO = Path(__file__).resolve().parents[2]
#: Folders whose files a refused input must leave untouched (committed outputs, inputs, notebooks).
WATCHED = ("figures", "data", "notebooks")
#: Text that betrays an error from deep inside a library instead of a checked boundary.
DEEP_ERROR_MARKERS = ("Traceback", "File \"", "numpy/", "torch/", "yaml/", "ScannerError", "ZeroDivisionError", "KeyError")


def snapshot(root: Path = REPO, folders=WATCHED) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``folders`` of ``root`` (``build/`` and caches excluded)."""
    out = {}
    for folder in folders:
        base = root / folder
        if not base.is_dir():
            continue
        for p in base.rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts:
                st = p.stat()
                out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def tree_digest(root: Path) -> str:
    """Digest of every file's name and bytes under ``root`` (for temporary folders a command was given)."""
    h = hashlib.sha256()
    if root.exists():
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def assert_names(message: str, name: str, value=None) -> None:
    """``message`` is one line naming the parameter ``name`` (and ``value`` when given), with no deep traceback."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"not one line: {message!r}"
    assert f"'{name}" in lines[0], f"{name!r} not named in {lines[0]!r}"
    if value is not None:
        assert repr(value) in lines[0] or str(value) in lines[0], f"value {value!r} not in {lines[0]!r}"
    assert "allowed" in lines[0] or "did you mean" in lines[0], lines[0]
    for marker in DEEP_ERROR_MARKERS:
        assert marker not in message, f"{marker!r} in {message!r}"


def assert_parameter_error(excinfo, name: str, value=None) -> None:
    """The exception is a ParameterError for ``name`` (or an item ``name[i]``) with a one-line message."""
    exc = excinfo.value
    assert isinstance(exc, ParameterError), f"{type(exc).__name__}: {exc}"
    assert exc.name == name or exc.name.startswith(name + "[") or exc.name.startswith(name + "."), (exc.name, name)
    if exc.name != name and isinstance(value, (list, tuple, dict)):  # an item of the list is named
        assert exc.value in (list(value.values()) if isinstance(value, dict) else value), (exc.value, value)
        value = exc.value
    assert_names(str(exc), name, value)
