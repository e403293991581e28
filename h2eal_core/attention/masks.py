"""Boolean attention masks shared by decode, prefill and gate training.

A streaming head at query position ``q`` may attend key position ``k`` when the key is causal
(``k <= q``) and is either an attention sink (``k < sink``) or inside the local window
(``q - k < local``, so the window of ``local`` tokens includes the query's own token). Keys keep
their original positions (DuoAttention/LServe; no StreamingLLM re-rotation).
"""

from __future__ import annotations

import torch

from ..validation import check_nonnegative_int, check_positive_int


def streaming_mask(
    query_positions: torch.Tensor, key_positions: torch.Tensor, sink: int, local: int
) -> torch.Tensor:
    """``[len(query_positions), len(key_positions)]`` bool mask, True where attention is allowed."""
    check_nonnegative_int("sink", sink)
    check_positive_int("local", local)
    q = query_positions.reshape(-1, 1)
    k = key_positions.reshape(1, -1)
    causal = k <= q
    return causal & ((k < sink) | (q - k < local))


def causal_mask(query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
    """``[len(query_positions), len(key_positions)]`` bool mask of causal attention."""
    return key_positions.reshape(1, -1) <= query_positions.reshape(-1, 1)
