"""Head identification: DuoAttention's gate optimisation, on CPU for small models, CUDA when present.

Recipe (DuoAttention, Xiao et al. ICLR 2025; ``duo_attn/train.py``; SPEC section 1.3):

* one gate ``alpha[layer, kv_head]``, initial value 1, the only trainable tensor (model frozen);
  clamped to [0, 1] after every optimiser step;
* every attention layer outputs ``alpha * full + (1 - alpha) * streaming`` per KV head, the gate
  shared by the head's query group (:mod:`.attention_fn`, plugged in through
  ``transformers.AttentionInterface``); streaming = first ``sink_size`` + last ``recent_size``
  tokens;
* loss = mean over the answer positions of the squared error of the final hidden states (after
  the final norm, before the LM head; averaged over the hidden dimension) between the full model
  and the gated model, plus ``reg_weight * mean(|alpha|)``;
* AdamW (lr 0.02, no weight decay), batch 1; learning-rate factor
  ``min(1, max((s+1)/(N/5), 0.1), max((N-s)/(N/5), 0.1))`` (warm-up over the first 20% of the
  ``N`` steps, flat, linear decay over the last 20%, never below 0.1);
* data: DuoAttention's multi-passkey sample (:func:`h2eal_core.tasks.multi_passkey_sample`) at a
  context length drawn from ``context_lengths_num_intervals`` evenly spaced lengths in
  ``[context_length_min, context_length_max]``, a shuffled pass over the lengths per epoch, fresh
  passkeys and depths every step.

The "full" branch of the student: ``full_branch="teacher"`` (default) takes the teacher's
full-attention output of the same layer, computed from the teacher's hidden states under no-grad,
exactly as DuoAttention's code does (its two-way forward); ``"student"`` computes full attention on
the gated model's own activations, as the paper's formula reads. The teacher branch costs one
attention pass less per layer and the gradient reaches alpha only through the streaming branch.

Every step is a pure function of ``(seed, step)``, so a run interrupted and resumed from its
checkpoint (saved every ``save_steps`` steps, atomically) ends with the same gates as an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path, write_json_atomic
from ..tasks.generators import multi_passkey_sample
from ..tasks.haystack import HAYSTACKS, haystack_digest
from ..validation import (
    ParameterError,
    check_choice,
    check_fraction,
    check_nonnegative_int,
    check_number,
    check_positive,
    check_positive_int,
)
from . import attention_fn
from .attention_fn import FULL_BRANCHES, GateContext, gate_context, gated_attention
from .gates import model_gate_shape, write_gates

logger = logging.getLogger(__name__)

CURVE_FILE = "training_curve.csv"
HISTORY_FILE = "gate_history.csv"
CHECKPOINT_FILE = "checkpoint.pt"


@dataclasses.dataclass(frozen=True)
class GateTrainingConfig:
    """Every argument of a gate-training run (written to ``config.json`` beside the gates).

    Defaults are DuoAttention's (``scripts/train.sh``, ``duo_attn/utils.py::parse_args``) except
    where a CPU budget forces otherwise: the profiles in ``notebooks/profiles.yaml`` and
    :data:`PRESETS` set fewer steps, shorter contexts and shorter passkeys, recorded here.
    """

    model: str = "smollm2-135m"
    num_steps: int = 2000
    lr: float = 0.02
    weight_decay: float = 0.0
    reg_weight: float = 0.05
    initial_value: float = 1.0
    sink_size: int = 128
    recent_size: int = 256
    context_length_min: int = 1000
    context_length_max: int = 8192
    context_lengths_num_intervals: int = 50
    depth_ratio_num_intervals: int = 1000
    num_passkeys: int = 10
    passkey_length: int = 32
    haystack: str = "pydoc"
    chat: bool | None = None
    full_branch: str = "teacher"
    warmup_fraction: float = 0.2
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.1
    save_steps: int = 50
    seed: int = 42
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self):
        check_positive_int("num_steps", self.num_steps)
        check_positive("lr", self.lr)
        check_number("weight_decay", self.weight_decay, minimum=0.0)
        check_number("reg_weight", self.reg_weight, minimum=0.0)
        check_fraction("initial_value", self.initial_value)
        check_nonnegative_int("sink_size", self.sink_size)
        check_positive_int("recent_size", self.recent_size)
        check_positive_int("context_length_min", self.context_length_min)
        check_positive_int("context_length_max", self.context_length_max)
        if self.context_length_max < self.context_length_min:
            raise ParameterError(
                "context_length_max", self.context_length_max, f">= context_length_min = {self.context_length_min}"
            )
        check_positive_int("context_lengths_num_intervals", self.context_lengths_num_intervals)
        check_positive_int("depth_ratio_num_intervals", self.depth_ratio_num_intervals)
        check_positive_int("num_passkeys", self.num_passkeys)
        check_positive_int("passkey_length", self.passkey_length)
        check_choice("haystack", self.haystack, HAYSTACKS)
        check_choice("full_branch", self.full_branch, FULL_BRANCHES)
        check_fraction("warmup_fraction", self.warmup_fraction)
        check_fraction("decay_fraction", self.decay_fraction)
        check_fraction("min_lr_ratio", self.min_lr_ratio)
        check_positive_int("save_steps", self.save_steps)
        check_nonnegative_int("seed", self.seed)
        if self.dtype is not None:
            check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> GateTrainingConfig:
        return dataclasses.replace(self, **changes)

    @property
    def context_lengths(self) -> list[int]:
        """The training context lengths (DuoAttention: ``linspace(min, max, intervals)`` as int)."""
        return [
            int(x)
            for x in np.linspace(self.context_length_min, self.context_length_max, self.context_lengths_num_intervals).astype(int)
        ]

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at optimiser step ``step`` (0-based)."""
        n = self.num_steps
        up = max(1, int(n * self.warmup_fraction)) if self.warmup_fraction > 0 else None
        down = max(1, int(n * self.decay_fraction)) if self.decay_fraction > 0 else None
        f = 1.0
        if up is not None:
            f = min(f, max((step + 1) / up, self.min_lr_ratio))
        if down is not None:
            f = min(f, max((n - step) / down, self.min_lr_ratio))
        return f


