"""Fig. 1: maximum context length of LLMs and lengths of long-context datasets by year.

Reads ``data/context_trends.csv`` (public facts, one cited source per row) and fits the growth
rate of the frontier (log-linear fit of the running maximum), so the figure's message ("context
grows by ~10x every N years") is computed, not asserted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import data_dir
from ..validation import ParameterError, check_choice, check_list, check_number

KINDS = ("model", "dataset")
REQUIRED_COLUMNS = ("kind", "name", "organisation", "date", "length", "length_unit", "length_statistic", "source")


def load_context_trends(path: str | Path | None = None) -> pd.DataFrame:
    """Load and validate the context-trends table; adds a fractional ``year`` column."""
    path = Path(path) if path else data_dir() / "context_trends.csv"
    if not path.is_file():
        raise FileNotFoundError(f"context trends table not found: {path}")
    df = pd.read_csv(path, dtype={"date": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ParameterError(f"{path.name} columns", list(df.columns), "columns including " + ", ".join(missing))
    for i, row in df.iterrows():
        where = f"{path.name} row {i + 2} ({row['name']})"
        check_choice(f"{where}.kind", row["kind"], KINDS)
        check_choice(f"{where}.length_unit", row["length_unit"], ("tokens", "words"))
        if not isinstance(row["source"], str) or not row["source"].startswith("http"):
            raise ParameterError(f"{where}.source", row["source"], "a URL of the public source")
        check_number(f"{where}.length", int(row["length"]), minimum=1, integer=True)
    dates = pd.to_datetime(df["date"], format="%Y-%m", errors="coerce")
    if dates.isna().any():
        bad = df.loc[dates.isna(), "date"].iloc[0]
        raise ParameterError(f"{path.name}.date", bad, "a YYYY-MM month")
    df["year"] = dates.dt.year + (dates.dt.month - 1) / 12.0
    return df.sort_values(["kind", "year", "name"]).reset_index(drop=True)


def select_trends(df: pd.DataFrame, kinds=KINDS, since_year: float = 2017) -> pd.DataFrame:
    """Rows of the given kinds from ``since_year`` on."""
    kinds = check_list("kinds", kinds, lambda n, v: check_choice(n, v, KINDS))
    check_number("since_year", since_year, minimum=2000, maximum=2100)
    out = df[df["kind"].isin(kinds) & (df["year"] >= since_year)]
    if out.empty:
        raise ParameterError("since_year", since_year, f"a year before the newest entry ({df['year'].max():.0f})")
    return out.reset_index(drop=True)


def frontier_points(df: pd.DataFrame) -> pd.DataFrame:
    """Rows (token lengths only) that set a new maximum within their kind, in time order."""
    parts = []
    for _, group in df[df["length_unit"] == "tokens"].groupby("kind", sort=True):
        group = group.sort_values(["year", "length"])
        previous_max = group["length"].cummax().shift(1, fill_value=0)
        parts.append(group[group["length"] > previous_max])
    return pd.concat(parts).reset_index(drop=True) if parts else df.iloc[:0]


def frontier_growth(df: pd.DataFrame) -> pd.DataFrame:
    """Per kind: log-linear fit of the running maximum length (tokens only).

    Returns the growth factor per year and the years needed for 10x, from the points where the
    running maximum increased (the frontier).
    """
    rows = []
    for kind, frontier in frontier_points(df).groupby("kind", sort=True):
        if len(frontier) < 2:
            continue
        slope, intercept = np.polyfit(frontier["year"], np.log10(frontier["length"].astype(float)), 1)
        rows.append(
            {
                "kind": kind,
                "frontier_points": len(frontier),
                "first_year": float(frontier["year"].min()),
                "last_year": float(frontier["year"].max()),
                "max_length_tokens": int(frontier["length"].max()),
                "growth_per_year": float(10**slope),
                "years_per_10x": float(1 / slope) if slope > 0 else math.inf,
            }
        )
    return pd.DataFrame(rows)
