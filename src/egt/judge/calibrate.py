"""`egt calibrate`: fit the reward service's temperature and abstention threshold on labelled pairs.

    egt calibrate runs/demo/sft/model --data runs/demo/data/test.parquet --output runs/calib
    egt serve runs/demo/sft/model --calibration runs/calib/calibration.json

Every pair of `data` (labelled) is judged as `egt serve` judges it (egt.judge.probability: both
orders, greedy by default, answer probabilities at the verdict token). The pairs are split by a
hash of their id: `calibration_fraction` of them (the calibration split) fit

- the temperature T that minimises the negative log-likelihood of their labels under
  prob_1 = mean over judgements of sigmoid(z / T) (egt.core.calibration.fit_temperature), and
- the abstention threshold on `abstain_metric` ("probability" = 1 - max(prob_1, prob_2) at the fitted
  T, or an entropy): the largest threshold whose kept pairs reach `target_accuracy`, or the one that
  keeps `coverage` of the pairs (egt.core.selective, ties kept together);

and the rest (the held-out split) measures them: ECE with equal-mass bins (and its 95% bootstrap
interval over the pairs), NLL and Brier score before (T = 1) and after, and accuracy and coverage at the threshold. Outputs:

- judgements.jsonl  append-only (egt.core.files.Journal): per pair its split, label, oriented answer
  log-odds per order, entropies; a rerun resumes, a rerun with other judging settings is refused
  (egt.core.runfolder fingerprint; `overwrite` starts over).
- calibration.json  what `egt serve --calibration` loads (egt.judge.probability.Calibration): the
  temperature, abstain metric and threshold, and under `fitted` the provenance and every number below.
- reliability.png   reliability diagram of the held-out split, before and after temperature scaling.
- summary.json      the same numbers as `fitted`.

Departure: the paper does not calibrate; this is egt's, for rewards whose scale means something.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from egt.core import calibration as C
from egt.core import selective
from egt.core.errors import DataError, EgtError
from egt.core.files import Journal, write_json
from egt.judge.api import JudgeOptions, is_endpoint, orders_for
from egt.judge.probability import UNCERTAINTY_METRICS, Calibration, oriented_logits

LOG_NAME = "judgements.jsonl"
OWNED = [LOG_NAME, "calibration.json", "reliability.png", "summary.json"]
DEFAULT_COVERAGE = 0.8


class Config(JudgeOptions):
    data: Path = Field(..., description="labelled pairs (.parquet or .jsonl), e.g. runs/demo/data/test.parquet")
    output: Path = Field(..., description="output folder")
    calibration_fraction: float = Field(0.5, gt=0, lt=1, description="share of pairs (by id hash) that fit T "
                                                                     "and the threshold; the rest measure them")
    bins: int = Field(10, ge=1, description="equal-mass bins of the ECE and the reliability diagram")
    abstain_metric: Literal[UNCERTAINTY_METRICS] = Field(  # type: ignore[valid-type]
        "probability", description="probability (1 - max(prob_1, prob_2)) or an entropy: answer, sentence, mean, max, vote")
    coverage: float | None = Field(None, gt=0, le=1, description="abstain outside this share of the calibration "
                                                                 f"split, the least uncertain (None: {DEFAULT_COVERAGE} "
                                                                 "unless target_accuracy is given)")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="instead of coverage: keep the most pairs "
                                                                        "whose accuracy reaches this")
    limit: int | None = Field(None, ge=1, description="use only the first N pairs")
    image_root: Path | None = Field(None, description="folder image paths resolve against and stay inside")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    overwrite: bool = Field(False, description="start over in a folder judged with other settings")
    progress: bool = True

    @model_validator(mode="after")
    def _one_rule(self):
        if self.target_accuracy is not None and self.coverage is not None:
            raise ValueError("give coverage or target_accuracy, not both")
        return self

    def coverage_or_default(self) -> float | None:
        return DEFAULT_COVERAGE if self.coverage is None and self.target_accuracy is None else self.coverage


def in_calibration_split(pair_id: str, fraction: float) -> bool:
    """A stable split by id: the first 8 bytes of sha256(id) as a fraction of 2^64."""
    value = int.from_bytes(hashlib.sha256(f"egt-calibrate\x1f{pair_id}".encode()).digest()[:8], "big")
    return value / 2**64 < fraction


def _settings(cfg: Config) -> dict:
    from egt.core.images import image_settings

    keys = ("served_model", "samples", "orders", "max_new_tokens", "seed", "sentence_agg", "top_logprobs",
            "vocab_size", "calibration_fraction")
    settings = {k: getattr(cfg, k) for k in keys}
    settings.update(model=cfg.model if is_endpoint(cfg.model) else None,
                    temperature=cfg.temperature if cfg.samples > 1 else None, limit=cfg.limit)
    settings.update(image_settings(cfg.image_limits))  # only when images are downscaled (egt.core.images)
    return settings


def judge_pending(pairs, cfg: Config, log: Journal) -> dict[str, dict]:
    """Judge the pairs the journal lacks, in chunks; records by id."""
    from tqdm.auto import tqdm

    from egt.judge.probability import RewardJudge

    done = log.load()
    todo = [p for p in pairs if p.id not in done]
    if not todo:
        return done
    judge = RewardJudge.from_options(cfg)
    orders = orders_for(cfg.orders)
    step = max(1, cfg.batch_size // (cfg.samples * len(orders)))
    with tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="calibrate", unit="pair",
              disable=not cfg.progress, dynamic_ncols=True) as bar:
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            requests = [r for p in chunk for r in judge.requests_for(p, orders)]
            judged = judge.run(requests)
            n = cfg.samples * len(orders)
            records = []
            for i, pair in enumerate(chunk):
                groups = [judged[i * n + o * cfg.samples:i * n + (o + 1) * cfg.samples] for o in range(len(orders))]
                reward = judge.reward(judged[i * n:(i + 1) * n], orders)
                records.append({"key": pair.id, "id": pair.id, "label": pair.label,
                                "split": "calibration" if in_calibration_split(pair.id, cfg.calibration_fraction)
                                else "held_out",
                                "logits": oriented_logits(orders, groups),
                                "answer_forced": reward.answer_forced, "entropies": reward.comparison.entropies})
            log.append(records)
            done.update((r["key"], r) for r in records)
            bar.update(len(chunk))
    return done


def _probabilities(records: list[dict], temperature: float) -> list[float | None]:
    """Per record, prob_1 as the service computes it (mean over the orders that gave log-odds)."""
    out = []
    for r in records:
        per_order = [C.pair_probability(z, temperature) for z in r["logits"].values() if z]
        out.append(sum(per_order) / len(per_order) if per_order else None)
    return out


def _uncertainty(records: list[dict], probs: list[float | None], metric: str) -> list[float | None]:
    if metric == "probability":
        return [None if p is None else 1.0 - max(p, 1.0 - p) for p in probs]
    return [r["entropies"].get(metric) for r in records]


def _quality(records: list[dict], temperature: float, bins: int) -> dict:
    probs = _probabilities(records, temperature)
    usable = [(p, r["label"]) for p, r in zip(probs, records) if p is not None]
    if not usable:
        return {"pairs": 0}
    p, y = zip(*usable)
    confidence, correct = C.confidence_and_correct(p, y)
    return {"pairs": len(usable), "accuracy": float(np.mean(correct)), "ece": C.ece(p, y, bins),
            "ece_ci95": list(C.ece_interval(p, y, bins)),
            "nll": C.nll(p, y), "brier": C.brier(p, y), "mean_confidence": float(np.mean(confidence)),
            "reliability": C.reliability_bins(p, y, bins)}


def _interval(quality: dict) -> str:
    lo, hi = quality.get("ece_ci95") or (math.nan, math.nan)
    return f"[{lo:.4f}, {hi:.4f}]"


def choose_threshold(uncertainty: list[float | None], correct: list[bool], coverage: float | None,
                     target_accuracy: float | None) -> float | None:
    """The abstention threshold on the calibration split (module docstring); None if no threshold reaches the target."""
    if coverage is not None:
        return selective.coverage_threshold(uncertainty, coverage)
    curve = selective.risk_coverage(uncertainty, correct)
    good = [t for t, a in zip(curve["threshold"], curve["accuracy"]) if a >= target_accuracy]
    return max(good) if good else None


def _selective(uncertainty, correct, threshold) -> dict:
    if threshold is None or not len(correct):
        return {"coverage": 0.0 if threshold is None else None, "accuracy_kept": None}
    keep = [not a for a in selective.abstain_mask(uncertainty, threshold=threshold)]
    kept = [c for c, k in zip(correct, keep) if k]
    return {"coverage": len(kept) / len(correct), "accuracy_kept": selective.accuracy(kept) if kept else None,
            "aurc": selective.aurc(uncertainty, correct)}


def reliability_figure(before: dict, after: dict, temperature: float, path: Path) -> Path:
    from egt.reporting.tables import new_figure, save_figure

    fig, (ax,) = new_figure()
    ax.plot([0.5, 1.0], [0.5, 1.0], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for name, quality, marker in (("T = 1", before, "o"), (f"T = {temperature:.3g}", after, "s")):
        table = quality.get("reliability") or []
        ax.plot([b["confidence"] for b in table], [b["accuracy"] for b in table], marker=marker,
                label=f"{name}: ECE {quality.get('ece', math.nan):.3f}")
    ax.set_xlabel("confidence (mean of the bin)")
    ax.set_ylabel("accuracy (share right in the bin)")
    ax.set_title(f"Reliability, held-out split ({before.get('pairs', 0)} pairs, equal-mass bins)")
    ax.set_xlim(0.48, 1.01)
    ax.set_ylim(0.0, 1.02)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def run(cfg: Config) -> Path:
    from egt.core.runfolder import fingerprint, open_run_folder
    from egt.judge.verdicts import read_judge_pairs

    started = time.perf_counter()
    out = Path(cfg.output)
    pairs, labelled = read_judge_pairs(cfg.data, cfg.image_root, cfg.allow_absolute_paths, cfg.image_limits)
    if not pairs or not labelled:
        raise DataError(str(cfg.data), None, "label", "egt calibrate needs pairs that all have a label")
    pairs = pairs[:cfg.limit] if cfg.limit else pairs
    model = None if is_endpoint(cfg.model) else cfg.model
    log = Journal(out / LOG_NAME, key="key")
    with open_run_folder(out, "calibrate", fingerprint=lambda: fingerprint(inputs={"data": cfg.data},
                                                                          models={"model": model},
                                                                          settings=_settings(cfg)),
                         owned=OWNED, has_results=lambda: (out / LOG_NAME).exists(), overwrite=cfg.overwrite):
        done = judge_pending(pairs, cfg, log)
        records = [done[p.id] for p in pairs]
        fit = [r for r in records if r["split"] == "calibration"]
        held = [r for r in records if r["split"] == "held_out"]
        if not fit or not held:
            raise EgtError(f"egt calibrate: {len(fit)} calibration and {len(held)} held-out pairs: both splits need "
                           "pairs (more data, or another calibration_fraction)")
        fit_usable = [r for r in fit if any(r["logits"].values())]
        if not fit_usable:
            raise EgtError("egt calibrate: no pair of the calibration split has an answer probability (an endpoint "
                           "without log-probs, or no verdicts)")
        temperature = C.fit_temperature([[z for zs in r["logits"].values() for z in zs] for r in fit_usable],
                                        [r["label"] for r in fit_usable])
        # Abstention is chosen at the fitted temperature, where "probability" is what the service reports.
        selective_at = {}
        threshold = None
        for name, group in (("calibration", fit), ("held_out", held)):
            probs = _probabilities(group, temperature)
            u = _uncertainty(group, probs, cfg.abstain_metric)
            correct = [p is not None and p != 0.5 and (p > 0.5) == (r["label"] == 1) for p, r in zip(probs, group)]
            if name == "calibration":
                threshold = choose_threshold(u, correct, cfg.coverage_or_default(), cfg.target_accuracy)
            selective_at[name] = _selective(u, correct, threshold)
        before, after = _quality(held, 1.0, cfg.bins), _quality(held, temperature, cfg.bins)
        fitted = {"model": cfg.model if is_endpoint(cfg.model) else str(Path(cfg.model).resolve()),
                  "data": str(Path(cfg.data).resolve()), "pairs": len(records), "calibration_pairs": len(fit),
                  "held_out_pairs": len(held), "samples": cfg.samples, "orders": cfg.orders,
                  "max_new_tokens": cfg.max_new_tokens, "bins": cfg.bins,
                  "answer_forced": sum(r["answer_forced"] for r in records),
                  "coverage_asked": cfg.coverage_or_default(), "target_accuracy": cfg.target_accuracy,
                  "held_out_before": before, "held_out_after": after, "abstention": selective_at,
                  "calibration_nll_before": _quality(fit, 1.0, cfg.bins).get("nll"),
                  "calibration_nll_after": _quality(fit, temperature, cfg.bins).get("nll")}
        calibration = Calibration(temperature=temperature, abstain_metric=cfg.abstain_metric,
                                  abstain_threshold=threshold, fitted=fitted)
        write_json(calibration.model_dump(mode="json"), out / "calibration.json")
        reliability_figure(before, after, temperature, out / "reliability.png")
        fitted["wall_s"] = round(time.perf_counter() - started, 3)
        write_json(fitted, out / "summary.json")
    kept = selective_at["held_out"]
    print(f"egt calibrate: T = {temperature:.3f}; held-out ECE {before.get('ece', math.nan):.4f} "
          f"{_interval(before)} -> {after.get('ece', math.nan):.4f} {_interval(after)} ({before.get('pairs', 0)} "
          f"pairs); abstain when {cfg.abstain_metric} > "
          f"{threshold if threshold is not None else 'n/a'}: held-out coverage {kept.get('coverage')}, accuracy "
          f"{kept.get('accuracy_kept')}")
    return out
