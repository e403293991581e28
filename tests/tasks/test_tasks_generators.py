"""Task generators: determinism, exact token lengths, needles really in the prompt, answers short."""

import numpy as np
import pytest

from h2eal_core.tasks import (
    DEPTH_RANGE,
    TASKS,
    exact_match,
    generate_sample,
    generate_samples,
    haystack_digest,
    haystack_sentences,
    multi_passkey_sample,
)
from h2eal_core.validation import ParameterError


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("length", [300, 1024, 2500])
def test_exact_length_in_tokens(tokenizer, task, length):
    s = generate_sample(task, tokenizer, length, seed=3)
    assert s.length == length == len(s.input_ids)
    assert 0 < s.tail_length < length
    assert all(isinstance(i, int) for i in s.input_ids)


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_from_the_seed(tokenizer, task):
    a = generate_samples(task, tokenizer, 600, n=3, seed=5)
    b = generate_samples(task, tokenizer, 600, n=3, seed=5)
    assert a == b
    assert len({s.input_ids for s in a}) == 3  # the samples of a set differ
    c = generate_samples(task, tokenizer, 600, n=3, seed=6)
    assert [s.input_ids for s in a] != [s.input_ids for s in c]
    # a sample does not depend on how many others are generated with it
    assert generate_samples(task, tokenizer, 600, n=1, seed=5, start=2)[0] == a[2]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("chat", [True, False])
def test_answers_are_in_the_context_and_the_question_in_the_tail(tokenizer, task, chat):
    for s in generate_samples(task, tokenizer, 800, n=4, seed=1, chat=chat):
        context = tokenizer.decode(s.input_ids[: s.length - s.tail_length])
        tail = tokenizer.decode(s.input_ids[s.length - s.tail_length :])
        for answer in s.answers:
            assert exact_match(context, [answer]), (task, answer)
            assert not exact_match(tail, [answer]), "the tail must not give the answer away"
        assert s.question in tail
        assert all(DEPTH_RANGE[0] - 0.05 < d < DEPTH_RANGE[1] + 0.05 for d in s.needle_depths)
        assert list(s.needle_depths) == sorted(s.needle_depths)
        for (a, b), d in zip(s.needle_spans, s.needle_depths):
            assert a == round(d * s.length) and b > a
        needles = " ".join(tokenizer.decode(s.input_ids[a:b]) for a, b in s.needle_spans)
        assert exact_match(needles, list(s.answers)) or task == "variable_tracking"
        assert s.max_new_tokens <= 32, "answers stay short so decoding is cheap"
        if chat:
            assert "<|im_start|>assistant" in tail


def test_chat_template_is_used_by_default_and_refused_without_one(tokenizer):
    s = generate_sample("passkey", tokenizer, 400)
    assert tokenizer.decode(s.input_ids[:3]).startswith("<|im_start|>")

    class NoTemplate:
        chat_template = None

    with pytest.raises(ParameterError, match="chat"):
        generate_sample("passkey", NoTemplate(), 400, chat=True)


def test_errors(tokenizer):
    with pytest.raises(ParameterError, match="task"):
        generate_sample("passkeys", tokenizer, 400)
    with pytest.raises(ParameterError, match="length"):
        generate_sample("multikey_niah", tokenizer, 60)
    with pytest.raises(ParameterError, match="options"):
        generate_sample("passkey", tokenizer, 400, n_keys=3)
    with pytest.raises(ParameterError, match="haystack"):
        generate_sample("passkey", tokenizer, 400, haystack="books")


def test_task_options_change_the_needles(tokenizer):
    s = generate_sample("multikey_niah", tokenizer, 900, n_keys=7)
    assert len(s.needle_depths) == 7
    v = generate_sample("variable_tracking", tokenizer, 900, n_hops=3)
    assert len(v.answers) == 3 and len(v.needle_depths) == 4
    m = generate_sample("multivalue_niah", tokenizer, 900, n_values=3)
    assert len(m.answers) == 3 == len(set(m.answers))


def test_haystacks():
    pydoc = haystack_sentences("pydoc")
    assert len(pydoc) > 500
    assert all(s[0].isupper() and s[-1] in ".!?" for s in pydoc)
    assert haystack_digest("pydoc") == haystack_digest("pydoc")
    assert haystack_sentences("repeat")[0] == "The grass is green."


def test_task_haystacks(tokenizer):
    s = generate_sample("passkey", tokenizer, 500)  # the canonical passkey filler by default
    assert "The grass is green." in tokenizer.decode(s.input_ids) and s.haystack == "repeat"
    p = generate_sample("passkey", tokenizer, 500, haystack="pydoc")
    assert "The grass is green." not in tokenizer.decode(p.input_ids) and p.haystack == "pydoc"
    assert generate_sample("qa", tokenizer, 500).haystack == "pydoc"


@pytest.mark.parametrize("chat", [True, False])
def test_multi_passkey_training_sample(tokenizer, chat):
    s = multi_passkey_sample(tokenizer, 1200, seed=4, n_passkeys=4, passkey_words=12, chat=chat)
    assert len(s.input_ids) == s.length == 1200
    assert len(s.answer_spans) == 4
    ids = np.array(s.input_ids)
    # the loss positions are exactly the positions that predict an answer token
    predicted = {p + 1 for p in s.loss_positions}
    answer_tokens = {t for a, b in s.answer_spans for t in range(a, b)}
    assert predicted == answer_tokens
    text = tokenizer.decode(s.input_ids)
    for a, b in s.answer_spans:
        passkey = tokenizer.decode(ids[a:b]).strip()
        assert len(passkey.split()) == 12
        assert text.count(passkey) == 2, "each passkey once in the book and once as the answer"
    assert s.answer_spans[0][0] > 0.6 * s.length, "answers come after the book"
    assert s == multi_passkey_sample(tokenizer, 1200, seed=4, n_passkeys=4, passkey_words=12, chat=chat)
    with pytest.raises(ParameterError, match="length"):
        multi_passkey_sample(tokenizer, 300, seed=0, n_passkeys=10, passkey_words=32)
