"""Pure metric functions of `egt eval`: official benchmark metrics, orders, voting.

Everything here maps plain lists (ids, categories, correctness) to numbers, so
each rule can be tested on hand-counted cases. The benchmark rules follow the
public scripts (see `egt eval` in docs/cli.md):

- correctness is the official one: a pair is right when the reward of the
  chosen response is higher, `rewards[0] > rewards[1]` with rewards written as
  `[score of chosen, score of rejected]`.
- VL-RewardBench (R1-Reward `VL-Reward-Bench/get_acc.py`): category from the
  id, general / hallucination / reasoning; overall accuracy over all pairs and
  the macro average of the three category accuracies. Departure: the id is
  matched case-insensitively (the public script's case-sensitive match files
  the 301 `RLAIF`/`RLHF` ids under general). The benchmark's own `cal.py`
  leaves pairs without a verdict out of the denominator; that variant is
  reported too (`*_verdict_only`).
- Multimodal RewardBench (facebookresearch `scripts/2_get_accuracy.py`):
  `safety` splits into `safety/bias` (ID starts with `pairs`) and
  `safety/toxicity`; `reasoning` into `reasoning/math` (ID starts with `math`)
  and `reasoning/coding`; `accuracy` is the script's `all` (over every pair).
- MM-RLHF-RewardBench (R1-Reward `MM-RLHF-Reward/get_acc.py`): category is
  the first of mcq, long, short, safety, video in the image/video path;
  accuracy over rows; acc+ over ids (an id counts only if all its rows are
  right). A category's acc+ counts an all-right id under the first category
  (in that keyword order) of its rows and divides by the ids with any row in
  the category, as the script does.

Orders and voting: each pair can be judged with the chosen response first and
second. A judgement's *choice* is "chosen", "rejected" or None (no verdict).
With K samples per order the choice is the plurality of the K choices; samples
without a verdict do not vote, and a tie between the two responses (including
no vote at all) is no verdict, which counts as wrong. The rewards written for
the official scripts are the vote shares `[n_chosen / K, n_rejected / K]`, so
those scripts apply exactly the same rule (`[0, 0]` or a tie is not `>`).

Accuracy and abstention (selective prediction) are egt.core.selective's.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

# The category rules live with the readers (one definition for loading and scoring).
from egt.core.selective import accuracy
from egt.data.readers import (  # noqa: F401 (mmrlhf_category is re-exported: eval reads M.mmrlhf_category)
    MMRLHF_CATEGORIES,
    mmrb_category,
    mmrlhf_category,
    vlrewardbench_category,
)

CHOSEN, REJECTED = "chosen", "rejected"

VLRB_CATEGORIES = ("general", "hallucination", "reasoning")

def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def category_accuracy(categories: Sequence[str], correct: Sequence[bool],
                      order: Sequence[str] | None = None) -> dict:
    """Overall accuracy, macro average over categories, and the per-category table.

    `order` fixes the categories listed (absent ones are left out of the macro
    average instead of counting as 0, which only matters on a subset).
    """
    if len(categories) != len(correct):
        raise ValueError(f"{len(categories)} categories for {len(correct)} results")
    groups: dict[str, list[bool]] = defaultdict(list)
    for cat, ok in zip(categories, correct):
        groups[cat].append(bool(ok))
    names = [c for c in order if c in groups] if order is not None else sorted(groups)
    table = {c: {"accuracy": accuracy(groups[c]), "correct": sum(groups[c]), "n": len(groups[c])} for c in names}
    return {"accuracy": accuracy(correct), "macro_accuracy": _mean([t["accuracy"] for t in table.values()]),
            "n": len(correct), "categories": table}


def vlrewardbench_metrics(ids: Sequence[str], correct: Sequence[bool],
                          has_verdict: Sequence[bool] | None = None) -> dict:
    """VL-RewardBench: overall accuracy and macro average over general/hallucination/reasoning.

    With `has_verdict`, also the benchmark `cal.py` variant in which pairs
    without a verdict leave the denominator.
    """
    categories = [vlrewardbench_category(i) for i in ids]
    out = category_accuracy(categories, correct, VLRB_CATEGORIES)
    if has_verdict is not None:
        kept = [(c, ok) for c, ok, v in zip(categories, correct, has_verdict) if v]
        sub = category_accuracy([c for c, _ in kept], [ok for _, ok in kept], VLRB_CATEGORIES)
        out["accuracy_verdict_only"] = sub["accuracy"]
        out["macro_accuracy_verdict_only"] = sub["macro_accuracy"]
    return out


def mmrb_metrics(ids: Sequence[str], categories: Sequence[str], correct: Sequence[bool]) -> dict:
    """Multimodal RewardBench: accuracy over all pairs and per official (split) category."""
    split = [mmrb_category(i, c) for i, c in zip(ids, categories)]
    return category_accuracy(split, correct)


def mmrlhf_metrics(group_ids: Sequence[str], categories: Sequence[str | None],
                   correct: Sequence[bool]) -> dict:
    """MM-RLHF-RewardBench: accuracy (rows) and acc+ (ids whose rows are all right)."""
    if not len(group_ids) == len(categories) == len(correct):
        raise ValueError("group_ids, categories and correct differ in length")
    rows_by_id: dict[str, list[int]] = defaultdict(list)
    for index, gid in enumerate(group_ids):
        rows_by_id[gid].append(index)
    all_right = {gid: all(correct[i] for i in rows) for gid, rows in rows_by_id.items()}
    table = {}
    for cat in MMRLHF_CATEGORIES:
        rows = [i for i, c in enumerate(categories) if c == cat]
        if not rows:
            continue
        ids_in = [gid for gid, r in rows_by_id.items() if any(categories[i] == cat for i in r)]
        # The script credits an all-right id to the first category (keyword order) among its rows.
        credited = [gid for gid in ids_in if all_right[gid] and _first_category(categories, rows_by_id[gid]) == cat]
        table[cat] = {"accuracy": accuracy([correct[i] for i in rows]), "correct": sum(bool(correct[i]) for i in rows),
                      "n": len(rows), "acc_plus": len(credited) / len(ids_in), "n_ids": len(ids_in)}
    return {"accuracy": accuracy(correct), "acc_plus": accuracy(list(all_right.values())),
            "n": len(correct), "n_ids": len(rows_by_id), "categories": table}


def _first_category(categories: Sequence[str | None], rows: list[int]) -> str | None:
    present = {categories[i] for i in rows}
    return next((c for c in MMRLHF_CATEGORIES if c in present), None)


# --------------------------------------------------------- orders and voting

def choice_of(verdict: int | None, chosen_position: int) -> str | None:
    """Which response a verdict picks, given where the chosen response was shown."""
    if verdict not in (1, 2):
        return None
    return CHOSEN if verdict == chosen_position else REJECTED


def majority_vote(choices: Sequence[str | None]) -> tuple[str | None, list[float]]:
    """Plurality of K choices and the rewards `[n_chosen / K, n_rejected / K]`.

    No-verdict samples do not vote; a tie (or no vote) gives no choice.
    """
    if not choices:
        raise ValueError("majority_vote needs at least one choice")
    n_chosen = sum(c == CHOSEN for c in choices)
    n_rejected = sum(c == REJECTED for c in choices)
    rewards = [n_chosen / len(choices), n_rejected / len(choices)]
    if n_chosen == n_rejected:
        return None, rewards
    return (CHOSEN if n_chosen > n_rejected else REJECTED), rewards


def is_correct(rewards: Sequence[float]) -> bool:
    """The official rule: right when the chosen response's reward is higher."""
    return rewards[0] > rewards[1]


