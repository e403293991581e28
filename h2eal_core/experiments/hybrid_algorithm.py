"""Fig. 5: the hybrid algorithm on a real model.

(a) head identification: the gate-training curves (distillation loss, mean gate) and the gates
during training, read from the identification run's output folder (:mod:`h2eal_core.identify`);
(b) a streaming head: the sink + local mask (:func:`h2eal_core.attention.masks.streaming_mask`) and
the real attention of the most streaming-like head; (c) a retrieval head: its real decode attention
over the pages of a long-context sample with the pages Quest selects
(:func:`h2eal_core.attention.quest.quest_select_pages`, min/max page bound, GQA group sum).

Every decode query of the last ``n_queries`` prompt tokens (fed one by one after a dense prefill,
under the ``full`` policy, so the attention is the model's own) is observed in every layer; for
every KV head this gives the share of attention mass on the pages Quest would select (*recall*)
and on the sink + local window.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from ..attention.config import SparseAttentionConfig
from ..attention.masks import streaming_mask
from ..io import resolve_repo_path
from ..models.shape import attention_type_for
from ..identify.gates import binarize, read_gate_config, read_gates
from ..identify.training import CURVE_FILE, HISTORY_FILE
from ..tasks import TASKS, generate_sample
from ..validation import ParameterError, check_choice, check_nonnegative_int, check_positive_int

logger = logging.getLogger(__name__)


def training_curves(gates_dir: str = "data/head_patterns/smollm2-135m") -> dict:
    """``{"curve", "history", "config"}`` of an identification run (its CSVs and config.json)."""
    folder = resolve_repo_path(gates_dir)
    for name in (CURVE_FILE, HISTORY_FILE):
        if not (folder / name).is_file():
            raise ParameterError("gates_dir", str(folder), f"an identification output folder with {name}")
    return {
        "curve": pd.read_csv(folder / CURVE_FILE),
        "history": pd.read_csv(folder / HISTORY_FILE),
        "config": read_gate_config(folder),
    }


def streaming_mask_table(n: int = 48, sink: int = 4, local: int = 12) -> pd.DataFrame:
    """The streaming mask of ``n`` positions as a long table (query, key, allowed)."""
    check_positive_int("n", n)
    pos = torch.arange(n)
    m = streaming_mask(pos, pos, sink, local).numpy()
    q, k = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return pd.DataFrame({"query": q.ravel(), "key": k.ravel(), "allowed": m.ravel()})


def decode_attention_pages(
    model,
    input_ids,
    *,
    n_queries: int = 16,
    page_size: int = 16,
    budget: int = 256,
    sink: int = 64,
    local: int = 256,
    gqa: str = "group_sum",
) -> dict[str, np.ndarray]:
    """Observe the decode attention of the last ``n_queries`` prompt tokens in every layer.

    Returns arrays: ``page_mass [steps, L, Hkv, P]`` (attention summed per page, mean over the
    query group; pages of the longest step, shorter steps padded with 0), ``selected`` (same shape,
    Quest's pages incl. the current one), ``recall [steps, L, Hkv]`` (mass on selected pages) and
    ``window [steps, L, Hkv]`` (mass on sink + local).
    """
    from ..attention.hf import apply_policy, forward_last_logits
    from ..attention.quest import n_pages, quest_select_pages

    ids = torch.as_tensor(np.asarray(input_ids))[None].long()
    T = ids.shape[1]
    check_positive_int("n_queries", n_queries)
    if n_queries >= T:
        raise ParameterError("n_queries", n_queries, f"less than the prompt length {T}")
    n_layers = model.config.num_hidden_layers
    P = n_pages(T, page_size)
    rec: dict[str, list] = {"page_mass": [], "selected": [], "recall": [], "window": []}
    step_rows: dict[int, tuple] = {}

    def observe(layer, query, key, scale):
        if query.shape[2] != 1:
            return
        Hq, Hkv, n_keys = query.shape[1], key.shape[1], key.shape[-2]
        g = Hq // Hkv
        q = query[:, :, 0].float()
        probs = torch.softmax(scale * torch.einsum("bhgd,bhtd->bhgt", q.unflatten(1, (Hkv, g)), key.float()), dim=-1)
        probs = probs.mean(dim=2)[0]  # [Hkv, T]
        p_here = n_pages(n_keys, page_size)
        pad = torch.zeros(Hkv, p_here * page_size - n_keys)
        page_mass = torch.cat((probs, pad), dim=-1).unflatten(-1, (p_here, page_size)).sum(-1)
        sel = quest_select_pages(q, key.float(), page_size, budget, gqa).kv_head_page_mask()[0]  # [Hkv, p_here]
        pos = torch.arange(n_keys)
        win = streaming_mask(pos[-1:], pos, sink, local)[0]
        full_pm = torch.zeros(Hkv, P)
        full_pm[:, :p_here] = page_mass
        full_sel = torch.zeros(Hkv, P, dtype=torch.bool)
        full_sel[:, :p_here] = sel
        step_rows[layer] = (full_pm.numpy(), full_sel.numpy(), (page_mass * sel).sum(-1).numpy(), (probs * win).sum(-1).numpy())

    with apply_policy(model, "full", SparseAttentionConfig(sink=sink, local=local)) as handle, torch.inference_mode():
        handle.add_observer(observe)
        cache = handle.new_cache()
        forward_last_logits(model, ids[:, : T - n_queries], cache)
        for i in range(T - n_queries, T):
            step_rows.clear()
            forward_last_logits(model, ids[:, i : i + 1], cache)
            if len(step_rows) != n_layers:
                raise RuntimeError(f"observed {len(step_rows)} of {n_layers} layers")
            for j, name in enumerate(("page_mass", "selected", "recall", "window")):
                rec[name].append(np.stack([step_rows[layer][j] for layer in range(n_layers)]))
    return {k: np.stack(v) for k, v in rec.items()}


def hybrid_example(
    model: str = "smollm2-135m",
    gates_dir: str = "data/head_patterns/smollm2-135m",
    *,
    task: str = "passkey",
    length: int = 2048,
    seed: int = 0,
    index: int = 0,
    n_queries: int = 16,
    page_size: int = 16,
    budget: int = 256,
    sink: int = 64,
    local: int = 256,
    retrieval_ratio: float | None = None,
    model_obj=None,
    tokenizer=None,
) -> dict[str, pd.DataFrame]:
    """Panels (b) and (c) of Fig. 5 on one real sample, plus per-head recall and window shares.

    Returns ``{"heads": per (layer, kv_head): gate, role, recall, window share; "pages": page mass
    and selection per decode step for the example retrieval head (the identified retrieval head with
    the most attention on the needle) and the example streaming head (the lowest gate);
    "sample": the sample's facts}``.
    """
    check_choice("task", task, TASKS)
    for name, value in (("length", length), ("n_queries", n_queries), ("page_size", page_size), ("budget", budget), ("local", local)):
        check_positive_int(name, value)
    for name, value in (("seed", seed), ("index", index), ("sink", sink)):
        check_nonnegative_int(name, value)
    SparseAttentionConfig(sink=sink, local=local, page_size=page_size, budget=budget, retrieval_ratio=retrieval_ratio)
    if not resolve_repo_path(gates_dir).is_dir():  # before the model is loaded
        raise ParameterError("gates_dir", str(gates_dir), "an existing folder of identified gates (full_attention_heads.tsv)")
    if model_obj is None:
        from ..models.loading import load_model

        model_obj, tokenizer = load_model(model)
    cfg = model_obj.config
    n_q = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_q
    ratio = SparseAttentionConfig(retrieval_ratio=retrieval_ratio).retrieval_ratio_for(attention_type_for(n_q, n_kv))
    gates = read_gates(resolve_repo_path(gates_dir), model=model_obj)
    retrieval = binarize(gates, ratio)
    sample = generate_sample(task, tokenizer, length, seed, index)
    obs = decode_attention_pages(
        model_obj, sample.input_ids, n_queries=n_queries, page_size=page_size, budget=budget, sink=sink, local=local
    )
    L, H = gates.shape
    needle_pages = sorted({p for a, b in sample.needle_spans for p in range(a // page_size, (b - 1) // page_size + 1)})
    needle_mass = obs["page_mass"][:, :, :, needle_pages].sum(-1).mean(0)  # [L, Hkv]
    heads = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(L), H),
            "kv_head": np.tile(np.arange(H), L),
            "gate": gates.ravel(),
            "role": np.where(retrieval.ravel(), "retrieval", "streaming"),
            "quest_recall": obs["recall"].mean(0).ravel(),
            "window_share": obs["window"].mean(0).ravel(),
            "needle_page_mass": needle_mass.ravel(),
        }
    )
    r_idx = np.flatnonzero(retrieval.ravel())
    best_r = int(r_idx[np.argmax(needle_mass.ravel()[r_idx])])
    best_s = int(np.lexsort((-np.arange(L * H), gates.ravel()))[0])  # lowest gate (ties: later head)
    rows = []
    for role, flat in (("retrieval", best_r), ("streaming", best_s)):
        layer, head = divmod(flat, H)
        for step in range(obs["page_mass"].shape[0]):
            n_p = -(-(length - n_queries + step + 1) // page_size)
            for page in range(n_p):
                rows.append(
                    {
                        "example": role, "layer": layer, "kv_head": head, "step": step, "page": page,
                        "mass": float(obs["page_mass"][step, layer, head, page]),
                        "selected": bool(obs["selected"][step, layer, head, page]),
                        "needle": page in needle_pages,
                    }
                )
    facts = pd.DataFrame(
        [
            {
                "task": task, "length": length, "seed": seed, "index": index, "answers": "|".join(sample.answers),
                "needle_pages": " ".join(map(str, needle_pages)), "page_size": page_size, "budget": budget,
                "budget_pages": -(-budget // page_size), "sink": sink, "local": local, "n_queries": n_queries,
                "retrieval_ratio": ratio,
            }
        ]
    )
    return {"heads": heads, "pages": pd.DataFrame(rows), "sample": facts}
