"""Long-context task generators (RULER-style) and exact-match scoring.

>>> from h2eal_core.tasks import generate_samples, exact_match
>>> samples = generate_samples("passkey", tokenizer, length=2048, n=20, seed=0)
"""

from .generators import (
    DEPTH_RANGE,
    TASK_DEFAULTS,
    TASK_HAYSTACK,
    TASKS,
    PasskeyTrainingSample,
    TaskSample,
    generate_sample,
    generate_samples,
    multi_passkey_sample,
    sample_seed,
)
from .haystack import HAYSTACKS, TokenizedHaystack, haystack_digest, haystack_sentences, tokenized_haystack
from .scoring import SCORING_MODES, exact_match, normalize, wilson_interval

__all__ = [
    "DEPTH_RANGE",
    "HAYSTACKS",
    "SCORING_MODES",
    "TASKS",
    "TASK_DEFAULTS",
    "TASK_HAYSTACK",
    "PasskeyTrainingSample",
    "TaskSample",
    "TokenizedHaystack",
    "exact_match",
    "generate_sample",
    "generate_samples",
    "haystack_digest",
    "haystack_sentences",
    "multi_passkey_sample",
    "normalize",
    "sample_seed",
    "tokenized_haystack",
    "wilson_interval",
]