def order_metrics(first: Sequence[str | None], second: Sequence[str | None]) -> dict:
    """Accuracy per order, both-order accuracy and position consistency.

    `first[i]` / `second[i]`: the (voted) choice for pair i judged with the
    chosen response first / second. Consistent = the same response picked in
    both orders; a pair with no verdict in either order is not consistent.
    """
    if len(first) != len(second):
        raise ValueError(f"{len(first)} chosen-first results for {len(second)} chosen-second")
    pairs = list(zip(first, second))
    return {
        "chosen_first_accuracy": accuracy([a == CHOSEN for a, _ in pairs]),
        "chosen_second_accuracy": accuracy([b == CHOSEN for _, b in pairs]),
        "both_order_accuracy": accuracy([a == CHOSEN and b == CHOSEN for a, b in pairs]),
        "position_consistency": accuracy([a is not None and a == b for a, b in pairs]),
    }


def judgement_stats(format_ok: Sequence[bool], has_verdict: Sequence[bool], n_tokens: Sequence[int]) -> dict:
    """Over all generated judgements: format-failure and no-verdict rates, mean length."""
    return {"format_failure_rate": accuracy([not ok for ok in format_ok]),
            "no_verdict_rate": accuracy([not v for v in has_verdict]),
            "mean_generated_tokens": _mean([float(n) for n in n_tokens]),
            "n_judgements": len(format_ok)}
