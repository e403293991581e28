"""Long-context task generators (RULER-style), deterministic from a seed, exact token lengths.

Every sample is a prompt of exactly ``length`` tokens of the model's own tokenizer: an instruction,
a haystack (offline text, :mod:`.haystack`) with one or more *needles* inserted at sentence
boundaries, then the question. For instruct models the prompt goes through the tokenizer's chat
template, and the assistant turn is opened with a short answer prefix (RULER does the same) so the
answer is a few tokens and decoding is cheap. The tokens after the haystack (question, template,
answer prefix) are the sample's *tail*: an evaluation decodes them token by token under the sparse
policy (``decode_prompt_tail=sample.tail_length``) so the question itself is read sparsely.

Tasks (reconstructed after RULER, Hsieh et al. 2024, whose data needs a download; sizes are
named parameters, defaults chosen for a 135M-parameter model and answers of a few tokens):

========================  =================================================================
``passkey``               one 5-digit pass key in the repeated filler (Landmark Attention / Quest)
``multikey_niah``         ``n_keys`` key -> number needles, one key is asked (RULER niah_multikey_1)
``multivalue_niah``       one key with ``n_values`` numbers, all are asked (RULER niah_multivalue)
``variable_tracking``     a chain ``VAR A = v; VAR B = VAR A; ...`` of ``n_hops`` hops; the names
                          holding ``v`` are asked (RULER vt; the first hop, v -> A, is given in
                          the answer prefix, the answer is the rest of the chain: a 135M model
                          answers the RULER form at ~0%, this form at ~75% with full attention)
``qa``                    ``n_facts`` "<person> lives in <city>" facts; one person's city is
                          asked in a natural-language question (QA style; distractor facts)
========================  =================================================================

:func:`multi_passkey_sample` builds DuoAttention's gate-training sample (several long passkeys in
a haystack, a question/answer tail) with the positions whose hidden states enter the loss.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np

from ..validation import ParameterError, check_choice, check_nonnegative_int, check_number, check_positive_int
from .haystack import HAYSTACKS, tokenized_haystack

TASKS = ("passkey", "multikey_niah", "multivalue_niah", "variable_tracking", "qa")

#: Default task options (every one can be overridden through ``**options``).
TASK_DEFAULTS: dict[str, dict] = {
    "passkey": {"digits": 5},
    "multikey_niah": {"n_keys": 4, "digits": 5},
    "multivalue_niah": {"n_values": 2, "digits": 5},
    "variable_tracking": {"n_hops": 2, "digits": 5, "name_letters": 3},
    "qa": {"n_facts": 4},
}

#: Haystack of each task when none is given: the passkey task uses its canonical repeated filler
#: (Landmark Attention; on Python documentation a 135M model reads "pass key" as Python terms and
#: answers with prose), the others CPython's documentation prose.
TASK_HAYSTACK = {"passkey": "repeat", "multikey_niah": "pydoc", "multivalue_niah": "pydoc", "variable_tracking": "pydoc", "qa": "pydoc"}

#: Needles are inserted at relative depths drawn uniformly from this range (DuoAttention: 0.05-0.95).
DEPTH_RANGE = (0.05, 0.95)

_ADJECTIVES = (
    "amber", "brave", "calm", "clever", "curious", "dusty", "eager", "fancy", "gentle", "golden", "happy",
    "hidden", "icy", "jolly", "kind", "lively", "lucky", "mellow", "noble", "odd", "proud", "quiet",
    "rapid", "rusty", "silent", "silver", "sunny", "tidy", "vivid", "witty",
)
_NOUNS = (
    "anchor", "badge", "candle", "cloud", "comet", "crystal", "drum", "falcon", "feather", "garden",
    "harbor", "island", "jacket", "kettle", "lamp", "lantern", "meadow", "mirror", "orchard", "parrot",
    "pebble", "pillow", "river", "saddle", "tiger", "tower", "tulip", "violin", "wagon", "window",
)
_PEOPLE = (
    "Alice", "Bruno", "Carla", "David", "Elena", "Felix", "Grace", "Hugo", "Irene", "James", "Karen",
    "Leo", "Maria", "Nora", "Oscar", "Paula", "Quentin", "Rosa", "Simon", "Tina", "Victor", "Wendy",
    "Xavier", "Yusuf", "Zara",
)
_CITIES = (
    "Amsterdam", "Athens", "Berlin", "Boston", "Cairo", "Chicago", "Dublin", "Geneva", "Helsinki",
    "Istanbul", "Lisbon", "London", "Madrid", "Melbourne", "Montreal", "Moscow", "Nairobi", "Oslo",
    "Paris", "Prague", "Rome", "Seoul", "Stockholm", "Sydney", "Tokyo", "Toronto", "Vienna", "Warsaw",
)
_NATO = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo",
    "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
    "whiskey", "xray", "yankee", "zulu",
)
_ORDINALS = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
    "eighteenth", "nineteenth", "twentieth",
)

_CONTEXT_MARK = "@@H2EAL_CONTEXT@@"
_NIAH_INSTRUCTION = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize them. "
    "I will quiz you about the numbers afterwards."
)


@dataclasses.dataclass(frozen=True)
class TaskSample:
    """One prompt of a long-context task, ready to feed to a model.

    Attributes:
        task: task name (one of :data:`TASKS`).
        length: prompt length in tokens (``len(input_ids)``).
        seed: the seed this sample was generated from.
        index: index of the sample in its set.
        input_ids: the prompt token ids (chat template and answer prefix included).
        answers: reference answers; the generation must contain all of them (:func:`exact_match`).
        tail_length: prompt tokens after the haystack (question, template, answer prefix).
        needle_depths: relative token positions of the needles in the prompt, in text order.
        needle_spans: ``[start, end)`` token ranges of the needles in the prompt, in text order.
        max_new_tokens: decoding length that fits the answer (answer tokens + 3 per extra answer + 3).
        question: the question text.
        haystack: haystack source name; ``haystack_digest`` identifies its exact text.
    """

    task: str
    length: int
    seed: int
    index: int
    input_ids: tuple[int, ...]
    answers: tuple[str, ...]
    tail_length: int
    needle_depths: tuple[float, ...]
    needle_spans: tuple[tuple[int, int], ...]
    max_new_tokens: int
    question: str
    haystack: str
    haystack_digest: str

    @property
    def sample_id(self) -> str:
        """Stable identifier: task, length, seed and index."""
        return f"{self.task}-L{self.length}-s{self.seed}-i{self.index}"


@dataclasses.dataclass(frozen=True)
class _Spec:
    instruction: str
    needles: list[str]  # in text order
    question: str
    answer_prefix: str
    answers: tuple[str, ...]


def _number(rng: np.random.Generator, digits: int) -> str:
    return str(int(rng.integers(10 ** (digits - 1), 10**digits)))


def _distinct(rng: np.random.Generator, make, n: int) -> list:
    out: list = []
    for _ in range(1000 * n):
        v = make()
        if v not in out:
            out.append(v)
        if len(out) == n:
            return out
    raise ParameterError("n", n, "at most the number of distinct values the generator can make")


def _key(rng: np.random.Generator) -> str:
    return f"{_ADJECTIVES[rng.integers(len(_ADJECTIVES))]}-{_NOUNS[rng.integers(len(_NOUNS))]}"


def _spec(task: str, rng: np.random.Generator, opts: dict) -> _Spec:
    if task == "passkey":
        v = _number(rng, opts["digits"])
        return _Spec(
            "There is an important piece of information hidden inside a lot of irrelevant text. "
            "Find it and memorize it. I will quiz you about it.",
            [f"The pass key is {v}. Remember it. {v} is the pass key."],
            "What is the pass key? Answer with the number only.",
            "The pass key is",
            (v,),
        )
    if task == "multikey_niah":
        n = check_positive_int("n_keys", opts["n_keys"])
        keys = _distinct(rng, lambda: _key(rng), n)
        values = _distinct(rng, lambda: _number(rng, opts["digits"]), n)
        asked = int(rng.integers(n))
        needles = [f"One of the special magic numbers for {k} is: {v}." for k, v in zip(keys, values)]
        return _Spec(
            _NIAH_INSTRUCTION,
            needles,
            f"What is the special magic number for {keys[asked]} mentioned in the provided text?",
            f"The special magic number for {keys[asked]} mentioned in the provided text is",
            (values[asked],),
        )
    if task == "multivalue_niah":
        n = check_positive_int("n_values", opts["n_values"])
        key = _key(rng)
        values = _distinct(rng, lambda: _number(rng, opts["digits"]), n)
        return _Spec(
            _NIAH_INSTRUCTION,
            [f"One of the special magic numbers for {key} is: {v}." for v in values],
            f"What are all the special magic numbers for {key} mentioned in the provided text?",
            f"The special magic numbers for {key} mentioned in the provided text are",
            tuple(values),
        )
    if task == "variable_tracking":
        hops = check_positive_int("n_hops", opts["n_hops"])
        letters = check_positive_int("name_letters", opts["name_letters"])
        alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        names = _distinct(rng, lambda: "".join(rng.choice(alphabet, letters)), hops + 1)
        v = _number(rng, opts["digits"])
        needles = [f"VAR {names[0]} = {v}."] + [f"VAR {names[i + 1]} = VAR {names[i]}." for i in range(hops)]
        # The first hop (value -> first variable) is given in the answer prefix; the answer is the
        # rest of the chain, reached only by following the variable-to-variable assignments.
        return _Spec(
            "Memorize and track the chain of variable assignments hidden in the following text.",
            needles,
            f"Find all variables that are assigned the value {v} in the text above.",
            f"According to the chain of variable assignment in the text above, {hops + 1} variables are "
            f"assigned the value {v}, they are: VAR {names[0]}, VAR",
            tuple(names[1:]),
        )
    if task == "qa":
        n = check_positive_int("n_facts", opts["n_facts"])
        if n > min(len(_PEOPLE), len(_CITIES)):
            raise ParameterError("n_facts", n, f"at most {min(len(_PEOPLE), len(_CITIES))}")
        people = [_PEOPLE[i] for i in rng.permutation(len(_PEOPLE))[:n]]
        cities = [_CITIES[i] for i in rng.permutation(len(_CITIES))[:n]]
        asked = int(rng.integers(n))
        return _Spec(
            "Answer the question based on the following document. Only give the answer.",
            [f"{p} lives in the city of {c}." for p, c in zip(people, cities)],
            f"Question: In which city does {people[asked]} live?",
            f"{people[asked]} lives in the city of",
            (cities[asked],),
        )
    raise AssertionError(task)


def _uses_chat(tokenizer, chat: bool | None) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat is None:
        return has_template
    if chat and not has_template:
        raise ParameterError("chat", chat, "False for a tokenizer without a chat template")
    return bool(chat)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _bos(tokenizer) -> list[int]:
    """BOS id when the tokenizer adds one by itself (non-chat prompts)."""
    ids = list(tokenizer.encode("a", add_special_tokens=True))
    plain = list(tokenizer.encode("a", add_special_tokens=False))
    return ids[: len(ids) - len(plain)] if ids[len(ids) - len(plain) :] == plain else []


def _prompt_frame(tokenizer, instruction: str, question: str, answer_prefix: str, chat: bool):
    """Token ids before and after the haystack."""
    if chat:
        content = f"{instruction}\n\n{_CONTEXT_MARK}\n\n{question}"
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        text += answer_prefix
        before, after = text.split(_CONTEXT_MARK)
        return _encode(tokenizer, before), _encode(tokenizer, after)
    before = _bos(tokenizer) + _encode(tokenizer, f"{instruction}\n\n")
    return before, _encode(tokenizer, f"\n\n{question}\nAnswer: {answer_prefix}")


def _insert(hay: list[int], boundaries: list[int], needles: list[list[int]], depths: np.ndarray):
    """Insert needle token lists at the sentence boundaries nearest to ``depths`` (sorted)."""
    b = np.asarray(boundaries)
    cuts = [int(b[np.argmin(np.abs(b - d * len(hay)))]) for d in depths]
    out: list[int] = []
    offsets = []
    prev = 0
    for cut, needle in zip(cuts, needles):
        out.extend(hay[prev:cut])
        offsets.append(len(out))
        out.extend(needle)
        prev = cut
    out.extend(hay[prev:])
    return out, offsets


def sample_seed(seed: int, task: str, length: int, index: int) -> int:
    """The seed of sample ``index`` of a set: independent streams per (seed, task, length, index)."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(task.encode()), int(length), int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def generate_sample(
    task: str,
    tokenizer,
    length: int,
    seed: int = 0,
    index: int = 0,
    *,
    haystack: str | None = None,
    chat: bool | None = None,
    **options,
) -> TaskSample:
    """One sample of ``task`` with exactly ``length`` prompt tokens.

    Args:
        task: one of :data:`TASKS`.
        tokenizer: the model's tokenizer (a Hugging Face tokenizer).
        length: prompt length in tokens, template and question included.
        seed, index: the sample is a pure function of ``(task, tokenizer, length, seed, index,
            haystack, chat, options)``.
        haystack: ``"pydoc"`` or ``"repeat"`` (:mod:`.haystack`); ``None``: the task's default
            (:data:`TASK_HAYSTACK`).
        chat: use the chat template (default: when the tokenizer has one).
        **options: task sizes overriding :data:`TASK_DEFAULTS` (e.g. ``n_keys=8``).
    """
    check_choice("task", task, TASKS)
    check_positive_int("length", length)
    check_nonnegative_int("seed", seed)
    check_nonnegative_int("index", index)
    haystack = TASK_HAYSTACK[task] if haystack is None else check_choice("haystack", haystack, HAYSTACKS)
    unknown = set(options) - set(TASK_DEFAULTS[task])
    if unknown:
        raise ParameterError("options", sorted(unknown), f"options of task {task!r}: {sorted(TASK_DEFAULTS[task])}")
    opts = {**TASK_DEFAULTS[task], **options}
    if "digits" in opts:
        check_number("digits", opts["digits"], minimum=1, maximum=12, integer=True)
    use_chat = _uses_chat(tokenizer, chat)
    rng = np.random.default_rng(sample_seed(seed, task, length, index))
    spec = _spec(task, rng, opts)
    before, after = _prompt_frame(tokenizer, spec.instruction, spec.question, spec.answer_prefix, use_chat)
    needle_ids = [_encode(tokenizer, " " + n) for n in spec.needles]
    n_hay = length - len(before) - len(after) - sum(len(n) for n in needle_ids)
    if n_hay < 1:
        raise ParameterError(
            "length", length, f"at least {length - n_hay + 1} tokens for task {task!r} with this tokenizer"
        )
    hay = tokenized_haystack(tokenizer, haystack)
    hay_ids, boundaries = hay.fill(n_hay, rng)
    depths = np.sort(rng.uniform(*DEPTH_RANGE, size=len(needle_ids)))
    context, offsets = _insert(hay_ids, boundaries, needle_ids, depths)
    ids = before + context + after
    assert len(ids) == length, (len(ids), length)
    answer_tokens = len(_encode(tokenizer, " " + ", ".join(spec.answers))) + 3 * (len(spec.answers) - 1)
    return TaskSample(
        task=task,
        length=length,
        seed=int(seed),
        index=int(index),
        input_ids=tuple(int(i) for i in ids),
        answers=spec.answers,
        tail_length=len(after),
        needle_depths=tuple(round((len(before) + o) / length, 6) for o in offsets),
        needle_spans=tuple((len(before) + o, len(before) + o + len(n)) for o, n in zip(offsets, needle_ids)),
        max_new_tokens=answer_tokens + 3,
        question=spec.question,
        haystack=haystack,
        haystack_digest=hay.digest,
    )


