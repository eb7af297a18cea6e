"""What each RL run of the demo trained on, and the measured context that explains each claim's outcome.

`rl_diet`: the pool pairs a run's generations consumed (`rl/<run>/consumed.jsonl`; a pair and its swapped
copy count once) joined with the SFT judge's K samples on them (`score/scores.parquet`): their mislabeled
share, the share the SFT judge already solves or misses in all K samples, and the pairs it splits -- where
GRPO's signal comes from. `claim_context`: the line beside each claim (noise of the pairs trained on, what the
dose-response predicts, training curves). `diet_section`: the report's table.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from egt.core.records import SWAP_SUFFIX, read_rows
from egt.demo.claims import MODEL_LABELS, RL_SUBSETS, fmt, read_or_empty
from egt.reporting.tables import markdown_table


def _subset_noise(heads: dict) -> dict[str, float]:
    subsets = heads.get("curate", {}).get("subsets", {})
    return {k: v.get("noise") for k, v in subsets.items()}


def _train_curve(run_dir: Path, model: str) -> str:
    summary = read_or_empty(run_dir / "rl" / model / "train_summary.json")
    logged = [h for h in summary.get("log_history", []) if "rewards/accuracy_reward/mean" in h]
    if not logged:
        return ""
    fifth = max(1, len(logged) // 5)
    first = statistics.fmean(h["rewards/accuracy_reward/mean"] for h in logged[:fifth])
    last = statistics.fmean(h["rewards/accuracy_reward/mean"] for h in logged[-fifth:])
    zero = statistics.fmean(h.get("frac_reward_zero_std", 0.0) for h in logged)
    return f"train accuracy reward {first:.2f} -> {last:.2f} (first / last fifth), {zero:.0%} of groups without signal"


def rl_diet(run_dir: Path, model: str) -> dict | None:
    """What one RL run trained on, from the pairs its generations consumed (`rl/<model>/consumed.jsonl`; a
    swapped copy counts as its pair) joined with the SFT judge's K samples on them (`score/scores.parquet`).

    GRPO learns only from groups whose rewards differ. A pair the SFT judge already answers as labelled in
    all K samples (`solved`) or in none (`missed`) tends to give a group without signal; the pairs whose K
    samples it splits (`split`) are where the gradient comes from, so their mislabeled share is the noise
    the update actually follows. None when the run or the scores are missing."""
    consumed, scores = run_dir / "rl" / model / "consumed.jsonl", run_dir / "score" / "scores.parquet"
    if not consumed.exists() or not scores.exists():
        return None
    seen = dict.fromkeys(pair_id.removesuffix(SWAP_SUFFIX) for line in consumed.read_text().splitlines()
                         if line.strip() for pair_id in json.loads(line)["ids"])
    by_id = {r["id"]: r for r in read_rows(scores)}
    rows = [by_id[i] for i in seen if i in by_id]
    if not rows:
        return None

    def noisy(group: list[dict]) -> float | None:   # None where the noise is unknown (no meta.noisy)
        if not group or any("noisy" not in (r.get("meta") or {}) for r in group):
            return None
        return sum(bool(r["meta"]["noisy"]) for r in group) / len(group)

    split = [r for r in rows if 0.0 < r["k_accuracy"] < 1.0]
    return {"pairs_seen": len(rows), "noise_seen": noisy(rows),
            "solved": sum(r["k_accuracy"] >= 1.0 for r in rows) / len(rows),
            "missed": sum(r["k_accuracy"] <= 0.0 for r in rows) / len(rows),
            "split_pairs": len(split), "split_noise": noisy(split), "ids": list(seen)}


def _subset_pairs(heads: dict, model: str) -> int | None:
    return heads.get("curate", {}).get("subsets", {}).get(RL_SUBSETS.get(model, ""), {}).get("pairs")


def _diet_text(diet: dict) -> str:
    return (f"{diet['pairs_seen']} pairs trained on, {fmt(diet['noise_seen'], 2)} mislabeled; the SFT judge already "
            f"answered {diet['solved']:.0%} of them as labelled in all K samples; the {diet['split_pairs']} it split "
            f"(where GRPO's signal comes from) were {fmt(diet['split_noise'], 2)} mislabeled")


def claim_context(name: str, run_dir: Path, heads: dict, slope: float | None, result: dict | None,
             diets: dict[str, dict | None]) -> str:
    """The measurement that explains a claim's outcome: the label noise of the pairs each RL run actually
    trained on (`diets`: rl_diet per run; the subset's noise when unknown), what the dose-response of RL to
    label noise predicts for their difference, the RL training curves."""
    noise = _subset_noise(heads)
    diets = {m: diets.get(m) for m in RL_SUBSETS}
    seen = {m: (d["noise_seen"] if d else noise.get(RL_SUBSETS[m])) for m, d in diets.items()}
    detectable = f"; this split detects about {fmt(result['min_detectable'])}" if result else ""
    if name.startswith("RL on"):
        parts = [p for p in (_diet_text(diets["a_egt"]) if diets["a_egt"] else "", _train_curve(run_dir, "a_egt")) if p]
        return "; ".join(parts)
    if ("full pool" in name or "random selection" in name) and seen["a_egt"] is not None:
        other, what = ("b_full", "full pool") if "full pool" in name else ("c_random", "random subset")
        if seen[other] is None:
            return ""
        text = f"label noise of the pairs trained on {seen['a_egt']:.2f} (EGT) vs {seen[other]:.2f} ({what})"
        if slope is not None:
            text += (f"; the dose-response ({slope * 0.1:+.3f} gain per 10 points of noise) predicts "
                     f"{slope * (seen['a_egt'] - seen[other]):+.3f} from the noise difference alone{detectable}")
        return text
    if "descending" in name:
        a, d = diets["a_egt"], diets["d_descending"]
        if a and d and set(a["ids"]) != set(d["ids"]):
            total = _subset_pairs(heads, "a_egt")
            text = (f"different pairs: the RL steps cover {a['pairs_seen']} of the subset's {fmt(total)} pairs, so "
                    f"(a) trained on its lowest-entropy pairs ({fmt(a['noise_seen'], 2)} mislabeled) and (d) on "
                    f"its highest ({fmt(d['noise_seen'], 2)} mislabeled): this compares pairs more than orders")
        else:
            text = "same pairs, reversed order"
        curves = [c for c in (_train_curve(run_dir, "a_egt"), _train_curve(run_dir, "d_descending")) if c]
        return text + ("; (a) " + curves[0] + "; (d) " + curves[1] if len(curves) == 2 else "")
    return ""


def diet_section(run_dir: Path, heads: dict, diets: dict[str, dict | None]) -> list[str]:
    rows = []
    for model in RL_SUBSETS:
        diet = diets.get(model)
        if diet is None:
            continue
        curve = read_or_empty(run_dir / "rl" / model / "train_summary.json").get("log_history", [])
        zero = [h["frac_reward_zero_std"] for h in curve if "frac_reward_zero_std" in h]
        rows.append([MODEL_LABELS[model], f"{diet['pairs_seen']} of {fmt(_subset_pairs(heads, model))}",
                     fmt(diet["noise_seen"]), f"{diet['solved']:.0%}", f"{diet['missed']:.0%}",
                     diet["split_pairs"], fmt(diet["split_noise"]),
                     f"{statistics.fmean(zero):.0%}" if zero else "n/a"])
    if not rows:
        return []
    return ["### What each RL run trained on", "",
            "The pool pairs each run's generations consumed (`rl/<run>/consumed.jsonl`; a pair and its swapped copy "
            "count once), with the SFT judge's K samples on them from stage 2. GRPO learns only from groups whose "
            "rewards differ: pairs the SFT judge answers as labelled in all K samples (solved) or in none (missed) "
            "mostly give groups without signal, so the mislabeled share of the pairs it splits is the noise the "
            "update follows. When the steps cover fewer pairs than a subset holds, a run trains on the head of its "
            "order only.", "",
            markdown_table(["run", "pairs trained on", "mislabeled", "SFT solved (all K)", "SFT missed (no K)",
                            "pairs split by SFT", "split pairs mislabeled", "groups without signal (RL)"], rows), ""]
