"""Schematic drawings of the HB accelerator (Figs. 3a and 6), generated from the hardware config.

Nothing here is a picture copied from the paper: the drawings are produced from
:class:`~h2eal_core.hardware.HBConfig` and the mapping, so they change with the YAML.
"""

from __future__ import annotations

import matplotlib.patches as mpatches
import numpy as np
import pandas as pd
import seaborn as sns


def draw_mesh(ax, banks: pd.DataFrame, *, color_by: str = "group", title: str = "", label_heads: bool = True):
    """The bank mesh as seen from above: one square per bank (row-major), coloured by ``color_by``.

    Banks with value -1 (no KV) are grey.
    """
    values = banks[color_by].to_numpy()
    groups = sorted(v for v in set(values.tolist()) if v >= 0)
    palette = sns.color_palette("husl", max(len(groups), 1))
    colors = {g: palette[i % len(palette)] for i, g in enumerate(groups)}
    rows, cols = int(banks["row"].max()) + 1, int(banks["col"].max()) + 1
    for _, b in banks.iterrows():
        c = colors.get(b[color_by], (0.85, 0.85, 0.85))
        ax.add_patch(mpatches.Rectangle((b["col"], rows - 1 - b["row"]), 0.92, 0.92, facecolor=c, edgecolor="white"))
    if label_heads and "kv_heads" in banks:
        # label each group once, at its first bank
        first = banks[banks["group"] >= 0].groupby("group").first()
        for _, b in first.iterrows():
            ax.text(b["col"] + 0.46, rows - 1 - b["row"] + 0.46, f"h{b['kv_heads']}", ha="center", va="center", fontsize=6)
    ax.set_xlim(-0.2, cols + 0.1)
    ax.set_ylim(-0.2, rows + 0.1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize="medium")
    return ax


def draw_stack(ax, hw, *, n_memory_dies: int = 3):
    """Side view: memory dies hybrid-bonded on the logic die, the external tier beside it."""
    width = 10.0
    for i in range(n_memory_dies):
        y = 2.2 + i * 1.1
        ax.add_patch(mpatches.Rectangle((0, y), width, 0.9, facecolor="#9ecae1", edgecolor="black"))
        ax.text(width / 2, y + 0.45, f"DRAM die {i + 1}", ha="center", va="center", fontsize=8)
    for x in np.linspace(0.3, width - 0.3, 16):  # hybrid bonds
        ax.plot([x, x], [1.9, 2.2], color="#636363", linewidth=1.5)
    ax.add_patch(mpatches.Rectangle((0, 0.9), width, 1.0, facecolor="#fdae6b", edgecolor="black"))
    ax.text(width / 2, 1.4, f"logic die: {hw.n_banks} near-bank PEs,\n{hw.mesh_rows}x{hw.mesh_cols} mesh NoC, global controller", ha="center", va="center", fontsize=8)
    ax.text(width + 0.2, 2.05, f"hybrid bonding\n{hw.q('bank_bandwidth').value:g} GB/s per bank\n{hw.q('hb_dram_energy').value:g} pJ/bit", fontsize=7, va="center")
    ax.add_patch(mpatches.Rectangle((width + 0.3, 0.0), 2.4, 0.8, facecolor="#d9d9d9", edgecolor="black"))
    ax.text(width + 1.5, 0.4, "LPDDR5X\n(external)", ha="center", va="center", fontsize=7)
    ax.annotate("", xy=(width + 0.3, 0.5), xytext=(width - 0.5, 1.0), arrowprops=dict(arrowstyle="<->", color="black"))
    ax.set_xlim(-0.3, width + 3.2)
    ax.set_ylim(-0.2, 2.2 + n_memory_dies * 1.1 + 0.2)
    ax.axis("off")
    return ax


def draw_architecture(ax, hw, summary: pd.DataFrame):
    """Top view of the logic die: the PE mesh, the controller, the external tier, with numbers."""
    rows, cols = hw.mesh_rows, hw.mesh_cols
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(mpatches.Rectangle((c, rows - 1 - r), 0.8, 0.8, facecolor="#fdd0a2", edgecolor="#a63603", linewidth=0.5))
            if c < cols - 1:
                ax.plot([c + 0.8, c + 1.0], [rows - 0.6 - r, rows - 0.6 - r], color="#636363", linewidth=0.6)
            if r < rows - 1:
                ax.plot([c + 0.4, c + 0.4], [rows - 1 - r, rows - 1.2 - r], color="#636363", linewidth=0.6)
    ax.add_patch(mpatches.Rectangle((cols + 0.6, rows / 2 - 1.2), 3.4, 2.4, facecolor="#c7e9c0", edgecolor="#238b45"))
    ax.text(cols + 2.3, rows / 2, "global controller\ntop-k unit\nreduction, softmax\nSRAM buffers", ha="center", va="center", fontsize=7)
    ax.add_patch(mpatches.Rectangle((cols + 0.6, -0.4), 3.4, 1.4, facecolor="#d9d9d9", edgecolor="black"))
    ax.text(cols + 2.3, 0.3, "external LPDDR5X", ha="center", va="center", fontsize=7)
    ax.plot([cols - 0.2, cols + 0.6], [rows / 2, rows / 2], color="#238b45", linewidth=1.5)
    ax.plot([cols + 2.3, cols + 2.3], [1.0, rows / 2 - 1.2], color="black", linewidth=1.2)
    ax.text(cols / 2, -0.9, f"{rows} x {cols} mesh of near-bank PEs (one under each DRAM bank)", ha="center", fontsize=8)
    text = "\n".join(f"{r['item']}: {r['value']}" for _, r in summary.iterrows())
    ax.text(0, rows + 0.4, text, fontsize=6.5, va="bottom", family="monospace")
    ax.set_xlim(-0.5, cols + 4.5)
    ax.set_ylim(-1.3, rows + 0.4 + 0.38 * len(summary))
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
