"""The paper's three claims checked against recorded runs, each with its numbers and a verdict.

(a) **Budget**: at equal budget LIFT learns the target better than magnitude, and magnitude
better than random (final target accuracy, mean ± std over seeds, each method at its best
learning rate among those recorded at that budget). (b) **Forgetting**: LIFT forgets less
than full fine-tuning and LoRA when all have learned the target to the same level (source
accuracy lost when target accuracy first reaches 20/30/40/50%, each method at its learning rate
with the least forgetting among those whose every seed reached the level). (c) **Noise**:
Gaussian noise on the principal weights raises the source loss more than the same noise on
magnitude, random or LIFT-smallest entries (mean ± std over noise draws, per scale).

The verdict rule is the same everywhere: one method beats another when its mean is better by
more than the larger of the two standard deviations, loses when worse by more than that, and
ties otherwise. A row **holds** when every claimed comparison is a win, **does not hold** when
one is a loss or all are ties, and is **mixed** otherwise (some wins, the rest ties); a claim
holds when all its rows hold, does not hold when none holds, and is mixed in between.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lift_core.errors import LiftError
from lift_core.sweeps import views
from lift_core.train.registry import PRINCIPAL_METHOD, method_label

HOLDS, FAILS, MIXED, NO_VERDICT = "holds", "does not hold", "mixed", "no verdict"
BUDGET_ORDER = (PRINCIPAL_METHOD, "magnitude", "random")
FORGETTING_RIVALS = ("full", "lora")
# Target levels for claim (b): low enough that the sparse methods' short runs reach them (on
# the sample sweep they end at 30-60% target accuracy; 80-90% would leave them no verdict).
CLAIM_LEVELS = (0.2, 0.3, 0.4, 0.5)
CLAIMS = {
    "budget": "LIFT > magnitude > random at equal budget (final target accuracy)",
    "forgetting": "LIFT forgets less than full fine-tuning and LoRA at matched target accuracy",
    "noise": "principal weights are the most noise-sensitive (source loss after noise)",
}
ROW_COLUMNS = ["claim", "where", "measured", "comparisons", "verdict"]


def compare(better: tuple[float, float], worse: tuple[float, float], *, higher_is_better: bool = True) -> str:
    """'>' when ``better`` (mean, std) beats ``worse`` by more than the larger std, '<' when it
    loses by more than that, '=' otherwise (a NaN std, e.g. one seed, counts as 0)."""
    (mean_a, std_a), (mean_b, std_b) = better, worse
    margin = np.nanmax([std_a, std_b, 0.0])
    gain = (mean_a - mean_b) if higher_is_better else (mean_b - mean_a)
    return ">" if gain > margin else "<" if gain < -margin else "="


def row_verdict(signs: list[str]) -> str:
    """holds (all '>'), does not hold (a '<', or all '='), mixed (some '>' and the rest '=')."""
    if not signs:
        return NO_VERDICT
    if all(s == ">" for s in signs):
        return HOLDS
    if "<" in signs or all(s == "=" for s in signs):
        return FAILS
    return MIXED


def claim_verdict(verdicts) -> str:
    """holds when every row with a verdict holds, does not hold when none of them holds (a
    mixed row does not hold the claim as stated), mixed in between."""
    decided = [v for v in verdicts if v != NO_VERDICT]
    if not decided:
        return NO_VERDICT
    if all(v == HOLDS for v in decided):
        return HOLDS
    if not any(v == HOLDS for v in decided):
        return FAILS
    return MIXED


def _chain(values: dict, pairs, *, higher_is_better: bool = True) -> tuple[list[str], str]:
    """Signs of the claimed comparisons and their text, e.g. ('>', '='), 'lift > magnitude, ...'."""
    signs = [compare(values[a], values[b], higher_is_better=higher_is_better) for a, b in pairs]
    text = ", ".join(f"{method_label(a)} {s} {method_label(b)}" for (a, b), s in zip(pairs, signs))
    return signs, text


def budget_rows(points: pd.DataFrame, order=BUDGET_ORDER) -> pd.DataFrame:
    """Claim (a) per budget: final target accuracy of ``order``'s methods, each at its best
    learning rate at that budget (views.budget_curve), mean ± std over seeds."""
    curve = views.budget_curve(points, best_lr=True)
    rows = []
    for budget, group in curve.dropna(subset=["budget"]).groupby("budget", sort=True):
        by_method = group.set_index("method")
        if not set(order) <= set(by_method.index):
            continue
        values = {m: (by_method.at[m, "target_acc_mean"], by_method.at[m, "target_acc_std"]) for m in order}
        # The chain a > b > c, and a > c, which it implies, so that a win over c shows too.
        signs, text = _chain(values, list(zip(order, order[1:])) + [(order[0], order[-1])] * (len(order) > 2))
        fraction = by_method["trainable_fraction"].mean()
        measured = "; ".join(f"{method_label(m)} {views._pm(*values[m])}% (lr {by_method.at[m, 'lr']:g}, "
                             f"{int(by_method.at[m, 'n_seeds'])} seeds)" for m in order)
        where = f"budget rank {budget:g}" + ("" if pd.isna(fraction) else f" ({100 * fraction:.1f}% of entries)")
        rows.append({"claim": "budget", "where": where, "measured": measured, "comparisons": text,
                     "verdict": row_verdict(signs)})
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def _least_forgetting(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: the learning rate whose seeds all reached the level with the least mean
    forgetting, with its mean, std and seed count."""
    per_lr = (table.groupby(["method", "lr"])
              .agg(all_reached=("reached", "all"), forgetting_mean=("forgetting", "mean"),
                   forgetting_std=("forgetting", "std"), step_mean=("step", "mean"), n=("seed", "count"))
              .reset_index())
    per_lr = per_lr[per_lr["all_reached"]].sort_values("forgetting_mean", kind="stable")
    return per_lr.drop_duplicates("method").set_index("method")


