"""The four designs of SPEC 2.3 as switches of one code path; each stage adds one contribution.

| design    | attention     | KV layout (fixed when written, :mod:`.layout`)                         | compute / scheduling                    |
|-----------|---------------|------------------------------------------------------------------------|-----------------------------------------|
| baseline  | dense         | by the baseline reading: ``home`` bank + neighbours (head-parallel)     | one PE per query head (or KV head); no  |
|           |               | or page round-robin over a KV-head group (``split_kv_groups``)         | tiling, no merge (split reading: merge) |
| sparse    | hybrid sparse | as the baseline; selected pages read where they lie                     | as the baseline                         |
| coplace   | hybrid sparse | tokens of every page interleaved over the head's bank group            | each bank's PE on its own tokens, merge |
| h2eal     | hybrid sparse | every head interleaved over all banks, evenly spaced start banks       | parallel tiled attention over all PEs   |

All four use the same constants, the same weights mapping and the same FC cost; only these
switches (and the hardware description's ``mapping`` policies) differ (:class:`Design`).
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
        kv_layout: ``page``: the baseline reading's layout (home bank and neighbours under the
            head-parallel readings; whole pages round-robin over a KV-head group under
            ``split_kv_groups``), selected pages read where they lie; ``token``: the tokens of
            every page interleaved over banks in chunks of ``mapping.kv_interleave_width`` tokens.
        meta_layout: where a retrieval head's page metadata (min/max keys) lies, and so which PEs
            score it: ``chunk``: one metadata tensor allocated like any other data, in page-sized
            chunks (the metadata of ``page_size`` pages per chunk) round-robin over the group, each
            chunk scored by its bank's PE; ``distributed``: the metadata of every page lies beside
            the PE that scores it (round-robin by page, or tiled by the scheduler); ``home``: the
            whole tensor in the head's home bank, scored by one PE (a what-if, not one of the
            four designs).
        scope: ``group``: each head is computed by the PEs of its own banks (its home PE, or its
            group's PEs); ``global``: every head is interleaved over all banks at write time and
            its partials computed by every PE (parallel tiled attention), merged by log-sum-exp.
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
