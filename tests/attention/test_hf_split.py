"""The split of the Hugging Face integration (issue 10) and the native-context guard.

``h2eal_core.attention.hf`` became a facade over ``hf_cache``, ``hf_policy`` and
``hf_generation``: every name importable from it before the split must still be, bound to the
object the split modules use, and setting a name on the facade (benchmarks and tests patch it) must
reach the code that reads it. ``generate_with_policy`` refuses a context beyond the model's
``max_position_embeddings`` before any forward pass unless ``allow_beyond_native=True``.
"""

import ast
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

from h2eal_core.attention import SparseAttentionConfig, spread_retrieval_mask
from h2eal_core.attention import hf, hf_cache, hf_generation, hf_policy
from h2eal_core.attention.hf import apply_policy, check_context_length, generate_with_policy, native_context_length
from h2eal_core.validation import ParameterError

REPO = Path(__file__).resolve().parents[2]
PARTS = (hf_cache, hf_policy, hf_generation)

#: Top-level names of ``h2eal_core/attention/hf.py`` before the split (commit fa81f06): its
#: functions, classes, constants and the names it imported with ``from ... import``.
UNSPLIT_NAMES = (
    "ParameterError", "check_choice", "check_nonnegative_int", "check_positive_int", "describe", "head_kinds",
    "SparseAttentionConfig", "attend", "heads_index", "causal_mask", "streaming_mask", "sdpa", "streaming_prefill",
    "PageMetadata", "n_pages", "quest_page_metadata", "QuestBoundSelector", "get_selector", "GatherWorkspace",
    "attend_selection", "logger", "POLICIES", "DENSE_DECODE_KERNEL_CHOICES", "POLICIES_WITH_HEADS",
    "STREAMING_QUERY_CHUNK", "_ACTIVE", "check_retrieval_heads", "policy_head_kinds", "ModelDims", "LayerPlan",
    "_plan_heads", "_step_heads", "LayerStep", "_cat", "_take", "Cache", "CacheLayerMixin", "CAPACITY_GROWTH",
    "CAPACITY_QUANTUM", "_reserve", "PolicyCacheLayer", "PolicyCache", "PolicyHandle", "_head_index",
    "_paired_slices", "_refuse_padding", "_attention_modules", "_original_function", "_policy_attention",
    "_register", "apply_policy", "long_range_attention_mass", "GenerationResult", "cache_kwarg",
    "forward_last_logits", "chunked_prefill", "eos_token_ids", "generate_with_policy", "__all__",
)
UNSPLIT_ALL = (
    "POLICIES", "GenerationResult", "LayerStep", "PolicyCache", "PolicyCacheLayer", "PolicyHandle", "apply_policy",
    "chunked_prefill", "generate_with_policy", "long_range_attention_mass", "policy_head_kinds",
)


def top_level_names(source: str) -> set[str]:
    """Names a module's top level binds: defs, classes, assignments, ``from`` imports (also in ``try``)."""
    names: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                names.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.If):
                visit(node.body)

    visit(ast.parse(source).body)
    return names