#: Named presets (profiles): a small model on 2 CPU cores cannot run DuoAttention's 2000 steps at
#: 1K-32K tokens (~4 GPU-hours on 8 A100s for 7B models), so the CPU presets keep the recipe and
#: shrink the data: contexts, passkey length and count, steps.
PRESETS: dict[str, dict] = {
    "quick": dict(
        num_steps=12, context_length_min=384, context_length_max=512, context_lengths_num_intervals=4,
        num_passkeys=2, passkey_length=8, sink_size=32, recent_size=64, save_steps=4,
    ),
    "default": dict(
        num_steps=250, context_length_min=768, context_length_max=1280, context_lengths_num_intervals=9,
        num_passkeys=4, passkey_length=12, save_steps=10,
    ),
    # qwen2.5-coder-0.5b on 2 CPU cores: the default preset's contexts and passkeys with fewer
    # steps as SmolLM2 (measured ~8 s per step on 2 quiet cores, so 250 steps take about 35-50 min).
    "cpu-0.5b": dict(
        num_steps=250, context_length_min=768, context_length_max=1280, context_lengths_num_intervals=9,
        num_passkeys=4, passkey_length=12, save_steps=5,
    ),
    "paper": dict(context_length_min=1000, context_length_max=8192),
    # DuoAttention's recipe on a CUDA GPU in bfloat16 (the paper preset, pinned to the device).
    "gpu": dict(context_length_min=1000, context_length_max=8192, device="cuda", dtype="bfloat16"),
}


