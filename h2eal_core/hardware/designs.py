"""The four designs of SPEC 2.3 as switches of one code path.

| design    | attention     | KV layout in a head's bank group      | page metadata                 | scheduling          |
|-----------|---------------|---------------------------------------|-------------------------------|---------------------|
| baseline  | dense         | page-granular round-robin (head-par.) | (none)                        | per head group      |
| sparse    | hybrid sparse | page-granular round-robin (head-par.) | a tensor, page-sized chunks   | per head group      |
| coplace   | hybrid sparse | token-interleaved (co-placed)         | each page's beside its scorer | per head group      |
| h2eal     | hybrid sparse | token-interleaved, placed by schedule | each page's beside its scorer | global LPT of tiles |

All four use the same constants, the same weights mapping and the same FC cost; only these
switches differ (:class:`Design`).
"""

from __future__ import annotations

import dataclasses

from ..validation import check_choice

KV_LAYOUTS = ("page", "token")
META_LAYOUTS = ("chunk", "distributed", "home")
SCOPES = ("group", "global")


@dataclasses.dataclass(frozen=True)
class Design:
    """Switches that define a design.

    Attributes:
        name: design name.
        sparse: hybrid sparse attention (streaming + retrieval heads) instead of dense attention.
        kv_layout: ``page``: each page (``page_size`` tokens) of a head lies whole in one bank of the
            head's group, pages round-robin over the group's banks, so a selected page is read by
            one bank ("read where it lies"); ``token``: the tokens of every page are interleaved
            over the banks, so every selected page is read by all banks in parallel.
        meta_layout: where a retrieval head's page metadata (min/max keys) lies, and so which PEs
            score it: ``chunk``: one metadata tensor allocated like any other data, in page-sized
            chunks (the metadata of ``page_size`` pages per chunk) round-robin over the group, each
            chunk scored by its bank's PE; ``distributed``: the metadata of every page lies beside
            the PE that scores it (round-robin by page, or tiled by the scheduler); ``home``: the
            whole tensor in the head's home bank, scored by one PE (a what-if, not one of the
            four designs).
        scope: ``group``: each head group's PEs compute only their own heads (SPEC 2.3 "per
            group"); ``global``: the load-balancing scheduler cuts every head's work into tiles and
            spreads them over all PEs (LPT), data placed where its tile is computed.
    """

    name: str
    sparse: bool
    kv_layout: str
    meta_layout: str
    scope: str

    def __post_init__(self):
        check_choice("kv_layout", self.kv_layout, KV_LAYOUTS)
        check_choice("meta_layout", self.meta_layout, META_LAYOUTS)
        check_choice("scope", self.scope, SCOPES)


DESIGNS: dict[str, Design] = {
    "baseline": Design("baseline", sparse=False, kv_layout="page", meta_layout="chunk", scope="group"),
    "sparse": Design("sparse", sparse=True, kv_layout="page", meta_layout="chunk", scope="group"),
    "coplace": Design("coplace", sparse=True, kv_layout="token", meta_layout="distributed", scope="group"),
    "h2eal": Design("h2eal", sparse=True, kv_layout="token", meta_layout="distributed", scope="global"),
}

DESIGN_NAMES = tuple(DESIGNS)

#: Display labels used in figures (the ablation reads left to right).
DESIGN_LABELS = {"baseline": "baseline HB", "sparse": "+sparse", "coplace": "+coplace", "h2eal": "H2EAL"}


def get_design(design: str | Design) -> Design:
    """A :class:`Design` from its name (or pass one through)."""
    if isinstance(design, Design):
        return design
    return DESIGNS[check_choice("design", design, DESIGN_NAMES)]
