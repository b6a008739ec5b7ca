"""Prompt/answer examples: the built-in source and target tasks, and the user's own data.

The built-in model is pretrained on a *source domain* (reversing and sorting short letter
strings; one-step arithmetic such as ``12+3=15. #### 15``, one or two independent facts
per question) and never sees the *target* task: arithmetic of 3-4 numbers worked out step
by step (``7+5=12, 12-3=9. #### 9``), each step starting from the previous result. The
target builds on the memorized facts, so every fine-tuning method learns it quickly,
while the string tasks are what fine-tuning forgets. User data is Alpaca-style JSON/JSONL
(the format of the paper's MATH-10K), turned into prompts by one template.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lift_core.errors import LiftError


@dataclass(frozen=True)
class Example:
    """One supervised example: the model reads ``prompt`` and should write ``answer``."""

    prompt: str  # what the model is given
    answer: str  # the full target completion (worked steps and the final "#### x")


ANSWER_MARKER = "####"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Arithmetic facts of the source domain: left operand 0..29, right operand 0..9. The target
# keeps every intermediate result in this range, so each of its steps is a known fact.
FACT_LEFT_MAX = 29
FACT_RIGHT_MAX = 9
WORD_MIN_LEN, WORD_MAX_LEN = 3, 5
SOURCE_EVAL_SIZE = 150  # 50 reverse, 50 sort, 50 pairs of arithmetic facts
TARGET_EVAL_SIZE = 150
_SOURCE_EVAL_SEED = 1_000_003
_TARGET_EVAL_SEED = 2_000_003


# --- the source domain -------------------------------------------------------------------


def _word(rng: random.Random) -> str:
    length = rng.randint(WORD_MIN_LEN, WORD_MAX_LEN)
    return "".join(rng.choice(LETTERS) for _ in range(length))


def _question(text: str) -> str:
    return f"Q: {text}\nA: "


def reverse_example(word: str) -> Example:
    """``Q: rev abc\\nA: `` -> ``cba``."""
    return Example(_question(f"rev {word}"), word[::-1])


def sort_example(word: str) -> Example:
    """``Q: sort cab\\nA: `` -> ``abc``."""
    return Example(_question(f"sort {word}"), "".join(sorted(word)))


def facts_example(*facts: tuple[int, str, int]) -> Example:
    """Independent one-step facts in the target's notation, the last one as the answer.

    ``Q: 12+3\\nA: `` -> ``12+3=15. #### 15``; ``Q: 12+3, 4-2\\nA: `` ->
    ``12+3=15, 4-2=2. #### 2``. Unlike the target, no step uses an earlier result.
    """
    steps = [f"{a}{op}{b}={a + b if op == '+' else a - b}" for a, op, b in facts]
    question = ", ".join(f"{a}{op}{b}" for a, op, b in facts)
    last = steps[-1].split("=")[1]
    return Example(_question(question), f"{', '.join(steps)}. {ANSWER_MARKER} {last}")


def _all_facts() -> list[tuple[int, str, int]]:
    facts = []
    for left in range(FACT_LEFT_MAX + 1):
        for right in range(FACT_RIGHT_MAX + 1):
            facts.append((left, "+", right))
            if left >= right:  # no negative numbers anywhere in the built-in tasks
                facts.append((left, "-", right))
    return facts


FACTS = tuple(_all_facts())


def _source_example(rng: random.Random, kind: int) -> Example:
    if kind == 0:
        return reverse_example(_word(rng))
    if kind == 1:
        return sort_example(_word(rng))
    # Pairs of facts teach the model to do arithmetic anywhere in a line, not only first.
    count = rng.choice((1, 2))
    return facts_example(*(rng.choice(FACTS) for _ in range(count)))


@lru_cache(maxsize=1)
def _source_eval() -> tuple[Example, ...]:
    rng = random.Random(_SOURCE_EVAL_SEED)
    third = SOURCE_EVAL_SIZE // 3
    words: list[str] = []
    while len(words) < 2 * third:  # distinct words, so no eval prompt repeats
        w = _word(rng)
        if w not in words:
            words.append(w)
    examples = [reverse_example(w) for w in words[:third]]
    examples += [sort_example(w) for w in words[third:]]
    # The facts themselves are memorized; held out are new pairings of them.
    pairs: dict[str, Example] = {}
    while len(pairs) < third:
        ex = facts_example(rng.choice(FACTS), rng.choice(FACTS))
        pairs.setdefault(ex.prompt, ex)
    return tuple(examples + list(pairs.values()))


def source_eval_examples() -> list[Example]:
    """The fixed held-out source set: 50 reverse, 50 sort, 50 unseen pairs of facts."""
    return list(_source_eval())


def source_train_examples(n: int, seed: int = 0) -> list[Example]:
    """``n`` source-domain examples (a third of each task), never an eval prompt.

    Args:
        n: how many examples.
        seed: the same seed gives the same list.
    """
    rng = random.Random(seed)
    held_out = {e.prompt for e in _source_eval()}
    out: list[Example] = []
    while len(out) < n:
        ex = _source_example(rng, len(out) % 3)
        if ex.prompt not in held_out:
            out.append(ex)
    return out


# --- the target task ---------------------------------------------------------------------


def _target_problem(rng: random.Random) -> tuple[int, list[tuple[str, int]]]:
    """A start value and 2-3 (op, operand) steps, every partial result in 0..29."""
    steps_wanted = rng.choice((2, 3))
    while True:
        value = start = rng.randint(1, 9)
        steps = []
        for _ in range(steps_wanted):
            op, operand = rng.choice("+-"), rng.randint(1, 9)
            value = value + operand if op == "+" else value - operand
            steps.append((op, operand))
            if not 0 <= value <= FACT_LEFT_MAX:
                break
        else:
            return start, steps


def target_example(start: int, steps: list[tuple[str, int]]) -> Example:
    """``Q: 7+5-3\\nA: `` -> ``7+5=12, 12-3=9. #### 9``."""
    question = str(start) + "".join(f"{op}{x}" for op, x in steps)
    value, worked = start, []
    for op, x in steps:
        new = value + x if op == "+" else value - x
        worked.append(f"{value}{op}{x}={new}")
        value = new
    return Example(_question(question), f"{', '.join(worked)}. {ANSWER_MARKER} {value}")