def preset(name: str, **overrides) -> GateTrainingConfig:
    """The :class:`GateTrainingConfig` of preset ``name`` (``quick``, ``default``, ``cpu-0.5b``, ``paper``, ``gpu``)."""
    check_choice("preset", name, tuple(PRESETS))
    return GateTrainingConfig(**{**PRESETS[name], **overrides})


def _decoder(model):
    """The base transformer (final hidden states after the final norm, no LM head)."""
    if hasattr(model, "get_decoder"):
        dec = model.get_decoder()
        if dec is not None:
            return dec
    return getattr(model, "model", None) or model.base_model


@dataclasses.dataclass
class StepRecord:
    step: int
    context_length: int
    n_loss_positions: int
    distill_loss: float
    reg_loss: float
    loss: float
    lr: float
    mean_alpha: float
    min_alpha: float
    frac_alpha_above_half: float
    seconds: float


class GateTrainer:
    """Train the gates of ``model`` (frozen) with ``config``; checkpoints in ``checkpoint_dir``.

    Usage::

        trainer = GateTrainer(model, tokenizer, config, checkpoint_dir="build/identify/smollm2-135m")
        alpha = trainer.train()            # resumes from the checkpoint if there is one
        trainer.write_outputs("data/head_patterns/smollm2-135m")
    """

    def __init__(self, model, tokenizer, config: GateTrainingConfig, checkpoint_dir: str | os.PathLike | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.n_layers, self.n_kv_heads = model_gate_shape(model)
        self.device = next(model.parameters()).device
        for p in model.parameters():
            p.requires_grad_(False)
        self.alpha = torch.nn.Parameter(
            torch.full((self.n_layers, self.n_kv_heads), float(config.initial_value), dtype=torch.float32, device=self.device)
        )
        self.optimizer = torch.optim.AdamW([self.alpha], lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=lambda s: config.lr_factor(s))
        self.step = 0
        self.curve: list[StepRecord] = []
        self.history: list[tuple[int, np.ndarray]] = [(0, self.alpha_numpy())]
        self.max_position = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if self.max_position and config.context_length_max > self.max_position:
            logger.warning(
                "context_length_max=%d exceeds the model's max_position_embeddings=%d",
                config.context_length_max,
                self.max_position,
            )

    # ----------------------------------------------------------------------------------- data
    def context_length_at(self, step: int) -> int:
        """Context length of optimiser step ``step``: a seeded shuffle of the lengths per epoch."""
        lengths = self.config.context_lengths
        epoch, i = divmod(step, len(lengths))
        perm = np.random.default_rng(np.random.SeedSequence([self.config.seed, 7919, epoch])).permutation(len(lengths))
        return lengths[perm[i]]

    def sample_at(self, step: int):
        c = self.config
        return multi_passkey_sample(
            self.tokenizer,
            self.context_length_at(step),
            seed=int(np.random.SeedSequence([c.seed, step]).generate_state(1)[0]),
            n_passkeys=c.num_passkeys,
            passkey_words=c.passkey_length,
            depth_intervals=c.depth_ratio_num_intervals,
            haystack=c.haystack,
            chat=c.chat,
        )

    # ----------------------------------------------------------------------------------- step
    def alpha_numpy(self) -> np.ndarray:
        return self.alpha.detach().double().cpu().numpy().copy()

    def loss_on(self, input_ids: torch.Tensor, positions: torch.Tensor):
        """``(loss, distill, reg)`` of the gated model on one sample (gradients flow to alpha)."""
        c = self.config
        decoder = _decoder(self.model)
        with gated_attention(self.model):
            teacher_ctx = GateContext(mode="teacher", record=c.full_branch == "teacher")
            with torch.no_grad(), gate_context(teacher_ctx):
                target = decoder(input_ids=input_ids).last_hidden_state[0, positions].float()
            student_ctx = GateContext(
                mode="student",
                alpha=self.alpha,
                sink=c.sink_size,
                recent=c.recent_size,
                full_branch=c.full_branch,
                teacher_outputs=teacher_ctx.teacher_outputs,
            )
            with gate_context(student_ctx):
                pred = decoder(input_ids=input_ids).last_hidden_state[0, positions].float()
        distill = (pred - target).pow(2).mean(dim=-1).sum() / max(1, len(positions))
        reg = self.alpha.abs().mean()
        return distill + c.reg_weight * reg, distill, reg

    def train_step(self) -> StepRecord:
        t0 = time.perf_counter()
        sample = self.sample_at(self.step)
        ids = torch.tensor([sample.input_ids], device=self.device)
        pos = torch.tensor(sample.loss_positions, device=self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        loss, distill, reg = self.loss_on(ids, pos)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.alpha.clamp_(0.0, 1.0)
        self.step += 1
        a = self.alpha_numpy()
        rec = StepRecord(
            step=self.step,
            context_length=sample.length,
            n_loss_positions=len(sample.loss_positions),
            distill_loss=float(distill.detach()),
            reg_loss=float(reg.detach()),
            loss=float(loss.detach()),
            lr=float(lr),
            mean_alpha=float(a.mean()),
            min_alpha=float(a.min()),
            frac_alpha_above_half=float((a > 0.5).mean()),
            seconds=time.perf_counter() - t0,
        )
        self.curve.append(rec)
        return rec

    # ----------------------------------------------------------------------------------- checkpoint
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_FILE

    def _identity(self) -> dict:
        """What a checkpoint must match to be resumed (the config, the model's gate shape)."""
        return {"config": self.config.to_dict(), "shape": [self.n_layers, self.n_kv_heads]}

    def save_checkpoint(self) -> Path | None:
        path = self.checkpoint_path
        if path is None:
            return None
        state = {
            "identity": self._identity(),
            "step": self.step,
            "alpha": self.alpha.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "curve": [dataclasses.asdict(r) for r in self.curve],
            "history": [(s, a.tolist()) for s, a in self.history],
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        logger.info("checkpoint at step %d: %s", self.step, path)
        return path

    def try_resume(self) -> bool:
        """Load the checkpoint if one exists for the same run; True when resumed."""
        path = self.checkpoint_path
        if path is None or not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=False)
        if json.dumps(state["identity"], sort_keys=True) != json.dumps(self._identity(), sort_keys=True):
            raise ParameterError(
                "checkpoint_dir",
                str(self.checkpoint_dir),
                "a folder whose checkpoint was made with the same training config and model",
                "delete the checkpoint or choose another folder to start over",
            )
        with torch.no_grad():
            self.alpha.copy_(state["alpha"].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.curve = [StepRecord(**r) for r in state["curve"]]
        self.history = [(int(s), np.asarray(a, dtype=np.float64)) for s, a in state["history"]]
        logger.info("resumed from step %d (%s)", self.step, path)
        return True

    # ----------------------------------------------------------------------------------- loop
    def train(self, *, max_steps: int | None = None, resume: bool = True, progress: bool = True) -> np.ndarray:
        """Run (or continue) training; returns the gates ``[layers, kv_heads]``.

        Args:
            max_steps: stop after this many steps *in this call* (a checkpoint is written), for
                time-sliced runs; ``None`` runs to ``num_steps``.
            resume: continue from the checkpoint in ``checkpoint_dir`` if there is one.
            progress: show a tqdm progress bar.
        """
        from tqdm.auto import tqdm

        if resume:
            self.try_resume()
        c = self.config
        stop = c.num_steps if max_steps is None else min(c.num_steps, self.step + check_positive_int("max_steps", max_steps))
        bar = tqdm(total=c.num_steps, initial=self.step, disable=not progress, desc="gates", dynamic_ncols=True)
        try:
            while self.step < stop:
                rec = self.train_step()
                bar.update(1)
                bar.set_postfix(len=rec.context_length, distill=f"{rec.distill_loss:.4f}", mean_alpha=f"{rec.mean_alpha:.3f}")
                if self.step % c.save_steps == 0 or self.step == c.num_steps:
                    self.history.append((self.step, self.alpha_numpy()))
                    self.save_checkpoint()
            if self.step < c.num_steps and self.step % c.save_steps:
                self.save_checkpoint()  # a time slice ended between two periodic checkpoints
        finally:
            bar.close()
        return self.alpha_numpy()

    @property
    def finished(self) -> bool:
        return self.step >= self.config.num_steps

    # ----------------------------------------------------------------------------------- outputs
    def curve_frame(self):
        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(r) for r in self.curve])

    def history_frame(self):
        import pandas as pd

        rows = [
            {"step": s, "layer": layer, "kv_head": head, "alpha": float(a[layer, head])}
            for s, a in self.history
            for layer in range(a.shape[0])
            for head in range(a.shape[1])
        ]
        return pd.DataFrame(rows)

    def output_config(self, extra: dict | None = None) -> dict:
        """``config.json`` content: every training argument plus provenance."""
        import transformers

        c = self.config
        cfg = c.to_dict()
        cfg.update(
            {
                "format": "DuoAttention full_attention_heads.tsv (rows = layers, columns = KV heads)",
                "n_layers": self.n_layers,
                "n_kv_heads": self.n_kv_heads,
                "steps_completed": self.step,
                "context_lengths": c.context_lengths,
                "haystack_digest": haystack_digest(c.haystack),
                "loss_positions": "hidden states predicting the passkey (answer) tokens",
                "streaming_attn_implementation": "sdpa token-exact mask (h2eal_core.attention.masks.streaming_mask)",
                "attention_function": attention_fn.ATTN_NAME,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "training_seconds": round(sum(r.seconds for r in self.curve), 1),
                "final_distill_loss": self.curve[-1].distill_loss if self.curve else None,
            }
        )
        if extra:
            cfg.update(extra)
        return cfg

    def write_outputs(self, folder: str | os.PathLike, extra_config: dict | None = None) -> Path:
        """Write the gates TSV, ``config.json``, the training curve and the gate history."""
        from ..io import save_table

        folder = Path(folder)
        write_gates(self.alpha_numpy(), folder, self.output_config(extra_config))
        save_table(self.curve_frame(), Path(CURVE_FILE).stem, folder, float_format="%.8g")
        save_table(self.history_frame(), Path(HISTORY_FILE).stem, folder, float_format="%.8g")
        return folder


def train_gates(
    config: GateTrainingConfig,
    output_dir: str | os.PathLike,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    model=None,
    tokenizer=None,
    max_steps: int | None = None,
    progress: bool = True,
    extra_config: dict | None = None,
) -> tuple[np.ndarray, GateTrainer]:
    """Load the model (unless given), train (resuming), and write the outputs when finished.

    Returns ``(alpha, trainer)``; outputs are written to ``output_dir`` only once all
    ``num_steps`` steps are done (a time-sliced run leaves only its checkpoint, by default in
    ``build/identify/<output folder name>``).
    """
    if model is None:
        from ..models.loading import load_model

        dtype = getattr(torch, config.dtype) if config.dtype else None
        model, tokenizer = load_model(config.model, dtype=dtype, device=config.device)
    if tokenizer is None:
        raise ParameterError("tokenizer", None, "the model's tokenizer when a model object is given")
    if checkpoint_dir is None:  # outside the output folder, which is committed data
        from ..io import repo_root

        checkpoint_dir = repo_root() / "build" / "identify" / Path(output_dir).name
    trainer = GateTrainer(model, tokenizer, config, checkpoint_dir=checkpoint_dir)
    alpha = trainer.train(max_steps=max_steps, progress=progress)
    if trainer.finished:
        trainer.write_outputs(output_dir, extra_config)
    return alpha, trainer


def estimate_step_seconds(trainer: GateTrainer, steps: int = 1) -> float:
    """Mean wall time of the last ``steps`` recorded steps (nan when none)."""
    recent = trainer.curve[-steps:]
    return float(np.mean([r.seconds for r in recent])) if recent else math.nan
