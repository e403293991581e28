"""Head identification (DuoAttention's gate optimisation), gate files, binarisation, attention mass.

* :mod:`.training`: :class:`GateTrainer`, :func:`train_gates`, :class:`GateTrainingConfig`, presets.
* :mod:`.gates`: DuoAttention TSV reader/writer, :func:`binarize`, random control masks, summaries.
* :mod:`.attention_fn`: the gated attention registered with ``transformers.AttentionInterface``.
* The measured attention mass per head (Fig. 4) is in :mod:`h2eal_core.experiments.head_sparsity`.
"""

from .attention_fn import ATTN_NAME, FULL_BRANCHES, GateContext, gate_context, gated_attention
from .gates import (
    CONFIG_FILE,
    GATES_FILE,
    binarize,
    format_gates,
    model_gate_shape,
    pattern_summary,
    random_retrieval_mask,
    read_gate_config,
    read_gates,
    retrieval_order,
    write_gates,
)
from .training import PRESETS, GateTrainer, GateTrainingConfig, preset, train_gates

__all__ = [
    "ATTN_NAME",
    "CONFIG_FILE",
    "FULL_BRANCHES",
    "GATES_FILE",
    "PRESETS",
    "GateContext",
    "GateTrainer",
    "GateTrainingConfig",
    "binarize",
    "format_gates",
    "gate_context",
    "gated_attention",
    "model_gate_shape",
    "pattern_summary",
    "preset",
    "random_retrieval_mask",
    "read_gate_config",
    "read_gates",
    "retrieval_order",
    "train_gates",
    "write_gates",
]