def committed_hf_source(rev: str) -> str:
    """``h2eal_core/attention/hf.py`` at git revision ``rev`` (the test skips without git or that revision)."""
    try:
        return subprocess.run(
            ["git", "show", f"{rev}:h2eal_core/attention/hf.py"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git or h2eal_core/attention/hf.py at {rev} not available")


def test_the_literal_list_is_what_the_parser_finds_in_the_unsplit_module():
    """Guards the snapshot above: parsed from the pre-split file when git still has it."""
    assert top_level_names(committed_hf_source("fa81f06")) == set(UNSPLIT_NAMES)


def test_the_facade_keeps_every_name_of_the_unsplit_module_bound_to_the_code_in_use():
    missing = [n for n in UNSPLIT_NAMES if not hasattr(hf, n)]
    assert missing == []
    assert set(UNSPLIT_ALL) <= set(hf.__all__)
    assert all(hasattr(hf, n) for n in hf.__all__)
    for name in UNSPLIT_NAMES:
        if name in ("logger", "__all__"):
            continue
        owners = [p for p in PARTS if name in vars(p)]
        assert owners, f"{name} is defined in none of the split modules"
        assert all(vars(p)[name] is getattr(hf, name) for p in owners), name


def test_the_facade_keeps_every_name_of_the_committed_module():
    """Whatever ``hf.py`` is at HEAD (the unsplit module or this facade), no name it binds is lost."""
    source = committed_hf_source("HEAD")
    assert sorted(n for n in top_level_names(source) if not hasattr(hf, n)) == []


def test_split_modules_do_not_import_the_facade():
    for part in PARTS:
        source = Path(part.__file__).read_text()
        assert "from .hf import" not in source and "from . import hf\n" not in source


# ---- setting a name on the facade ----------------------------------------------------------------

L, HQ, HKV, D = 2, 4, 2, 8
CONFIG = SparseAttentionConfig(sink=4, local=16, page_size=8, budget=32)
HEADS = spread_retrieval_mask(L, HKV, 0.5)


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(
        seed=0, layers=L, vocab_size=97, hidden_size=HQ * D, intermediate_size=64,
        num_attention_heads=HQ, num_key_value_heads=HKV, max_position_embeddings=64, eos_token_id=None,
    )


def _ids(n, seed=1):
    return torch.randint(0, 97, (1, n), generator=torch.Generator().manual_seed(seed))


def _prefill_and_decode(model, cache, ids, n_prefill):
    with torch.inference_mode():
        hf.forward_last_logits(model, ids[:, :n_prefill], cache)
        for i in range(n_prefill, ids.shape[1]):
            hf.forward_last_logits(model, ids[:, i : i + 1], cache)


def test_a_constant_set_on_the_facade_reaches_the_cache(model, monkeypatch):
    ids = _ids(50)
    monkeypatch.setattr(hf, "CAPACITY_QUANTUM", 8)
    assert hf_cache.CAPACITY_QUANTUM == 8
    with apply_policy(model, "h2eal", CONFIG, HEADS) as handle:
        cache = handle.new_cache()
        _prefill_and_decode(model, cache, ids, 40)
    capacities = {layer._fk.shape[2] for layer in cache.layers}
    assert capacities == {56}  # 40 -> 40, then +25% rounded up to 8: 56 (256 without the patch)
    monkeypatch.undo()
    assert hf_cache.CAPACITY_QUANTUM == hf.CAPACITY_QUANTUM == 256


def test_a_kernel_set_on_the_facade_reaches_every_module_that_calls_it(model, monkeypatch):
    calls = []
    original = hf.quest_page_metadata

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(hf, "quest_page_metadata", counted)
    assert hf_cache.quest_page_metadata is counted and hf_policy.quest_page_metadata is counted
    ids = _ids(50)
    with apply_policy(model, "h2eal", CONFIG, HEADS) as handle:
        _prefill_and_decode(model, handle.new_cache(), ids, 40)  # the cache refreshes its page metadata
        n_cache = len(calls)
        _prefill_and_decode(model, DynamicCache(), ids, 40)  # simulated: the handle computes it
    assert n_cache > 0 and len(calls) > n_cache
    monkeypatch.undo()
    assert hf_cache.quest_page_metadata is original and hf_policy.quest_page_metadata is original


# ---- the native-context guard --------------------------------------------------------------------


def _forward_counter(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("prompt, new", [(60, 6), (65, 0), (64, 2)])
def test_generation_beyond_the_native_context_is_refused_before_any_forward(model, prompt, new):
    calls, hook = _forward_counter(model)
    try:
        with pytest.raises(ParameterError) as err:
            generate_with_policy(model, _ids(prompt), "h2eal", CONFIG, HEADS, max_new_tokens=new)
    finally:
        hook.remove()
    assert calls == []
    context = prompt + max(new - 1, 0)
    message = str(err.value)
    assert "\n" not in message
    assert err.value.name == "context length" and err.value.value == context
    assert "at most 64 tokens" in message and "max_position_embeddings" in message
    assert "allow_beyond_native=True" in message
    assert f"{prompt} prompt tokens + {max(new - 1, 0)} generated tokens fed back" in message


def test_the_native_context_itself_is_allowed(model):
    result = generate_with_policy(model, _ids(60), "h2eal", CONFIG, HEADS, max_new_tokens=5)  # 60 + 4 = 64 positions
    assert result.new_tokens.shape == (1, 5)


def test_allow_beyond_native_lets_it_through_unchanged(model, tiny_model_factory):
    """Past the limit the model runs as it would with a larger declared limit (same weights)."""
    ids = _ids(70)
    beyond = generate_with_policy(model, ids, "h2eal", CONFIG, HEADS, max_new_tokens=6, allow_beyond_native=True)
    roomy = tiny_model_factory(
        seed=0, layers=L, vocab_size=97, hidden_size=HQ * D, intermediate_size=64,
        num_attention_heads=HQ, num_key_value_heads=HKV, max_position_embeddings=4096, eos_token_id=None,
    )
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), roomy.state_dict().values()))
    reference = generate_with_policy(roomy, ids, "h2eal", CONFIG, HEADS, max_new_tokens=6)
    assert beyond.new_tokens.shape == (1, 6)
    assert torch.equal(beyond.sequences, reference.sequences)
    assert beyond.stats == reference.stats


def test_check_context_length_arguments():
    no_limit = SimpleNamespace(config=SimpleNamespace())
    assert native_context_length(no_limit) is None
    assert check_context_length(no_limit, 10**9) == 10**9  # nothing declared: nothing to check
    limited = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=128))
    with pytest.raises(ParameterError, match="allow_beyond_native"):
        check_context_length(limited, 10, allow_beyond_native="yes")
    with pytest.raises(ParameterError, match="'lengths' = 0"):
        check_context_length(limited, 0, name="lengths")
    with pytest.raises(ParameterError, match="'lengths' = 129 is invalid; allowed: at most 128 tokens"):
        check_context_length(limited, 129, name="lengths")


@settings(max_examples=60, deadline=None)
@given(limit=st.integers(1, 1 << 20), n=st.integers(1, 1 << 21), allow=st.booleans())
def test_check_context_length_refuses_exactly_the_contexts_beyond_the_limit(limit, n, allow):
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=limit))
    if n > limit and not allow:
        with pytest.raises(ParameterError):
            check_context_length(model, n, allow)
    else:
        assert check_context_length(model, n, allow) == n
