"""Offline haystack text for the long-context tasks.

Two sources, both available on every machine without a download:

* ``"pydoc"`` (default): the English prose of CPython's own reference documentation, shipped with
  the interpreter as :mod:`pydoc_data.topics`. Code blocks, grammar snippets and headings are
  dropped; what remains is split into sentences and lightly filtered (mostly letters). The text
  depends on the Python version (it is the documentation of that version): :func:`haystack_digest`
  identifies it, and every task sample records the digest.
* ``"repeat"``: RULER/Landmark-Attention's standard filler ("The grass is green. The sky is blue.
  ..."), identical everywhere.

A haystack is a tuple of sentences; the task generators tokenize them once per tokenizer and fill a
context to an exact token length (:class:`TokenizedHaystack`).
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np

from ..validation import ParameterError, check_choice, check_nonnegative_int

HAYSTACKS = ("pydoc", "repeat")

#: RULER's "noise" haystack (also the classic passkey-retrieval filler of Landmark Attention).
REPEAT_FILLER = (
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
)

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _is_prose(sentence: str) -> bool:
    if not 25 <= len(sentence) <= 400:
        return False
    letters = sum(c.isalpha() or c == " " for c in sentence)
    return (
        sentence[0].isupper()
        and sentence[-1] in ".!?"
        and letters / len(sentence) >= 0.88
        and "::=" not in sentence
        and "()" not in sentence
    )


@functools.lru_cache(maxsize=None)
def haystack_sentences(source: str = "pydoc") -> tuple[str, ...]:
    """The sentences of haystack ``source`` (``"pydoc"`` or ``"repeat"``), in a fixed order."""
    check_choice("haystack", source, HAYSTACKS)
    if source == "repeat":
        return REPEAT_FILLER
    from pydoc_data import topics  # stdlib: the text of CPython's reference documentation

    sentences: list[str] = []
    for key in sorted(topics.topics):
        for block in re.split(r"\n\s*\n", topics.topics[key]):
            lines = block.split("\n")
            if any(line.startswith(" ") for line in lines):  # code, grammar, tables
                continue
            if any(line.strip() and set(line.strip()) <= set("*=-~^") for line in lines):  # headings
                continue
            paragraph = " ".join(line.strip() for line in lines)
            paragraph = re.sub(r"\s+", " ", paragraph).strip()
            sentences.extend(s for s in _SENTENCE_SPLIT.split(paragraph) if _is_prose(s))
    if len(sentences) < 100:  # a stripped-down Python without its documentation
        raise ParameterError(
            "haystack", source, "a source with enough prose", "this Python has no pydoc_data topics; use 'repeat'"
        )
    return tuple(sentences)


def haystack_digest(source: str = "pydoc") -> str:
    """Short SHA-256 of the haystack sentences: identifies the exact text a sample was built from."""
    h = hashlib.sha256("\n".join(haystack_sentences(source)).encode("utf-8"))
    return h.hexdigest()[:12]


class TokenizedHaystack:
    """A haystack tokenized sentence by sentence for one tokenizer (each sentence after a space).

    ``fill(n_tokens, rng)`` returns exactly ``n_tokens`` token ids made of consecutive sentences
    starting at a random sentence (wrapping around), plus the token offsets of the sentence
    boundaries inside the result, where needles can be inserted without cutting a sentence.
    """

    def __init__(self, tokenizer, source: str = "pydoc"):
        self.source = source
        self.digest = haystack_digest(source)
        sentences = haystack_sentences(source)
        self.sentence_ids: list[list[int]] = [
            list(tokenizer.encode(" " + s, add_special_tokens=False)) for s in sentences
        ]

    def fill(self, n_tokens: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        check_nonnegative_int("n_tokens", n_tokens)
        ids: list[int] = []
        boundaries = [0]
        i = int(rng.integers(len(self.sentence_ids)))
        while len(ids) < n_tokens:
            ids.extend(self.sentence_ids[i % len(self.sentence_ids)])
            boundaries.append(len(ids))
            i += 1
        ids = ids[:n_tokens]
        boundaries = [b for b in boundaries if b <= n_tokens]
        if boundaries[-1] != n_tokens:
            boundaries.append(n_tokens)
        return ids, boundaries


_CACHE: dict[tuple[int, str], tuple[object, TokenizedHaystack]] = {}


def tokenized_haystack(tokenizer, source: str = "pydoc") -> TokenizedHaystack:
    """A cached :class:`TokenizedHaystack` for ``tokenizer`` and ``source``."""
    check_choice("haystack", source, HAYSTACKS)
    key = (id(tokenizer), source)
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not tokenizer:
        hit = (tokenizer, TokenizedHaystack(tokenizer, source))
        _CACHE[key] = hit
    return hit[1]
