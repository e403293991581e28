"""Table IV: H2EAL beside related algorithms and accelerators (features and cited headline numbers).

Reads ``data/related_designs.csv``: one row per design, yes/no feature columns, the headline
result in the design's own words with its baseline, and a source. Nothing here is measured; the
table is a cited comparison, validated so that every row has a source and every feature a yes/no.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import data_dir
from ..validation import ParameterError, check_choice, check_list

FEATURES = ("near_memory_compute", "static_sparsity", "dynamic_sparsity", "per_head_hybrid", "load_balancing")
CATEGORIES = ("algorithm", "system", "accelerator", "co-design")
REQUIRED = ("design", "category", "venue", "year", "memory", *FEATURES, "target", "modeled_here", "headline", "headline_baseline", "source", "confidence")


def load_related_designs(path: str | Path | None = None) -> pd.DataFrame:
    """Load and validate the related-designs table."""
    path = Path(path) if path else data_dir() / "related_designs.csv"
    if not path.is_file():
        raise FileNotFoundError(f"related designs table not found: {path}")
    df = pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ParameterError(f"{path.name} columns", list(df.columns), "columns including " + ", ".join(missing))
    for i, row in df.iterrows():
        where = f"{path.name} row {i + 2} ({row['design']})"
        check_choice(f"{where}.category", row["category"], CATEGORIES)
        for feature in FEATURES:
            check_choice(f"{where}.{feature}", row[feature], ("yes", "no"))
        check_choice(f"{where}.confidence", row["confidence"], ("high", "medium", "low"))
        if not str(row["source"]).startswith("http"):
            raise ParameterError(f"{where}.source", row["source"], "a URL of the public source")
    if df["design"].duplicated().any():
        raise ParameterError(f"{path.name}.design", df.loc[df["design"].duplicated(), "design"].iloc[0], "unique names")
    return df


def feature_matrix(df: pd.DataFrame, designs=None) -> pd.DataFrame:
    """Designs x features as 0/1 (plus ``hybrid_bonding`` derived from ``memory``), in table order."""
    known = list(df["design"])
    if designs:
        names = check_list("designs", designs, lambda n, v: check_choice(n, v, known))
        df = df.set_index("design").loc[names].reset_index()
    matrix = df.set_index("design")[list(FEATURES)].eq("yes").astype(int)
    # derived from the memory column, so it cannot disagree with it
    matrix.insert(0, "hybrid_bonding", df.set_index("design")["memory"].str.contains(r"hybrid-bond|\bHB\b", regex=True).astype(int))
    return matrix


def features_unique_to(df: pd.DataFrame, design: str = "H2EAL") -> int:
    """How many other designs have every feature that ``design`` has (0: its combination is unique)."""
    matrix = feature_matrix(df)
    check_choice("design", design, list(matrix.index))
    mine = matrix.loc[design]
    others = matrix.drop(index=design)
    return int((others[mine[mine == 1].index] == 1).all(axis=1).sum())
