"""Input validation shared by the decode, prefill and tiled functions (internal).

Every public attention function checks its tensors here so that a wrong shape, dtype or device
fails with a :class:`~h2eal_core.validation.ParameterError` that names the parameter, instead of a
broadcasting error deep inside torch.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..validation import ParameterError

#: Tensor dtypes the attention functions accept (computation runs in float32).
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclasses.dataclass(frozen=True)
class DecodeShape:
    """Sizes of one decode call: batch, query heads, KV heads, context length, head dim."""

    batch: int
    n_q_heads: int
    n_kv_heads: int
    context_len: int
    head_dim: int

    @property
    def group_size(self) -> int:
        return self.n_q_heads // self.n_kv_heads


def describe(t) -> str:
    """Short description of a tensor (or other value) for error messages."""
    if isinstance(t, torch.Tensor):
        return f"tensor of shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"
    return repr(t)


def check_tensor(name: str, t, ndim: int, layout: str) -> torch.Tensor:
    """A floating tensor of a supported dtype with ``ndim`` dimensions (``layout`` names them)."""
    if not isinstance(t, torch.Tensor):
        raise ParameterError(name, describe(t), f"a torch.Tensor of shape {layout}")
    if t.ndim != ndim:
        raise ParameterError(name, describe(t), f"a {ndim}-D tensor of shape {layout}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise ParameterError(name, describe(t), "dtype float32, bfloat16 or float16")
    return t


def check_qkv(q, k, v, *, q_layout: str = "[B, Hq, D]") -> DecodeShape:
    """Check decode inputs ``q [B, Hq, D]`` (or 4-D for prefill) and ``k, v [B, Hkv, T, D]``."""
    q_ndim = 3 if q_layout.count(",") == 2 else 4
    check_tensor("q", q, q_ndim, q_layout)
    check_tensor("k", k, 4, "[B, Hkv, T, D]")
    check_tensor("v", v, 4, "[B, Hkv, T, D]")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ParameterError("k", describe(k), f"the dtype of q ({q.dtype}) for k and v")
    if k.device != q.device or v.device != q.device:
        raise ParameterError("k", describe(k), f"tensors on the device of q ({q.device}) for k and v")
    if v.shape != k.shape:
        raise ParameterError("v", describe(v), f"the shape of k {tuple(k.shape)}")
    B, Hkv, T, D = k.shape
    if q.shape[0] != B:
        raise ParameterError("q", describe(q), f"batch size {B} (that of k)")
    if q.shape[-1] != D:
        raise ParameterError("q", describe(q), f"head dim {D} (that of k)")
    Hq = q.shape[1]
    if Hkv < 1 or Hq % Hkv:
        raise ParameterError("k", describe(k), f"a number of KV heads that divides the {Hq} query heads of q")
    if T < 1:
        raise ParameterError("k", describe(k), "a context of at least 1 token (T >= 1)")
    if D < 1:
        raise ParameterError("k", describe(k), "a head dim of at least 1")
    return DecodeShape(B, Hq, Hkv, T, D)


def check_scale(scale, head_dim: int) -> float:
    """The softmax scale: ``1/sqrt(head_dim)`` by default, else a positive finite number."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ParameterError("scale", scale, "a positive finite number or None (1/sqrt(head_dim))")
    return float(scale)


def check_token_mask(mask, shape: DecodeShape, name: str = "mask") -> torch.Tensor:
    """A bool mask ``[B|1, Hkv|Hq|1, T]``; returned as ``[B, H', T]`` with H' in {1, Hkv, Hq}."""
    allowed = f"a bool tensor of shape [B|1, Hkv|Hq|1, T] = [{shape.batch}, {shape.n_kv_heads} or {shape.n_q_heads}, {shape.context_len}]"
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.ndim != 3:
        raise ParameterError(name, describe(mask), allowed)
    b, h, t = mask.shape
    if b not in (1, shape.batch) or h not in (1, shape.n_kv_heads, shape.n_q_heads) or t != shape.context_len:
        raise ParameterError(name, describe(mask), allowed)
    return mask.expand(shape.batch, h, t)


def check_head_flags(name: str, flags, n_heads: int, device=None) -> torch.Tensor:
    """A bool vector of ``n_heads`` flags (torch, numpy or list), returned as a CPU bool tensor."""
    try:
        t = torch.as_tensor(flags)
    except (TypeError, ValueError, RuntimeError):
        raise ParameterError(name, describe(flags), f"a bool vector of length {n_heads}") from None
    if t.dtype != torch.bool or t.shape != (n_heads,):
        raise ParameterError(name, describe(flags), f"a bool vector of length {n_heads} (one flag per KV head)")
    return t.to("cpu")
