"""Before and after: the base model's and the tuned model's answers to the same prompts.

Forgetting is counted by the source accuracy of a run; here it is *seen*: a handful of
target prompts (what the run learned) and source prompts (what it may have forgotten),
answered greedily by both models with :func:`lift_core.train.evaluation.generate_completions`,
side by side with the gold answer and whether each model got it right.
"""

from __future__ import annotations

from lift_core.errors import LiftError
from lift_core.train.evaluation import answer_length, generate_completions, score
from lift_core.train.tasks import Example, load_examples, source_eval_examples, target_eval_examples

GENERATION_COLUMNS = ["task", "prompt", "gold", "base", "tuned", "base_correct", "tuned_correct"]
MAX_GENERATIONS = 50  # per task: a handful to read, not an evaluation


def spread_pick(examples: list[Example], n: int) -> list[Example]:
    """``n`` examples spread evenly over the list (the built-in source set is in blocks of kinds)."""
    if n >= len(examples):
        return list(examples)
    step = len(examples) / n
    return [examples[int(i * step)] for i in range(n)]


def run_prompts(config: dict, n: int) -> dict[str, list[Example]]:
    """``n`` target and ``n`` source examples of a run: its eval files, else the built-in tasks."""
    if not 1 <= n <= MAX_GENERATIONS:
        raise LiftError(f"the number of generations must be 1..{MAX_GENERATIONS}, got {n}")
    chosen = {}
    for task, builtin in (("target", target_eval_examples), ("source", source_eval_examples)):
        path = config.get(f"{task}_eval")
        chosen[task] = spread_pick(load_examples(path) if path else builtin(), n)
    return chosen


def before_after(base_model, tuned_model, tokenizer, prompts: dict[str, list[Example]],
                 *, max_prompt_tokens: int | None = 256):
    """Greedy answers of both models, one row per prompt (columns ``GENERATION_COLUMNS``).

    Args:
        base_model, tuned_model: causal LMs sharing ``tokenizer``.
        prompts: task name -> examples (see :func:`run_prompts`).
        max_prompt_tokens: a longer prompt keeps its last this many tokens.
    """
    import pandas as pd

    rows = []
    for task, examples in prompts.items():
        if not examples:
            continue
        new_tokens = answer_length(tokenizer, examples, max_tokens=max_prompt_tokens)
        texts = [e.prompt for e in examples]
        answers = {
            name: generate_completions(model, tokenizer, texts, max_new_tokens=new_tokens,
                                       max_prompt_tokens=max_prompt_tokens)
            for name, model in (("base", base_model), ("tuned", tuned_model))
        }
        hits = {name: score(out, examples) for name, out in answers.items()}
        for i, example in enumerate(examples):
            rows.append({"task": task, "prompt": example.prompt, "gold": example.answer,
                         "base": answers["base"][i].strip(), "tuned": answers["tuned"][i].strip(),
                         "base_correct": hits["base"][i], "tuned_correct": hits["tuned"][i]})
    return pd.DataFrame(rows, columns=GENERATION_COLUMNS)
