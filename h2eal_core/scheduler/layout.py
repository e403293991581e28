"""Write-time KV layout: the bank of every token is fixed when its KV is written.

A :class:`KVLayout` interleaves each KV head's cache over ``width`` consecutive banks (mod
``n_banks``), starting at the head's *origin* bank:

* ``granularity="page"``: page ``q`` (``page_size`` tokens) lies whole in bank
  ``(origin + q mod width) mod n_banks``; a selected page is read by one bank.
* ``granularity="token"``: token ``t`` lies in bank ``(origin + t mod width) mod n_banks``; a page's
  tokens lie in ``min(page_size, width)`` banks and are read in parallel (co-placement).

Origins: ``origin(l, h) = (floor(h * n_banks / n_kv_heads) + l * width) mod n_banks``: the heads of
one layer start at evenly spaced banks (the head-parallel grouping of SPEC 2.3, head ``h`` at bank
``h * n_banks / n_kv_heads``) and consecutive layers rotate by the width, so that narrow layouts
spread the stored bytes over the stack. This is a reconstruction: the paper's allocator is not
available. Streaming heads store a ring buffer of ``sink + local`` slots;
their slot index plays the role of the token index.

The layout places data, not computation: the scheduler (:mod:`.bank_bound`) decides which PE
computes on it, and a PE computing on another bank's data pays the NoC.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..validation import ParameterError, check_choice, check_positive_int

GRANULARITIES = ("page", "token")


@dataclasses.dataclass(frozen=True)
class KVLayout:
    """Interleave of each head's KV over ``width`` banks (``None``: all banks) by page or by token."""

    granularity: str = "token"
    width: int | None = None

    def __post_init__(self):
        check_choice("layout.granularity", self.granularity, GRANULARITIES)
        if self.width is not None:
            check_positive_int("layout.width", self.width)

    def width_for(self, n_banks: int) -> int:
        if self.width is not None and self.width > n_banks:
            raise ParameterError("layout.width", self.width, f"at most n_banks = {n_banks}")
        return n_banks if self.width is None else int(self.width)

    def origin(self, layer: int, kv_head: int, n_kv_heads: int, n_banks: int) -> int:
        """First bank of head ``(layer, kv_head)``."""
        return int((kv_head * n_banks // n_kv_heads + layer * self.width_for(n_banks)) % n_banks)

    def banks_of_tokens(self, tokens: np.ndarray, page_size: int, origin: int, n_banks: int) -> np.ndarray:
        """Bank of each token (or ring slot) index in ``tokens``."""
        w = self.width_for(n_banks)
        unit = np.asarray(tokens, dtype=np.int64)
        if self.granularity == "page":
            unit = unit // check_positive_int("page_size", page_size)
        return (origin + unit % w) % n_banks

    @property
    def label(self) -> str:
        return f"{self.granularity}-interleaved over {'all' if self.width is None else self.width} banks"
