"""Gate training on a tiny random Llama: gradients, mixing semantics, schedule, checkpoints, resume."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from h2eal_core.attention import SparseAttentionConfig
from h2eal_core.attention.hf import apply_policy
from h2eal_core.identify import (
    GateContext,
    GateTrainer,
    GateTrainingConfig,
    gate_context,
    gated_attention,
    preset,
    read_gate_config,
    read_gates,
)
from h2eal_core.identify.training import _decoder
from h2eal_core.validation import ParameterError

TINY = dict(
    num_steps=6, context_length_min=220, context_length_max=300, context_lengths_num_intervals=3,
    num_passkeys=2, passkey_length=4, sink_size=8, recent_size=24, save_steps=2, seed=3,
)


def config(**kw):
    return GateTrainingConfig(**{**TINY, **kw})


def student_hidden(model, trainer_alpha, ids, full_branch, sink=8, recent=24):
    dec = _decoder(model)
    with gated_attention(model), torch.no_grad():
        teacher = GateContext(mode="teacher", record=True)
        with gate_context(teacher):
            dec(input_ids=ids)
        student = GateContext(
            mode="student", alpha=trainer_alpha, sink=sink, recent=recent, full_branch=full_branch,
            teacher_outputs=teacher.teacher_outputs,
        )
        with gate_context(student):
            return dec(input_ids=ids).last_hidden_state


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 49152, (1, 96), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("full_branch", ["teacher", "student"])
def test_alpha_one_is_the_full_model_and_zero_is_streaming(tiny_model_factory, ids, full_branch):
    model = tiny_model_factory()
    with torch.no_grad():
        reference = _decoder(model)(input_ids=ids).last_hidden_state
    ones = torch.ones(2, 2)
    torch.testing.assert_close(student_hidden(model, ones, ids, full_branch), reference, rtol=1e-5, atol=1e-5)
    # alpha = 0: every head streaming; checked against the attention package's own streaming policy
    cfg = SparseAttentionConfig(sink=8, local=24)
    with apply_policy(model, "streaming_llm", cfg), torch.no_grad():
        streaming = _decoder(model)(input_ids=ids).last_hidden_state
    assert model.config._attn_implementation == "sdpa", "implementations restored"
    torch.testing.assert_close(student_hidden(model, torch.zeros(2, 2), ids, "student"), streaming, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(streaming, reference, atol=1e-3)


def test_mixing_is_per_kv_head_shared_by_its_query_group():
    """The attention function's output, checked against an eager reference of both branches."""
    from types import SimpleNamespace

    from h2eal_core.attention.masks import causal_mask, streaming_mask
    from h2eal_core.identify.attention_fn import gated_attention_forward

    g = torch.Generator().manual_seed(0)
    T, Hq, Hkv, D, sink, recent = 40, 6, 2, 8, 3, 10
    q, k, v = (torch.randn(1, h, T, D, generator=g) for h in (Hq, Hkv, Hkv))
    pos = torch.arange(T)

    def eager(mask):
        kk, vv = k.repeat_interleave(3, 1), v.repeat_interleave(3, 1)
        s = (q @ kk.transpose(-1, -2)) * D**-0.5
        return s.masked_fill(~mask, float("-inf")).softmax(-1) @ vv  # [1, Hq, T, D]

    full, stream = eager(causal_mask(pos, pos)), eager(streaming_mask(pos, pos, sink, recent))
    alpha = torch.tensor([[0.25, 0.9], [1.0, 1.0]])
    module = SimpleNamespace(layer_idx=0)
    with gate_context(GateContext(mode="student", alpha=alpha, sink=sink, recent=recent, full_branch="student")):
        out, _ = gated_attention_forward(module, q, k, v, None, scaling=D**-0.5)
    a = torch.tensor([0.25] * 3 + [0.9] * 3).view(1, Hq, 1, 1)
    torch.testing.assert_close(out, (a * full + (1 - a) * stream).transpose(1, 2), rtol=1e-5, atol=1e-6)
    # without an active context the function is plain causal attention
    plain, _ = gated_attention_forward(module, q, k, v, None, scaling=D**-0.5)
    torch.testing.assert_close(plain, full.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_gradient_reaches_only_alpha(tokenizer, tiny_model_factory):
    model = tiny_model_factory()
    trainer = GateTrainer(model, tokenizer, config())
    with torch.no_grad():
        trainer.alpha.fill_(0.5)
    sample = trainer.sample_at(0)
    loss, distill, reg = trainer.loss_on(torch.tensor([sample.input_ids]), torch.tensor(sample.loss_positions))
    loss.backward()
    assert distill.item() > 0
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    g = trainer.alpha.grad
    assert g is not None and g.shape == (2, 2)
    reg_only = torch.full_like(g, 0.05 / 4)  # d(0.05 * mean|alpha|)/d alpha
    assert not torch.allclose(g, reg_only), "the distillation term reaches the gates"


def test_learning_rate_schedule_is_duoattentions():
    c = GateTrainingConfig(num_steps=2000)
    duo = lambda s: min(1, max((s + 1) / (2000 // 5), 0.1), max((2000 - s) / (2000 // 5), 0.1))  # noqa: E731
    for s in [0, 1, 39, 40, 399, 400, 1000, 1600, 1601, 1999]:
        assert c.lr_factor(s) == pytest.approx(duo(s))
    assert c.context_lengths[0] == 1000 and c.context_lengths[-1] == 8192 and len(c.context_lengths) == 50


def test_training_clamps_and_resumes_without_starting_over(tokenizer, tiny_model_factory, tmp_path):
    model = tiny_model_factory()
    cfg = config(lr=0.3)  # large steps so that gates hit the bounds
    full = GateTrainer(model, tokenizer, cfg, checkpoint_dir=tmp_path / "a")
    alpha_full = full.train(progress=False)
    assert alpha_full.min() >= 0.0 and alpha_full.max() <= 1.0
    assert len(full.curve) == 6 and [r.step for r in full.curve] == list(range(1, 7))

    # an interrupted run: killed during step 4 (after the periodic checkpoint at step 2)
    interrupted = GateTrainer(model, tokenizer, cfg, checkpoint_dir=tmp_path / "b")
    original = interrupted.train_step

    def crash():
        if interrupted.step == 3:
            raise KeyboardInterrupt
        return original()

    interrupted.train_step = crash
    with pytest.raises(KeyboardInterrupt):
        interrupted.train(progress=False)
    resumed = GateTrainer(model, tokenizer, cfg, checkpoint_dir=tmp_path / "b")
    assert resumed.try_resume() and resumed.step == 2, "resumes from the last checkpoint, not from step 0"
    alpha_resumed = resumed.train(progress=False)
    np.testing.assert_array_equal(alpha_resumed, alpha_full)
    assert [r.loss for r in resumed.curve] == [r.loss for r in full.curve]

    # a time-sliced run (max_steps) checkpoints where it stops
    sliced = GateTrainer(model, tokenizer, cfg, checkpoint_dir=tmp_path / "c")
    sliced.train(max_steps=3, progress=False)
    again = GateTrainer(model, tokenizer, cfg, checkpoint_dir=tmp_path / "c")
    assert again.try_resume() and again.step == 3
    np.testing.assert_array_equal(again.train(progress=False), alpha_full)


def test_checkpoint_of_another_run_is_refused(tokenizer, tiny_model_factory, tmp_path):
    model = tiny_model_factory()
    GateTrainer(model, tokenizer, config(num_steps=2), checkpoint_dir=tmp_path).train(progress=False)
    with pytest.raises(ParameterError, match="checkpoint"):
        GateTrainer(model, tokenizer, config(num_steps=2, lr=0.01), checkpoint_dir=tmp_path).train(progress=False)


def test_outputs(tokenizer, tiny_model_factory, tmp_path):
    from h2eal_core.identify import train_gates

    model = tiny_model_factory()
    cfg = config(num_steps=2)
    alpha, trainer = train_gates(cfg, tmp_path / "out", model=model, tokenizer=tokenizer, progress=False)
    out = tmp_path / "out"
    np.testing.assert_array_equal(read_gates(out, model=model), np.clip(alpha, 0, 1))
    saved = read_gate_config(out)
    for field in dataclasses.fields(GateTrainingConfig):
        assert saved[field.name] == json.loads(json.dumps(getattr(cfg, field.name)))
    assert saved["steps_completed"] == 2 and saved["n_layers"] == 2
    import pandas as pd

    curve = pd.read_csv(out / "training_curve.csv")
    assert list(curve.step) == [1, 2] and {"distill_loss", "mean_alpha", "lr"} <= set(curve.columns)
    history = pd.read_csv(out / "gate_history.csv")
    assert sorted(history.step.unique()) == [0, 2] and len(history) == 2 * 4


def test_config_validation():
    with pytest.raises(ParameterError, match="full_branch"):
        GateTrainingConfig(full_branch="both")
    with pytest.raises(ParameterError, match="context_length_max"):
        GateTrainingConfig(context_length_min=2000, context_length_max=1000)
    with pytest.raises(ParameterError, match="preset"):
        preset("fast")
    assert preset("quick").num_steps < preset("default").num_steps


def test_command_line_overrides():
    from h2eal_core.identify.__main__ import _parse_override
    from h2eal_core.identify.training import GateTrainingConfig as C

    fields = {f.name: f for f in dataclasses.fields(C)}
    assert _parse_override("num_steps=100", fields) == ("num_steps", 100)
    assert _parse_override("full_branch=student", fields) == ("full_branch", "student")
    assert _parse_override("chat=false", fields) == ("chat", False)
    with pytest.raises(SystemExit, match="unknown"):
        _parse_override("steps=3", fields)
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        _parse_override("steps", fields)
