"""Exact-match scoring of generated answers, and binomial confidence intervals.

A generated answer is correct when **every** reference answer occurs in it as an exact whole-word
sequence after normalisation (lower case; every character that is not a letter or a digit becomes a
space). This is RULER's "string match all" criterion restricted to whole words, so ``"71432"``
matches ``" 71432."`` and ``"The pass key is 71432"`` but not ``"714320"`` or ``"7 1 4 3 2"``.
``mode="strict"`` additionally requires the generation to *start* with the (single) reference.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ..validation import check_choice, check_fraction

SCORING_MODES = ("contains", "strict")

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalize(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters and digits only)."""
    return _NON_WORD.sub(" ", text.lower()).split()


def _contains(words: list[str], answer: list[str]) -> bool:
    n = len(answer)
    return n > 0 and any(words[i : i + n] == answer for i in range(len(words) - n + 1))


def exact_match(prediction: str, answers: Sequence[str], mode: str = "contains") -> bool:
    """True when every reference in ``answers`` occurs in ``prediction`` as whole words.

    Args:
        prediction: the generated text.
        answers: reference answers (all required; a single-answer task passes one).
        mode: ``"contains"`` (default) or ``"strict"`` (the generation must start with the
            reference; only meaningful for single-answer tasks).
    """
    check_choice("mode", mode, SCORING_MODES)
    words = normalize(prediction)
    refs = [normalize(a) for a in answers]
    if not refs or any(not r for r in refs):
        return False
    if mode == "strict":
        return len(refs) == 1 and words[: len(refs[0])] == refs[0]
    return all(_contains(words, r) for r in refs)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``(nan, nan)`` when ``n == 0``)."""
    check_fraction("confidence", confidence)
    if n == 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must be in [0, n={n}]")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)