@lru_cache(maxsize=1)
def _target_eval() -> tuple[Example, ...]:
    rng = random.Random(_TARGET_EVAL_SEED)
    seen: dict[str, Example] = {}
    while len(seen) < TARGET_EVAL_SIZE:
        ex = target_example(*_target_problem(rng))
        seen.setdefault(ex.prompt, ex)
    return tuple(seen.values())


def target_eval_examples() -> list[Example]:
    """The fixed held-out target set (150 problems of 3 or 4 numbers)."""
    return list(_target_eval())


def target_train_examples(n: int, seed: int = 0) -> list[Example]:
    """``n`` target-task examples with worked steps, never an eval prompt."""
    rng = random.Random(seed)
    held_out = {e.prompt for e in _target_eval()}
    out: list[Example] = []
    while len(out) < n:
        ex = target_example(*_target_problem(rng))
        if ex.prompt not in held_out:
            out.append(ex)
    return out


# --- answers -----------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_ANSWER_IS = re.compile(r"the answer is\s*:?\s*", re.IGNORECASE)


def _normalize(text: str) -> str:
    """Canonical form of an answer: numbers lose $, commas and trailing zeros."""
    text = text.strip().rstrip(".").strip()
    candidate = text.replace(",", "").replace("$", "")
    if re.fullmatch(r"[-+]?\d+(?:\.\d+)?", candidate):
        sign = "-" if candidate.startswith("-") else ""
        digits = candidate.lstrip("+-")
        if "." in digits:
            digits = digits.rstrip("0").rstrip(".")
        digits = digits.lstrip("0") or "0"
        return sign + digits if digits != "0" else "0"
    return text


def extract_answer(text: str) -> str:
    """The final answer in a completion, used to compare a generation with the gold answer.

    In order: the text after the last ``####``; else after the last "The answer is"
    (MATH-10K's closing sentence); else the last number; else the stripped text. Numbers
    are normalized (``1,234.50`` -> ``1234.5``) so equal values compare equal.
    """
    if ANSWER_MARKER in text:
        tail = text.rsplit(ANSWER_MARKER, 1)[1].strip()
        return _normalize(tail.splitlines()[0] if tail else "")
    said = list(_ANSWER_IS.finditer(text))
    if said:
        tail = text[said[-1].end():].strip()
        return _normalize(tail.splitlines()[0] if tail else "")
    numbers = _NUMBER.findall(text)
    if numbers:
        return _normalize(numbers[-1])
    return text.strip()


# --- user data ---------------------------------------------------------------------------

# The one prompt template for Alpaca-style records (instruction, optional input, output).
_PROMPT_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
_PROMPT_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"


