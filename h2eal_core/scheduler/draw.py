"""Draw a schedule: one horizontal bar per PE, its tasks stacked in placement order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .lpt import Schedule


def plot_schedule(
    schedule: Schedule,
    ax,
    *,
    task_groups: Sequence[int] | np.ndarray | None = None,
    group_labels: Sequence[str] | None = None,
    palette: Sequence | None = None,
    max_pes: int | None = None,
    show_lower_bound: bool = True,
    unit: str = "",
    legend_kwargs: dict | None = None,
):
    """Stacked per-PE bars coloured by task group (e.g. head kind); returns ``ax``.

    ``task_groups[i]`` is the colour group of task ``i`` (default: one group). With more PEs than
    ``max_pes`` only the first ``max_pes`` are drawn.
    """
    import matplotlib.patches as mpatches
    import seaborn as sns

    groups = np.zeros(schedule.costs.size, dtype=int) if task_groups is None else np.asarray(task_groups, dtype=int)
    n_groups = int(groups.max(initial=0)) + 1
    colors = list(palette) if palette is not None else sns.color_palette("colorblind", max(n_groups, 3))
    n_pe = schedule.n_pe if max_pes is None else min(schedule.n_pe, max_pes)
    for pe in range(n_pe):
        left = 0.0
        for task in schedule.tasks_of(pe):
            width = schedule.costs[task]
            ax.barh(pe, width, left=left, color=colors[groups[task] % len(colors)], edgecolor="white", linewidth=0.3, height=0.85)
            left += width
    if show_lower_bound:
        ax.axvline(schedule.lower_bound, color="black", linestyle="--", linewidth=1)
    ax.set_ylim(n_pe - 0.5, -0.5)
    ax.set_ylabel("PE")
    ax.set_xlabel(f"load{f' ({unit})' if unit else ''}")
    if group_labels:
        handles = [mpatches.Patch(color=colors[i % len(colors)], label=label) for i, label in enumerate(group_labels)]
        if show_lower_bound:
            handles.append(mpatches.Patch(facecolor="none", edgecolor="black", linestyle="--", label="lower bound"))
        ax.legend(handles=handles, **({"loc": "lower right", "fontsize": "x-small"} | (legend_kwargs or {})))
    return ax