def forgetting_rows(run_dirs, levels=CLAIM_LEVELS, rivals=FORGETTING_RIVALS) -> pd.DataFrame:
    """Claim (b) per target level: source accuracy lost when target accuracy first reaches it
    (views.crossings), LIFT against ``rivals``, each at its least-forgetting learning rate."""
    table = views.crossings(run_dirs, levels)
    methods = (PRINCIPAL_METHOD, *rivals)
    rows = []
    for level, group in table.groupby("level", sort=True):
        best = _least_forgetting(group[group["method"].isin(methods)])
        missing = [m for m in methods if m not in best.index]
        where = f"target reaches {100 * level:g}%"
        if missing:
            rows.append({"claim": "forgetting", "where": where, "comparisons": "",
                         "measured": f"no learning rate of {', '.join(map(method_label, missing))} had every "
                                     "seed reach this level", "verdict": NO_VERDICT})
            continue
        values = {m: (best.at[m, "forgetting_mean"], best.at[m, "forgetting_std"]) for m in methods}
        signs, text = _chain(values, [(PRINCIPAL_METHOD, r) for r in rivals], higher_is_better=False)
        text = text.replace(" > ", " forgets less than ").replace(" < ", " forgets more than ") \
                   .replace(" = ", " ties ")
        measured = "; ".join(f"{method_label(m)} {views._pm(*values[m])} pt (lr {best.at[m, 'lr']:g}, step "
                             f"{best.at[m, 'step_mean']:.0f})" for m in methods)
        rows.append({"claim": "forgetting", "where": where, "measured": measured, "comparisons": text,
                     "verdict": row_verdict(signs)})
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def noise_rows(draws: pd.DataFrame, metric: str = "source_loss") -> pd.DataFrame:
    """Claim (c) per noise scale: ``metric`` (higher = more damage) after noise on LIFT's
    entries against every other selector's, mean ± std over draws. ``draws`` holds the rows
    of a sensitivity CSV (selector, scale, draw, metrics)."""
    if metric not in draws or PRINCIPAL_METHOD not in set(draws["selector"]):
        raise LiftError(f"the sensitivity table needs a {metric!r} column and a {PRINCIPAL_METHOD!r} selector")
    summary = draws.groupby(["selector", "scale"])[metric].agg(["mean", "std"]).reset_index()
    others = [s for s in dict.fromkeys(draws["selector"]) if s != PRINCIPAL_METHOD]
    rows = []
    for scale, group in summary.groupby("scale", sort=True):
        values = {s: (m, sd) for s, m, sd in zip(group["selector"], group["mean"], group["std"])}
        pairs = [(PRINCIPAL_METHOD, s) for s in others if s in values]
        signs = [compare(values[a], values[b]) for a, b in pairs]
        text = ", ".join(f"LIFT {s} {method_label(b)}" for (_, b), s in zip(pairs, signs))
        measured = "; ".join(f"{method_label(s)} {values[s][0]:.4f} ± {values[s][1]:.4f}"
                             for s in (PRINCIPAL_METHOD, *others) if s in values)
        rows.append({"claim": "noise", "where": f"noise {scale:g}σ", "measured": measured,
                     "comparisons": text, "verdict": row_verdict(signs)})
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def claims_table(main_sweep, budget_sweep=None, sensitivity_csv=None) -> pd.DataFrame:
    """Every row of the three claims from recorded files: ``main_sweep`` (methods x rates x
    seeds, for (b), and (a) at its budget), ``budget_sweep`` (budgets, for (a)) and a
    sensitivity CSV (for (c)); a missing source just leaves its claim out."""
    main_dirs = views.sweep_run_dirs(main_sweep)
    points = views.load_points(main_dirs)
    if budget_sweep is not None:
        points = pd.concat([points, views.load_points(views.sweep_run_dirs(budget_sweep))], ignore_index=True)
        # A setting in both sweeps (same method, budget, rate, seed) is one run, counted once.
        points = points.drop_duplicates(["method", "budget", "lr", "seed"], ignore_index=True)
    parts = [budget_rows(points), forgetting_rows(main_dirs)]
    if sensitivity_csv is not None:
        path = Path(sensitivity_csv).expanduser()
        if not path.is_file():
            raise LiftError(f"sensitivity table {path} does not exist (write one with `sensitivity --out`)")
        parts.append(noise_rows(pd.read_csv(path)))
    return pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) \
        else pd.DataFrame(columns=ROW_COLUMNS)


