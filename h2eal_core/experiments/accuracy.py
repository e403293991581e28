"""Table III: accuracy of full attention vs StreamingLLM, Quest, DuoAttention and H2EAL on long-context tasks.

The study runs every method on the same samples (:mod:`h2eal_core.tasks`), at the same lengths and
with one :class:`~h2eal_core.attention.config.SparseAttentionConfig` (sink, local window, Quest
page size and token budget), through the policies of :mod:`h2eal_core.attention.hf`:

==================  =============  ==============================================================
method              policy         heads
==================  =============  ==============================================================
``full``            full           every head dense
``streaming_llm``   streaming_llm  every head sink + local (``streaming_llm_local``: by default the
                                   window is widened to ``budget - sink`` so that a StreamingLLM
                                   head reads as many tokens as a Quest head, Quest's comparison)
``quest``           quest          every head Quest pages (``budget`` tokens)
``duo``             duo            identified retrieval heads dense, the others streaming
``h2eal``           h2eal          identified retrieval heads Quest, the others streaming
``h2eal_random``    h2eal          as ``h2eal`` with the same number of retrieval heads chosen at
                                   random (control: does identification matter?)
``oracle``          quest          every head reads the pages of an **exact** page ranking
                                   (:class:`~h2eal_core.attention.selectors.OraclePageSelector`,
                                   largest ``q.k`` per page) at the same budget and page count:
                                   not deployable (it reads every key), an upper bound on what any
                                   page scorer reaches, so ``oracle - quest`` is what Quest's
                                   min/max bound loses
==================  =============  ==============================================================

GQA page sets (``gqa``): ``per_query_head`` is the default, as Quest's reference code runs it (it
repeats the KV heads, so each query head selects its own pages and a KV head reads the union of
its g query heads' pages); ``group_sum`` (one page set per KV head) is the named variant the
first-generation Table III was measured with. The records carry each method's measured KV read
fraction, so the hardware model knows which reading it costs.

Evaluation protocol (SPEC section 3; DuoAttention/Quest's decode simulation): the context is
prefilled, then the last ``decode_tail`` prompt tokens (default 64: the question, the chat
template and the answer prefix, plus the end of the haystack; DuoAttention simulates 50) are fed
token by token **as decode steps with the policy active**, then the answer is generated greedily
under the policy. Samples of one length are evaluated in batches (``batch_tokens``). Two prefill
modes:

* ``prefill="dense"`` (default): the context is prefilled once with dense attention and its KV is
  loaded into each policy's cache (``Cache.update``), which keeps what the policy stores
  (streaming heads: sink + local; Quest: every token plus page metadata). This is what
  DuoAttention (one-shot prefill), Quest (dense prefill) and StreamingLLM (evict after the forward)
  do in their own evaluations, and it lets one prefill serve all six methods exactly.
* ``prefill="policy"``: :func:`~h2eal_core.attention.hf.generate_with_policy` per method, whose
  streaming heads are also sparse during prefill (chunked with ``prefill_chunk_size``).

Each (sample, method) result is appended to a JSONL cache as soon as it is known, so an
interrupted study resumes where it stopped; the cache file name carries a digest of everything the
results depend on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..attention.config import SparseAttentionConfig
from ..identify.gates import binarize, model_gate_shape, random_retrieval_mask, read_gates
from ..io import data_dir, repo_root, resolve_repo_path, write_text_atomic
from ..models.shape import attention_type_for
from ..tasks import HAYSTACKS, TASKS, exact_match, generate_sample, haystack_digest, wilson_interval
from ..validation import (
    ParameterError,
    check_choice,
    check_fraction,
    check_list,
    check_nonnegative_int,
    check_positive_int,
)

logger = logging.getLogger(__name__)

METHODS = ("full", "streaming_llm", "quest", "duo", "h2eal", "h2eal_random", "oracle")
METHOD_POLICY = {
    "full": "full",
    "streaming_llm": "streaming_llm",
    "quest": "quest",
    "duo": "duo",
    "h2eal": "h2eal",
    "h2eal_random": "h2eal",
    "oracle": "quest",
}
#: Page selector of each method's retrieval heads (:func:`~h2eal_core.attention.selectors.get_selector`);
#: methods not listed use Quest's bound.
METHOD_SELECTOR = {"oracle": "oracle"}
METHOD_LABEL = {
    "full": "Full attention",
    "streaming_llm": "StreamingLLM",
    "quest": "Quest",
    "duo": "DuoAttention",
    "h2eal": "H2EAL hybrid",
    "h2eal_random": "H2EAL, random heads",
    "oracle": "Oracle pages (analysis bound)",
}
PREFILL_MODES = ("dense", "policy")
CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class AccuracyStudyConfig:
    """Everything the accuracy study depends on (validated on construction).

    Attributes:
        model: ``"smollm2-135m"`` or a local Hugging Face model folder.
        gates_dir: folder with ``full_attention_heads.tsv`` for that model (identified here, or
            DuoAttention's published gates for the 7-8B models).
        tasks, lengths, n_samples, seed: the samples (every method sees the same ones).
        retrieval_ratio: share of retrieval heads (``None``: 0.5 for GQA/MQA, 0.25 for MHA).
        sink, local, page_size, budget, gqa, dense_layers: the sparse-attention configuration.
        streaming_llm_local: StreamingLLM's window (``None``: ``budget - sink``, equal reads).
        random_heads_seed: seed of the random retrieval heads of ``h2eal_random``.
        prefill, prefill_chunk_size: see the module docstring.
        decode_tail: prompt tokens decoded under the policy (``None``: each sample's own tail, the
            question and answer prefix; an int, like DuoAttention's 50, must cover every tail and
            lets samples with different tails share a batch).
        batch_tokens: samples of one length are batched up to this many tokens (memory bound).
        haystack, chat: task prompt options (``None``: each task's default haystack, the chat
            template when the tokenizer has one).
        dtype, device: model precision and device (``None``: float32 on CPU, bfloat16 on CUDA).
        allow_beyond_native: run prompt lengths beyond the model's native maximum
            (``config.max_position_embeddings``), which are refused by default. The check is on the
            prompt: the answer's few generated tokens may pass the maximum by ``max_new_tokens``.
    """

    model: str = "smollm2-135m"
    gates_dir: str = "data/head_patterns/smollm2-135m"
    tasks: tuple[str, ...] = ("passkey", "multikey_niah", "variable_tracking", "qa")
    lengths: tuple[int, ...] = (1024, 2048, 4096, 8192)
    n_samples: int = 20
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    retrieval_ratio: float | None = None
    sink: int = 64
    local: int = 256
    page_size: int = 16
    budget: int = 512
    gqa: str = "per_query_head"
    dense_layers: int = 0
    streaming_llm_local: int | None = None
    random_heads_seed: int = 0
    prefill: str = "dense"
    prefill_chunk_size: int | None = None
    decode_tail: int | None = 64
    batch_tokens: int = 32768
    haystack: str | None = None
    chat: bool | None = None
    dtype: str | None = None
    device: str | None = None
    allow_beyond_native: bool = False

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(check_list("tasks", self.tasks, lambda n, v: check_choice(n, v, TASKS))))
        object.__setattr__(self, "lengths", tuple(check_list("lengths", self.lengths, check_positive_int)))
        methods = tuple(check_list("methods", self.methods, lambda n, v: check_choice(n, v, METHODS)))
        if "full" not in methods:
            raise ParameterError("methods", list(methods), "a list that includes 'full' (the reference for the drop)")
        object.__setattr__(self, "methods", methods)
        check_positive_int("n_samples", self.n_samples)
        check_nonnegative_int("seed", self.seed)
        if self.retrieval_ratio is not None:
            check_fraction("retrieval_ratio", self.retrieval_ratio)
        self.attention_config()  # validates sink, local, page_size, budget, gqa, dense_layers
        if self.streaming_llm_local is not None:
            check_positive_int("streaming_llm_local", self.streaming_llm_local)
        elif self.budget <= self.sink:
            raise ParameterError("budget", self.budget, f"> sink = {self.sink} when streaming_llm_local is None")
        check_nonnegative_int("random_heads_seed", self.random_heads_seed)
        check_choice("prefill", self.prefill, PREFILL_MODES)
        if self.prefill_chunk_size is not None:
            check_positive_int("prefill_chunk_size", self.prefill_chunk_size)
        if self.decode_tail is not None:
            check_positive_int("decode_tail", self.decode_tail)
        if self.haystack is not None:
            check_choice("haystack", self.haystack, HAYSTACKS)
        check_positive_int("batch_tokens", self.batch_tokens)
        if self.dtype is not None:
            check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))

    def attention_config(self) -> SparseAttentionConfig:
        return SparseAttentionConfig(
            sink=self.sink, local=self.local, page_size=self.page_size, budget=self.budget, gqa=self.gqa,
            dense_layers=self.dense_layers,
        )

    def method_config(self, method: str) -> SparseAttentionConfig:
        """The configuration a method runs with (StreamingLLM's window may be widened)."""
        cfg = self.attention_config()
        if method == "streaming_llm":
            local = self.streaming_llm_local if self.streaming_llm_local is not None else self.budget - self.sink
            cfg = cfg.replace(local=local)
        return cfg

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tasks"], d["lengths"], d["methods"] = list(self.tasks), list(self.lengths), list(self.methods)
        return d


#: Notebook parameters whose value -1 means None (papermill parameters cannot be None).
_MINUS_ONE_IS_NONE = ("retrieval_ratio", "streaming_llm_local", "decode_tail", "prefill_chunk_size")


def study_config(**parameters) -> AccuracyStudyConfig:
    """An :class:`AccuracyStudyConfig` from notebook parameters (lists, ``-1`` for None; others ignored)."""
    fields = {f.name for f in dataclasses.fields(AccuracyStudyConfig)}
    kwargs = {}
    for name, value in parameters.items():
        if name not in fields:
            continue
        if name in _MINUS_ONE_IS_NONE and value == -1:
            value = None
        kwargs[name] = tuple(value) if isinstance(value, list) else value
    return AccuracyStudyConfig(**kwargs)


@dataclasses.dataclass(frozen=True)
class HeadSets:
    """The retrieval-head masks of a study: identified (binarised gates) and random."""

    identified: np.ndarray
    random: np.ndarray
    ratio: float
    gates: np.ndarray

    def for_method(self, method: str) -> np.ndarray | None:
        return {"duo": self.identified, "h2eal": self.identified, "h2eal_random": self.random}.get(method)

    def digest(self, method: str) -> str:
        """Digest of the retrieval heads a method uses ("-" for methods without head sets)."""
        mask = self.for_method(method)
        return "-" if mask is None else hashlib.sha256(np.ascontiguousarray(mask).tobytes()).hexdigest()[:16]

    @property
    def overlap(self) -> int:
        return int((self.identified & self.random).sum())


def head_sets(config: AccuracyStudyConfig, model) -> HeadSets:
    """Binarise the gates of ``config.gates_dir`` and draw the random control at the same ratio."""
    n_layers, n_kv = model_gate_shape(model)
    n_q = model.config.get_text_config().num_attention_heads if hasattr(model.config, "get_text_config") else model.config.num_attention_heads
    ratio = config.attention_config().replace(retrieval_ratio=config.retrieval_ratio).retrieval_ratio_for(
        attention_type_for(n_q, n_kv)
    )
    gates = read_gates(resolve_repo_path(config.gates_dir), shape=(n_layers, n_kv))
    identified = binarize(gates, ratio)
    random = random_retrieval_mask(n_layers, n_kv, ratio, seed=config.random_heads_seed)
    return HeadSets(identified=identified, random=random, ratio=ratio, gates=gates)


# ---------------------------------------------------------------------------------------------------
# per-sample evaluation


def _greedy_decode(model, cache, tail_ids, max_new_tokens: list[int], eos_ids: list[int]) -> list[list[int]]:
    """Feed the prompt tails ``[B, n]`` as decode steps, then generate greedily.

    Sample ``b`` keeps at most ``max_new_tokens[b]`` tokens and stops at its first end-of-sequence
    token; the batch runs until every sample is done (finished rows are fed their last token).
    """
    import torch

    from ..attention.hf import forward_last_logits

    logits = None
    for i in range(tail_ids.shape[1]):
        logits = forward_last_logits(model, tail_ids[:, i : i + 1], cache)
    B = tail_ids.shape[0]
    new: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max(max_new_tokens)):
        nxt = logits.argmax(dim=-1).tolist()
        for b in range(B):
            if not done[b]:
                new[b].append(int(nxt[b]))
                done[b] = nxt[b] in eos_ids or len(new[b]) >= max_new_tokens[b]
        if all(done):
            break
        feed = torch.tensor([[new[b][-1]] for b in range(B)], device=tail_ids.device)
        logits = forward_last_logits(model, feed, cache)
    return new


def _dense_prefix_kv(model, context_ids):
    """Dense prefill of the context; per-layer post-RoPE ``(keys, values)`` of every KV head."""
    from transformers import DynamicCache

    from ..attention.hf import forward_last_logits

    cache = DynamicCache()
    forward_last_logits(model, context_ids, cache)
    return [(layer.keys, layer.values) for layer in cache.layers]


def decode_tail_of(sample, config: AccuracyStudyConfig) -> int:
    """Prompt tokens a sample decodes under the policy: its own tail, or the fixed ``decode_tail``."""
    if config.decode_tail is None:
        return sample.tail_length
    if sample.tail_length > config.decode_tail:
        raise ParameterError(
            "decode_tail", config.decode_tail, f">= the prompt tail of every sample ({sample.sample_id}: {sample.tail_length})"
        )
    return config.decode_tail


@dataclasses.dataclass
class PrefilledBatch:
    """Samples of equal length and decode tail, tokenised, with their shared dense prefill."""

    samples: list
    ids: object  # [B, T] token ids
    length: int
    tail: int
    max_new: list[int]
    eos: list[int]
    prefix_kv: list | None  # per-layer post-RoPE (keys, values) of the context (prefill="dense")
    prefill_seconds: float


def prefill_batch(model, samples, config: AccuracyStudyConfig) -> PrefilledBatch:
    """Tokenise a batch and (``prefill="dense"``) prefill its context once for every method."""
    import torch

    from ..attention.hf import check_context_length, eos_token_ids

    device = next(model.parameters()).device
    T = samples[0].length
    tail = decode_tail_of(samples[0], config)
    if any(s.length != T or decode_tail_of(s, config) != tail for s in samples):
        raise ParameterError("samples", [s.sample_id for s in samples], "samples of equal length and decode tail")
    check_context_length(model, T, config.allow_beyond_native, name="lengths", detail=f"sample {samples[0].sample_id}")
    ids = torch.tensor([s.input_ids for s in samples], device=device)
    prefix_kv, seconds = None, 0.0
    if config.prefill == "dense":
        t0 = time.perf_counter()
        with torch.inference_mode():
            prefix_kv = _dense_prefix_kv(model, ids[:, : T - tail])
        seconds = time.perf_counter() - t0
    return PrefilledBatch(
        list(samples), ids, T, tail, [s.max_new_tokens for s in samples], eos_token_ids(model), prefix_kv, seconds
    )


def run_method(model, tokenizer, batch: PrefilledBatch, config: AccuracyStudyConfig, heads: HeadSets, method: str) -> list[dict]:
    """One method on a prefilled batch: a record per sample (``seconds`` excludes the shared prefill)."""
    import torch

    from ..attention.hf import apply_policy, generate_with_policy

    samples, ids, T, tail, max_new, eos = batch.samples, batch.ids, batch.length, batch.tail, batch.max_new, batch.eos
    policy, cfg, mask = METHOD_POLICY[method], config.method_config(method), heads.for_method(method)
    selector = METHOD_SELECTOR.get(method)
    t0 = time.perf_counter()
    with torch.inference_mode():
        if config.prefill == "dense":
            with apply_policy(model, policy, cfg, mask, selector=selector) as handle:
                cache = handle.new_cache()
                for layer, (k, v) in enumerate(batch.prefix_kv):
                    cache.update(k, v, layer)
                new = _greedy_decode(model, cache, ids[:, T - tail :], max_new, eos)
                stats = handle.stats()
        else:
            result = generate_with_policy(
                model, ids, policy, cfg, mask, max_new_tokens=max(max_new),
                prefill_chunk_size=config.prefill_chunk_size, decode_prompt_tail=tail, selector=selector,
                allow_beyond_native=True,  # the prompt was checked in prefill_batch; answers may pass it by a few tokens
            )
            new, stats = [], result.stats
            for b, row in enumerate(result.new_tokens.tolist()):
                kept = []
                for t in row[: max_new[b]]:
                    kept.append(int(t))
                    if t in eos:
                        break
                new.append(kept)
    seconds = time.perf_counter() - t0
    records = []
    for b, sample in enumerate(samples):
        text = tokenizer.decode([t for t in new[b] if t not in eos], skip_special_tokens=True)
        records.append(
            {
                "sample_id": sample.sample_id,
                "task": sample.task,
                "length": sample.length,
                "index": sample.index,
                "method": method,
                "policy": policy,
                "heads": heads.digest(method),
                "correct": bool(exact_match(text, sample.answers)),
                "prediction": text,
                "answers": list(sample.answers),
                "new_tokens": new[b],
                "decode_tail": tail,
                "batch_size": len(samples),
                "decode_steps": int(stats["decode_steps"]),
                "kv_tokens_read": int(stats["kv_tokens_read"]),
                "kv_tokens_read_dense": int(stats["kv_tokens_read_dense"]),
                "read_fraction": float(stats["read_fraction"]),
                "stored_fraction": float(stats["stored_fraction"]),
                "retrieval_ratio": float(stats["retrieval_ratio"]),
                "cache": stats["cache"],
                "seconds": round(seconds / len(samples), 3),
            }
        )
    return records


def evaluate_batch(model, tokenizer, samples, config: AccuracyStudyConfig, heads: HeadSets, methods) -> list[dict]:
    """Run ``methods`` on a batch of samples of equal length and decode tail; a record per (sample, method).

    One dense prefill serves every method (:func:`prefill_batch`, then :func:`run_method` per
    method). KV read and stored fractions come from the policy's counters, summed over the batch
    (samples of equal length read the same fractions up to the answer lengths). The first method's
    ``seconds`` include the shared prefill.
    """
    batch = prefill_batch(model, samples, config)
    records = []
    for i, method in enumerate(methods):
        recs = run_method(model, tokenizer, batch, config, heads, method)
        if i == 0:
            for r in recs:
                r["seconds"] = round(r["seconds"] + batch.prefill_seconds / len(samples), 3)
        records += recs
    return records


def evaluate_sample(model, tokenizer, sample, config: AccuracyStudyConfig, heads: HeadSets, methods) -> list[dict]:
    """:func:`evaluate_batch` of one sample."""
    return evaluate_batch(model, tokenizer, [sample], config, heads, methods)


# ---------------------------------------------------------------------------------------------------
# the resumable study


def study_identity(config: AccuracyStudyConfig, heads: HeadSets, model) -> dict:
    """What every cached result depends on (the sample grid and the head set are in each record)."""
    import torch
    import transformers

    d = config.to_dict()
    for k in ("tasks", "lengths", "n_samples", "methods", "gates_dir"):
        d.pop(k)
    d.pop("random_heads_seed")  # the head sets are recorded per result (``heads``), so new gates
    d.pop("retrieval_ratio")  # recompute only the methods that use them
    d.pop("allow_beyond_native")  # a permission, not a knob: refused lengths are never measured
    p = next(model.parameters())
    d.update(
        cache_version=CACHE_VERSION, param_dtype=str(p.dtype), device_type=p.device.type,
        torch=torch.__version__, transformers=transformers.__version__,
        # the samples' text: the pydoc haystack is the running Python's own documentation
        haystack_digests={source: haystack_digest(source) for source in HAYSTACKS},
    )
    return d


class ResultCache:
    """Append-only JSONL of per-(sample, method) results; tolerant of a truncated last line."""

    def __init__(self, path: str | os.PathLike, identity: dict, readonly: tuple[str | os.PathLike, ...] = ()):
        """``path``: the file new results are appended to; ``readonly``: files of earlier results
        (e.g. the committed measurements) that are reused, never written."""
        self.path = Path(path)
        self.identity = identity
        self.records: dict[tuple, dict] = {}
        for source in (*map(Path, readonly), self.path):
            if source.is_file():
                self._load(source)

    def _load(self, path: Path) -> None:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s: skipping unreadable line %d (interrupted write)", path, n + 1)
                continue
            if "identity" in rec:
                if rec["identity"] != self.identity:
                    raise ParameterError("cache file", str(path), "a cache made with the same study identity")
                continue
            self.records[self.key(rec)] = rec

    @staticmethod
    def key(rec: dict) -> tuple:
        return (rec["task"], int(rec["length"]), rec["sample_id"], rec["method"], rec["heads"])

    def has(self, sample, method: str, heads: str) -> bool:
        return (sample.task, sample.length, sample.sample_id, method, heads) in self.records

    def add(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.is_file() or self.path.stat().st_size == 0
        torn = False
        if not new_file:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"  # an interrupted write left half a line
        with open(self.path, "a", encoding="utf-8") as f:
            if new_file:
                f.write(json.dumps({"identity": self.identity}, sort_keys=True) + "\n")
            if torn:
                f.write("\n")
            for rec in records:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
                self.records[self.key(rec)] = rec
            f.flush()
            os.fsync(f.fileno())


def cache_path(cache_dir: str | os.PathLike, identity: dict, model_name: str) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    slug = Path(str(model_name)).name.lower().replace(" ", "_")
    return Path(cache_dir) / f"accuracy_{slug}_{digest}.jsonl"


def plan_batches(config: AccuracyStudyConfig, items) -> list[tuple[int, int, tuple, list]]:
    """The batches of a study's missing work, in the order the study runs them.

    ``items``: ``(task, length, index, decode_tail, missing_methods, payload)`` per sample. Samples
    of one length are taken in index blocks of ``max(1, batch_tokens // length)``; inside a block,
    samples of equal ``(task, decode_tail, missing_methods)`` form one batch (their payloads, in
    the order given). Batches are ordered by block, then length, then that key, so that an
    interrupted study has balanced cells. Returns ``(block_start, length, key, payloads)`` per
    batch. Shared by :func:`run_accuracy_study` and the Dask work units
    (:func:`~h2eal_core.experiments.accuracy_cluster.plan_units`).
    """
    batches = []
    for length in config.lengths:
        size = max(1, config.batch_tokens // length)
        for start in range(0, config.n_samples, size):
            groups: dict = {}
            for task, s_length, index, tail, methods, payload in items:
                if s_length == length and start <= index < start + size and methods:
                    groups.setdefault((task, tail, tuple(methods)), []).append(payload)
            batches += [(start, length, k, v) for k, v in sorted(groups.items(), key=lambda kv: kv[0])]
    batches.sort(key=lambda b: (b[0], b[1]))  # index block first, then length (stable inside)
    return batches


def run_accuracy_study(
    config: AccuracyStudyConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    records_dir: str | os.PathLike | None = None,
    export_records: bool = False,
    reuse_records: bool = True,
    model=None,
    tokenizer=None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run (or resume) the study; returns the per-(sample, method) records as a DataFrame.

    Args:
        config: the study.
        cache_dir: folder of the JSONL result cache (default ``build/accuracy_cache`` in the repo).
        records_dir: folder of earlier, read-only result files (the repository's committed
            measurements, ``data/accuracy_records``): a file whose study identity (configuration,
            torch and transformers versions, dtype, device) matches this run's is reused, so the
            default profile's hours of CPU time are not spent again; ``None`` measures everything.
        export_records: write this study's records (reused and new) to ``records_dir`` afterwards,
            atomically (how the committed measurements are refreshed).
        reuse_records: read ``records_dir``'s matching file (``False``: measure everything again).
        model, tokenizer: a loaded model (default: ``load_model(config.model)``).
    """
    import torch
    from tqdm.auto import tqdm

    if export_records and not records_dir:
        raise ParameterError("records_dir", records_dir, "a folder when export_records is set")
    if model is None:
        from ..models.loading import load_model

        dtype = getattr(torch, config.dtype) if config.dtype else None
        model, tokenizer = load_model(config.model, dtype=dtype, device=config.device)
    if tokenizer is None:
        raise ParameterError("tokenizer", None, "the model's tokenizer when a model object is given")
    heads = head_sets(config, model)
    identity = study_identity(config, heads, model)
    cache_dir = resolve_repo_path(cache_dir) if cache_dir is not None else repo_root() / "build" / "accuracy_cache"
    target = cache_path(cache_dir, identity, config.model)
    readonly = ()
    if records_dir and reuse_records:
        committed = resolve_repo_path(records_dir) / target.name
        readonly = (committed,) if committed.is_file() and committed.resolve() != target.resolve() else ()
    cache = ResultCache(target, identity, readonly=readonly)
    logger.info(
        "accuracy study: %d cached results in %s; %d retrieval heads (ratio %.2f), overlap with random %d",
        len(cache.records), cache.path, heads.identified.sum(), heads.ratio, heads.overlap,
    )
    # Work in chunks of samples (index blocks) over the whole grid, so that an interrupted study
    # has balanced cells; inside a chunk, samples of equal length and decode tail form batches.
    keys = []
    todo = []
    for length in config.lengths:
        for task in config.tasks:
            for i in range(config.n_samples):
                sample = generate_sample(task, tokenizer, length, config.seed, i, haystack=config.haystack, chat=config.chat)
                keys += [(task, length, sample.sample_id, m, heads.digest(m)) for m in config.methods]
                missing = tuple(m for m in config.methods if not cache.has(sample, m, heads.digest(m)))
                if missing:
                    todo.append((sample, missing))
    batches = plan_batches(config, [(s.task, s.length, s.index, decode_tail_of(s, config), m, s) for s, m in todo])
    bar = tqdm(total=len(todo), disable=not progress, desc="accuracy samples", dynamic_ncols=True)
    for _, length, (task, _tail, methods), samples in batches:
        cache.add(evaluate_batch(model, tokenizer, samples, config, heads, list(methods)))
        bar.update(len(samples))
        bar.set_postfix(task=task, L=length)
    bar.close()
    return study_records(cache, keys, heads, export_to=resolve_repo_path(records_dir) / target.name if export_records else None)


def study_records(cache: ResultCache, keys: list, heads: HeadSets, *, export_to: Path | None = None) -> pd.DataFrame:
    """The study's records (``keys`` in sorted order) as a frame, with ``cache_path`` and ``heads``
    in its attrs; with ``export_to``, also written there atomically (identity line first) as the
    committed records file. Shared by :func:`run_accuracy_study` and the Dask study."""
    records = [cache.records[k] for k in sorted(keys)]
    if export_to is not None:
        lines = [json.dumps({"identity": cache.identity}, sort_keys=True)] + [json.dumps(r, sort_keys=True) for r in records]
        exported = write_text_atomic(export_to, "\n".join(lines) + "\n")
        logger.info("exported %d records to %s", len(records), exported)
    df = pd.DataFrame(records)
    df = df[sorted(df.columns)]
    df.attrs.update(cache_path=str(cache.path), heads=heads)
    return df


# ---------------------------------------------------------------------------------------------------
# tables


def paper_accuracy_drop() -> float:
    """The paper's average accuracy drop (0.87%), read from ``data/paper_claims.yaml``."""
    import yaml

    claims = yaml.safe_load((data_dir() / "paper_claims.yaml").read_text(encoding="utf-8"))["claims"]
    return float(next(c for c in claims if c["id"] == "accuracy_drop")["value"])


def cell_table(records: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per task x length x method: n, correct, accuracy, Wilson interval, drop vs full, KV fractions."""
    rows = []
    for (task, length, method), g in records.groupby(["task", "length", "method"], sort=True):
        n, k = len(g), int(g["correct"].sum())
        lo, hi = wilson_interval(k, n, confidence)
        rows.append(
            {
                "task": task, "length": int(length), "method": method, "n": n, "correct": k, "accuracy": k / n,
                "ci_low": lo, "ci_high": hi, "kv_read_fraction": g["read_fraction"].mean(),
                "kv_stored_fraction": g["stored_fraction"].mean(),
            }
        )
    cells = pd.DataFrame(rows)
    full = cells[cells.method == "full"].set_index(["task", "length"])["accuracy"]
    cells["drop_vs_full"] = [full[(t, l)] - a for t, l, a in zip(cells.task, cells.length, cells.accuracy)]
    order = {m: i for i, m in enumerate(METHODS)}
    return cells.sort_values(["task", "length", "method"], key=lambda s: s.map(order) if s.name == "method" else s).reset_index(drop=True)


def summary_table(records: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Per method: mean accuracy over the task x length cells, drop vs full, KV fractions, with CIs.

    The mean is the macro average over cells (each cell weighs the same). Confidence intervals are
    percentile intervals of a paired bootstrap: samples are resampled within each cell with the
    same indices for every method, so the drop's interval accounts for the pairing.
    """
    methods = [m for m in METHODS if m in set(records.method)]
    groups = sorted(records.groupby(["task", "length"]).groups)
    # correctness matrix per cell: [n_samples, n_methods], samples aligned across methods
    mats = []
    for task, length in groups:
        g = records[(records.task == task) & (records.length == length)]
        piv = g.pivot_table(index="sample_id", columns="method", values="correct", aggfunc="first")
        mats.append(piv[methods].to_numpy(dtype=float))
    rng = np.random.default_rng(seed)
    boot = np.zeros((n_boot, len(methods)))
    for b in range(n_boot):
        boot[b] = np.mean([m[rng.integers(len(m), size=len(m))].mean(axis=0) for m in mats], axis=0)
    point = np.mean([m.mean(axis=0) for m in mats], axis=0)
    alpha = (1 - confidence) / 2
    full_i = methods.index("full")
    drops = boot[:, [full_i]] - boot
    paper = paper_accuracy_drop()
    rows = []
    for j, method in enumerate(methods):
        r = records[records.method == method]
        drop = point[full_i] - point[j]
        rows.append(
            {
                "method": method,
                "label": METHOD_LABEL[method],
                "policy": METHOD_POLICY[method],
                "retrieval_heads": {"duo": "identified", "h2eal": "identified", "h2eal_random": "random"}.get(method, "-"),
                "n_samples": len(r),
                "n_cells": len(groups),
                "mean_accuracy": point[j],
                "accuracy_ci_low": np.quantile(boot[:, j], alpha),
                "accuracy_ci_high": np.quantile(boot[:, j], 1 - alpha),
                "drop_vs_full_pp": 100 * drop,
                "drop_ci_low_pp": 100 * np.quantile(drops[:, j], alpha),
                "drop_ci_high_pp": 100 * np.quantile(drops[:, j], 1 - alpha),
                "relative_drop_pct": 100 * drop / point[full_i] if point[full_i] > 0 else math.nan,
                "kv_read_fraction": r["read_fraction"].mean(),
                "kv_stored_fraction": r["stored_fraction"].mean(),
                "paper_mean_drop_pct": paper if method == "h2eal" else math.nan,
            }
        )
    return pd.DataFrame(rows)


def accuracy_tables(records: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{"summary", "cells", "samples"}`` tables of the study (what the notebook saves)."""
    samples = records.drop(columns=["new_tokens", "seconds"], errors="ignore").copy()  # wall times vary
    samples["answers"] = samples["answers"].map(lambda a: "|".join(a))
    return {"summary": summary_table(records), "cells": cell_table(records), "samples": samples}


def profile_parameters(profile: str) -> dict:
    """The ``tab3_accuracy`` notebook's parameters under ``profile``: its parameter-cell defaults,
    then the profile's values from ``notebooks/profiles.yaml`` (what the notebook runs with)."""
    import ast

    import papermill
    import yaml

    notebooks = repo_root() / "notebooks"
    inspected = papermill.inspect_notebook(str(notebooks / "tab3_accuracy.ipynb"))
    params = {name: ast.literal_eval(p["default"]) for name, p in inspected.items()}
    reg = yaml.safe_load((notebooks / "profiles.yaml").read_text(encoding="utf-8"))
    profiles = reg["notebooks"]["tab3_accuracy"]["parameters"]
    check_choice("profile", profile, tuple(profiles))
    params.update(profiles[profile] or {})
    return params


def main(argv: list[str] | None = None) -> int:
    """``python -m h2eal_core.experiments.accuracy --profile default``: fill the result cache in the background.

    The study is the one the ``tab3_accuracy`` notebook runs with that profile (the notebook's
    parameter defaults, then the profile's values from ``notebooks/profiles.yaml``); running the
    notebook afterwards reads the cache.
    """
    import argparse

    parser = argparse.ArgumentParser(description="Run (or resume) the Table III accuracy study.")
    parser.add_argument("--profile", default="default", help="profile of notebooks/profiles.yaml (tab3_accuracy)")
    parser.add_argument("--cache-dir", default=None, help="result cache folder (default: the notebook's cache_dir)")
    parser.add_argument(
        "--export", action="store_true",
        help="afterwards write the study's records to the notebook's records_dir (refreshes the committed measurements)",
    )
    parser.add_argument("--remeasure", action="store_true", help="do not reuse the committed records of records_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = profile_parameters(args.profile)
    config = study_config(**params)
    logger.info("study: %s", json.dumps(config.to_dict(), sort_keys=True))
    records = run_accuracy_study(
        config, cache_dir=args.cache_dir or params["cache_dir"], records_dir=params.get("records_dir") or None,
        export_records=args.export, reuse_records=not args.remeasure,
    )
    print(summary_table(records).to_string(index=False))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
