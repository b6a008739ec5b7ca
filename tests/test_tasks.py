"""Built-in task generators, answer extraction and user data loading."""

import json

import pytest

from lift_core.errors import LiftError
from lift_core.train.tasks import (
    Example,
    extract_answer,
    format_alpaca_prompt,
    load_examples,
    source_eval_examples,
    source_train_examples,
    target_eval_examples,
    target_train_examples,
)


def test_generators_are_deterministic():
    assert source_train_examples(50, seed=3) == source_train_examples(50, seed=3)
    assert target_train_examples(50, seed=3) == target_train_examples(50, seed=3)
    assert source_train_examples(50, seed=3) != source_train_examples(50, seed=4)
    assert target_eval_examples() == target_eval_examples()
    assert source_eval_examples() == source_eval_examples()


def test_eval_sets_have_the_documented_size_and_no_repeats():
    for examples in (source_eval_examples(), target_eval_examples()):
        assert len(examples) == 150
        assert len({e.prompt for e in examples}) == 150


def test_eval_sets_are_disjoint_from_training_data():
    source_eval = {e.prompt for e in source_eval_examples()}
    target_eval = {e.prompt for e in target_eval_examples()}
    for seed in (0, 1):
        assert not source_eval & {e.prompt for e in source_train_examples(5000, seed=seed)}
        assert not target_eval & {e.prompt for e in target_train_examples(5000, seed=seed)}


def test_source_examples_are_correct():
    for ex in source_train_examples(300, seed=0):
        question = ex.prompt.removeprefix("Q: ").removesuffix("\nA: ")
        if question.startswith("rev "):
            assert ex.answer == question[4:][::-1]
        elif question.startswith("sort "):
            assert ex.answer == "".join(sorted(question[5:]))
        else:  # "Q: 12+3, 4-2\nA: " -> "12+3=15, 4-2=2. #### 2"
            facts = question.split(", ")
            steps = ", ".join(f"{f}={eval(f)}" for f in facts)
            assert ex.answer == f"{steps}. #### {eval(facts[-1])}"


def test_source_eval_facts_are_pairs_of_known_facts():
    for ex in source_eval_examples()[100:]:
        assert ex.prompt.count(", ") == 1 and "####" in ex.answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7+5=12, 12-3=9. #### 9", "9"),
        ("steps #### 1,234.50\nmore text", "1234.5"),
        ("#### -07", "-7"),
        ("#### ", ""),
        ("so 3 + 4 = 7. The answer is 7.", "7"),
        ("The answer is: $18", "18"),
        ("The answer is B.", "B"),
        ("first 3 then 42 apples", "42"),
        ("  dcba  ", "dcba"),
        ("", ""),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_alpaca_prompt_template():
    assert format_alpaca_prompt("Add.", "2 and 3") == (
        "### Instruction:\nAdd.\n\n### Input:\n2 and 3\n\n### Response:\n"
    )
    assert format_alpaca_prompt("Add 2 and 3.") == "### Instruction:\nAdd 2 and 3.\n\n### Response:\n"
    assert format_alpaca_prompt("Add 2 and 3.", "  ") == format_alpaca_prompt("Add 2 and 3.")


RECORDS = [
    {"instruction": "What is 2+3?", "input": "", "output": "2+3=5. The answer is 5"},
    {"instruction": "Double it.", "input": "4", "output": "8"},
    {"instruction": "No input key.", "output": "ok"},
]


def test_load_json_array_and_jsonl_agree(tmp_path):
    array = tmp_path / "data.json"
    array.write_text(json.dumps(RECORDS, indent=2))
    lines = tmp_path / "data.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    examples = load_examples(array)
    assert examples == load_examples(lines)
    assert examples[0] == Example(format_alpaca_prompt("What is 2+3?"), "2+3=5. The answer is 5")
    assert examples[1].prompt == format_alpaca_prompt("Double it.", "4")
    assert extract_answer(examples[0].answer) == "5"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", "  \n", "is empty"),
        ("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "a",\n', "line 2: malformed JSON"),
        ("bad.json", '[{"instruction": "a", "output": "b"},\n {"instruction": ]', "line 2: malformed JSON"),
        ("noout.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n', 'line 2: missing "output"'),
        ("noins.json", '[{"output": "b"}]', 'record 1: missing "instruction"'),
        ("num.json", '[{"instruction": "a", "output": "b"}, {"instruction": "a", "output": 5}]',
         'record 2: "output" must be a string, got int'),
        ("inp.jsonl", '{"instruction": "a", "input": ["x"], "output": "b"}', 'line 1: "input" must be a string'),
        ("obj.json", '{"instruction": "a", "output": "b", "x": [1,\n2]}', "line 1: malformed JSON"),
        ("dict.json", '[1]', "record 1: expected an object"),
        ("blank.jsonl", '{"instruction": "a", "output": " "}', 'line 1: "output" is empty'),
        ("none.json", "[]", "holds no records"),
    ],
)
def test_load_examples_errors_name_file_and_place(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LiftError) as info:
        load_examples(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_load_examples_missing_file(tmp_path):
    with pytest.raises(LiftError, match="does not exist"):
        load_examples(tmp_path / "nope.json")