def verdicts(rows: pd.DataFrame) -> dict[str, str]:
    """Claim key -> overall verdict (see ``claim_verdict``), in CLAIMS order."""
    return {key: claim_verdict(rows.loc[rows["claim"] == key, "verdict"]) for key in CLAIMS
            if (rows["claim"] == key).any()}


def claims_markdown(rows: pd.DataFrame) -> str:
    """The claims as a markdown table: claim, where, measured, comparisons, verdict; each
    claim's first row carries its overall verdict in bold."""
    overall = verdicts(rows)
    lines = ["| claim | where | measured | comparison | verdict |", "|---|---|---|---|---|"]
    for key in overall:
        for i, row in enumerate(rows[rows["claim"] == key].itertuples()):
            claim = f"{CLAIMS[key]}: **{overall[key]}**" if i == 0 else ""
            lines.append(f"| {claim} | {row.where} | {row.measured} | {row.comparisons} | {row.verdict} |")
    return "\n".join(lines)


def sample_claims(root: str | os.PathLike) -> pd.DataFrame:
    """The claims of the shipped sample sweep under ``root`` (sample_runs/): sweep/,
    sweep-budget/ and sensitivity_builtin.csv, each used when present."""
    root = Path(root).expanduser()
    budget = root / "sweep-budget"
    sensitivity = root / "sensitivity_builtin.csv"
    return claims_table(root / "sweep", budget if budget.is_dir() else None,
                        sensitivity if sensitivity.is_file() else None)


_MEASURE = {
    "budget": "Final target accuracy at equal budget, each method at its best recorded learning rate "
              "(mean ± std over seeds)",
    "forgetting": "Source accuracy lost (points) when target accuracy first reached a level, each method at "
                  "its least-forgetting learning rate (mean ± std over seeds)",
    "noise": "Source loss after Gaussian noise on each selection's entries (mean ± std over noise draws)",
}
_READING = {
    HOLDS: "The paper's claim holds at every {where} measured here.",
    FAILS: "The paper's claim does not hold at any {where} measured here.",
    MIXED: "The paper's claim holds only in part here: {held}.",
    NO_VERDICT: "These records cannot decide it.",
}
_WHERE = {"budget": "budget", "forgetting": "target level", "noise": "noise scale"}
_CAVEAT = {
    "budget": "A best rate is the best of the rates recorded: one outside the grid was not tried.",
    "forgetting": "Runs that never reached a level are not averaged in; a method with no rate at which every "
                  "seed reached it leaves that level without a verdict.",
    "noise": "Every selection perturbs the same number of entries with the same noise draws.",
}
RULE = ("A difference counts only when it is larger than the larger of the two standard deviations; "
        "smaller ones are ties (=).")


def claim_sentences(rows: pd.DataFrame) -> dict[str, str]:
    """Claim key -> two or three sentences on what these rows show: the comparisons where they
    were made, then the overall verdict in words (computed, never written by hand)."""
    out = {}
    for key, verdict in verdicts(rows).items():
        own = rows[rows["claim"] == key]
        found = "; ".join(f"{r.where}: {r.comparisons or r.measured}" for r in own.itertuples())
        held = ", ".join(r.where for r in own.itertuples() if r.verdict == HOLDS) or "nowhere in full"
        reading = _READING[verdict].format(where=_WHERE[key], held=f"it holds at {held}")
        partly = [r.where for r in own.itertuples() if r.verdict == MIXED]
        if partly:
            reading += f" In part (some comparisons won, the rest tied) at {', '.join(partly)}."
        out[key] = f"{_MEASURE[key]}: {found}. {reading} {_CAVEAT[key]}"
    return out