def format_alpaca_prompt(instruction: str, input: str = "") -> str:  # noqa: A002 - Alpaca's name
    """The prompt for an Alpaca-style record.

    ``### Instruction:\\n{instruction}\\n\\n### Input:\\n{input}\\n\\n### Response:\\n``,
    where the Input section is left out when ``input`` is empty or blank.
    """
    if input and input.strip():
        return _PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return _PROMPT_NO_INPUT.format(instruction=instruction)


# A record (a JSONL line, or the fields of one JSON array entry) may hold at most this many
# characters. MATH-10K's longest is ~3,000; training keeps at most max_length tokens of a
# record anyway, and a 50 MB one only costs memory (tokenizers hold ~400 bytes a character).
MAX_RECORD_CHARS = 1_000_000
_CHUNK_CHARS = 1 << 16


def _json_type(value) -> str:
    return "null" if value is None else type(value).__name__


def _record_to_example(record, where: str) -> Example:
    if not isinstance(record, dict):
        raise LiftError(
            f"{where}: expected an object with \"instruction\" and \"output\", "
            f"got {type(record).__name__}"
        )
    for key in ("instruction", "output"):
        if key not in record:
            raise LiftError(
                f"{where}: missing \"{key}\" (each record needs \"instruction\" and \"output\")"
            )
    for key in ("instruction", "input", "output"):
        value = record.get(key, "")
        if not isinstance(value, str) and not (key == "input" and value is None):
            raise LiftError(f"{where}: \"{key}\" must be a string, got {_json_type(value)}")
    if not record["output"].strip():
        raise LiftError(f"{where}: \"output\" is empty")
    prompt = format_alpaca_prompt(record["instruction"], record.get("input") or "")
    return Example(prompt, record["output"])


def _too_long(where: str) -> LiftError:
    return LiftError(f"{where}: the record is over {MAX_RECORD_CHARS:,} characters "
                     "(each record must be shorter; training keeps only max_length tokens)")


def _read_jsonl(handle, path: Path) -> list[Example]:
    examples, number = [], 0
    # readline with a limit never holds more than one allowed record, however long the line.
    while line := handle.readline(MAX_RECORD_CHARS + 1):
        number += 1
        if len(line) > MAX_RECORD_CHARS and line.rstrip("\r\n") == line:
            raise _too_long(f"{path}, line {number}")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LiftError(f"{path}, line {number}: malformed JSON ({exc.msg})") from exc
        examples.append(_record_to_example(record, f"{path}, line {number}"))
    return examples


def _read_json_array(text: str, path: Path) -> list[Example]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LiftError(
            f"{path}, line {exc.lineno}: malformed JSON ({exc.msg})"
        ) from exc
    if not isinstance(data, list):
        raise LiftError(f"{path}: expected a JSON array of records, got a {type(data).__name__}")
    examples = []
    for i, record in enumerate(data, start=1):
        example = _record_to_example(record, f"{path}, record {i}")
        if len(example.prompt) + len(example.answer) > MAX_RECORD_CHARS:
            raise _too_long(f"{path}, record {i}")
        examples.append(example)
    return examples


def _first_character(handle) -> str:
    """The first non-blank character of an open text file ("" when blank), then rewinds."""
    while chunk := handle.read(_CHUNK_CHARS):
        stripped = chunk.lstrip()
        if stripped:
            handle.seek(0)
            return stripped[0]
    return ""


def load_examples(path: str | Path) -> list[Example]:
    """Read Alpaca-style records from a JSON array or a JSONL file (UTF-8, BOM allowed).

    Each record is ``{"instruction": str, "input": str (optional), "output": str}`` (the
    format of MATH-10K); the prompt is :func:`format_alpaca_prompt` and the answer is the
    output. A file whose first non-blank character is ``[`` is read as a JSON array,
    anything else as JSONL (one record per line, read line by line).

    Raises:
        LiftError: naming the file and line (JSONL) or record number (array) for a missing
            or empty file, a folder, malformed JSON, a missing field, a field that is not a
            string, or a record over :data:`MAX_RECORD_CHARS` characters.
    """
    path = Path(path).expanduser()
    try:
        # utf-8-sig: files saved by Windows editors start with a byte-order mark.
        with path.open(encoding="utf-8-sig") as handle:
            first = _first_character(handle)
            if not first:
                raise LiftError(f"{path} is empty: expected JSON or JSONL records")
            examples = (_read_json_array(handle.read(), path) if first == "["
                        else _read_jsonl(handle, path))
    except FileNotFoundError as exc:
        raise LiftError(f"data file {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise LiftError(f"data file {path} is a folder, not a file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LiftError(f"could not read data file {path}: {exc}") from exc
    if not examples:
        raise LiftError(f"{path} holds no records")
    return examples