def generate_samples(
    task: str, tokenizer, length: int, n: int, seed: int = 0, *, start: int = 0, **kwargs
) -> list[TaskSample]:
    """Samples ``start .. start+n-1`` of the set ``(task, length, seed)`` (see :func:`generate_sample`)."""
    check_positive_int("n", n)
    return [generate_sample(task, tokenizer, length, seed, i, **kwargs) for i in range(start, start + n)]


# --------------------------------------------------------------------------------------------------
# DuoAttention's multi-passkey training sample


@dataclasses.dataclass(frozen=True)
class PasskeyTrainingSample:
    """A gate-training sample: the prompt, its answers and the positions entering the loss.

    ``loss_positions`` are the positions whose final hidden states predict an answer (passkey)
    token, i.e. ``p`` such that ``input_ids[p + 1]`` belongs to an answer; ``answer_spans`` are the
    ``[start, end)`` token ranges of the answers in the question/answer tail.
    """

    input_ids: tuple[int, ...]
    loss_positions: tuple[int, ...]
    answer_spans: tuple[tuple[int, int], ...]
    needle_depths: tuple[float, ...]
    length: int
    seed: int


def multi_passkey_sample(
    tokenizer,
    length: int,
    seed: int,
    *,
    n_passkeys: int = 10,
    passkey_words: int = 32,
    depth_intervals: int = 1000,
    haystack: str = "pydoc",
    chat: bool | None = None,
) -> PasskeyTrainingSample:
    """DuoAttention's ``MultiplePasskeyRetrievalDataset`` item, rebuilt offline and exactly ``length`` tokens.

    ``n_passkeys`` needles "Remember this sequence of words, it's the <ordinal> passkey to the
    vault: <w1 ... wN>" (``passkey_words`` NATO-alphabet words) are inserted at sorted depths drawn
    without replacement from ``depth_intervals`` evenly spaced ratios in [0.05, 0.95] of a book
    (the haystack); the prompt then asks for each passkey in turn and the answer follows each
    question. With a chat template, the questions are user turns and the passkeys assistant turns.
    Differences from DuoAttention's code: offline haystack instead of BookSum, exact length instead
    of padding to a multiple of 16, "Remember" spelled correctly, chat turns for instruct models.
    """
    check_positive_int("length", length)
    check_nonnegative_int("seed", seed)
    check_number("n_passkeys", n_passkeys, minimum=1, maximum=len(_ORDINALS), integer=True)
    check_positive_int("passkey_words", passkey_words)
    check_number("depth_intervals", depth_intervals, minimum=n_passkeys, integer=True)
    use_chat = _uses_chat(tokenizer, chat)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(b"multi_passkey"), int(length)]))
    passkeys = [" ".join(_NATO[i] for i in rng.integers(len(_NATO), size=passkey_words)) for _ in range(n_passkeys)]
    grid = np.linspace(*DEPTH_RANGE, depth_intervals)
    depths = np.sort(grid[rng.permutation(depth_intervals)[:n_passkeys]])
    needles = [
        _encode(tokenizer, f"\n\nRemember this sequence of words, it's the {_ORDINALS[i]} passkey to the vault: {p}\n\n")
        for i, p in enumerate(passkeys)
    ]
    # question/answer tail, as token pieces, recording which pieces are answers
    pieces: list[tuple[list[int], bool]] = []
    if use_chat:
        marks = [f"@@H2EAL_ANSWER_{i}@@" for i in range(n_passkeys)]
        messages = [
            {
                "role": "user",
                "content": f"This is a very long story book: <book> {_CONTEXT_MARK} </book>.\n\n"
                f"Based on the content of the book, what is the {_ORDINALS[0]} passkey to the vault?",
            }
        ]
        for i in range(n_passkeys):
            messages.append({"role": "assistant", "content": marks[i]})
            if i + 1 < n_passkeys:
                messages.append(
                    {"role": "user", "content": f"Based on the content of the book, what is the {_ORDINALS[i + 1]} passkey to the vault?"}
                )
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        before_text, rest = text.split(_CONTEXT_MARK)
        before = _encode(tokenizer, before_text)
        for i in range(n_passkeys):
            head, rest = rest.split(marks[i])
            pieces += [(_encode(tokenizer, head), False), (_encode(tokenizer, passkeys[i]), True)]
        pieces.append((_encode(tokenizer, rest), False))
    else:
        before = _bos(tokenizer) + _encode(tokenizer, "This is a very long story book: <book>")
        pieces.append((_encode(tokenizer, " </book>.\n\n"), False))
        for i in range(n_passkeys):
            q = f"Based on the content of the book, what is the {_ORDINALS[i]} passkey to the vault?\nPasskey: "
            pieces += [(_encode(tokenizer, q), False), (_encode(tokenizer, passkeys[i]), True), (_encode(tokenizer, "\n\n"), False)]
    tail_len = sum(len(p) for p, _ in pieces)
    n_hay = length - len(before) - tail_len - sum(len(n) for n in needles)
    if n_hay < 1:
        raise ParameterError(
            "length",
            length,
            f"at least {length - n_hay + 1} tokens for {n_passkeys} passkeys of {passkey_words} words",
        )
    hay_ids, boundaries = tokenized_haystack(tokenizer, haystack).fill(n_hay, rng)
    context, offsets = _insert(hay_ids, boundaries, needles, depths)
    ids = before + context
    spans = []
    for piece, is_answer in pieces:
        if is_answer:
            spans.append((len(ids), len(ids) + len(piece)))
        ids.extend(piece)
    assert len(ids) == length, (len(ids), length)
    positions = tuple(p for start, end in spans for p in range(start - 1, end - 1))
    return PasskeyTrainingSample(
        input_ids=tuple(int(i) for i in ids),
        loss_positions=positions,
        answer_spans=tuple(spans),
        needle_depths=tuple(round((len(before) + o) / length, 6) for o in offsets),
        length=length,
        seed=int(seed),
    )


def task_names() -> Sequence[str]:
    """The task names, in a fixed order."""
    return TASKS
