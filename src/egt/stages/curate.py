"""Stage 2: choose the RL training pairs from a score file, and order them.

    egt curate runs/x/score/scores.parquet --strategy lowest --metric answer --fraction 0.25 \\
        --order ascending --output runs/x/curate
    egt curate --manifest runs/x/curate/manifest.json --output runs/x/curate_again   # exact rebuild

Strategies (all deterministic; ties broken by pair id, ascending):
- `lowest`   — the n (or fraction) pairs with the lowest metric value (EGT);
- `highest`  — the n highest (ablation);
- `prune`    — drop the top `prune_percent` % by the metric, keep the rest;
- `random`   — n (or fraction) pairs drawn uniformly with `seed` (the paper's random baseline);
- `accuracy` — keep pairs whose verdicts match the label in >= `min_correct` of the K samples
  (label-dependent baseline of the paper's ablation; "no verdict" counts as wrong).
Metrics: answer, sentence, mean, max, vote (the score file's `*_entropy_nats`
columns, egt.core.score_columns) or hybrid (weighted mean of percentile ranks over the whole input file,
`weights={answer: 1, max: 1}`).
Undefined values (NaN) rank as the highest entropy by default (`missing=highest`),
or the lowest, or are dropped (`missing=drop`, only where the metric selects).
Counts from `fraction` round half up: round(fraction * eligible pairs).

Writes selected.parquet (score rows in curriculum order with `order` 0..n-1 and
`stage`), dropped.parquet (with `drop_reason`: metric, value, threshold) and
manifest.json (input sha256, thresholds, counts, seed, version, full config,
selected ids). The folder's fingerprint.json (egt.core.runfolder: the score file's
SHA-256 and the settings) refuses a rerun with another score file or other
settings into a folder that holds a selection, naming what changed
(`overwrite=true` replaces it); one process writes a folder at a time. Departure from the paper: it keeps a fixed 2,500 lowest-entropy
pairs; here n, fraction or prune_percent make that one option among several.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

import egt
from egt.core import runfolder
from egt.core.config import StageConfig
from egt.core.errors import ConfigError, DataError, EgtError
from egt.core.files import check_unique_ids, sha256_file, write_json
from egt.core.records import read_rows, write_rows
from egt.core.runfolder import open_run_folder
from egt.core.score_columns import MetricOrHybrid, metric_column, metric_label, metric_values
from egt.stages.curriculum import order_pairs, parse_ordering, sort_by_value

# What `egt curate` writes in its folder (replaced by overwrite).
OWNED = ("selected.parquet", "dropped.parquet", "manifest.json")


class Config(StageConfig):
    scores: Path | None = Field(None, description="score file from `egt score` (omit with manifest)")
    output: Path = Field(..., description="output folder")
    strategy: Literal["lowest", "prune", "random", "accuracy", "highest"] = "lowest"
    metric: MetricOrHybrid = Field("answer", description="entropy metric that selects (and orders by default)")
    n: int | None = Field(None, ge=0, description="pairs to keep (lowest/highest/random)")
    fraction: float | None = Field(None, gt=0, le=1, description="share of pairs to keep, instead of n")
    prune_percent: float | None = Field(None, ge=0, le=100, description="prune: drop the top p% by metric")
    min_correct: int | None = Field(None, ge=0, description="accuracy: keep pairs right in >= m of K samples")
    weights: dict[str, float] | None = Field(None, description="hybrid: metric -> weight")
    missing: Literal["highest", "lowest", "drop"] = Field("highest", description="where undefined values rank")
    seed: int = 0
    order: str = Field("ascending", description="ascending | descending | random | buckets:K")
    order_metric: MetricOrHybrid | None = Field(None, description="metric that orders (default: metric)")
    manifest: Path | None = Field(None, description="rebuild the subset a manifest.json describes")
    overwrite: bool = Field(False, description="replace a selection of another score file or settings in output")


@dataclass
class Selection:
    selected: np.ndarray                      # row indices, in curriculum order
    order: np.ndarray                         # aligned with `selected`: 0..n-1
    stage: np.ndarray                         # aligned with `selected`
    dropped: list[tuple[int, str]] = field(default_factory=list)   # (row index, reason)
    thresholds: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)


def check_config(cfg: Config) -> None:
    """Errors for option combinations a strategy cannot use."""
    parse_ordering_or_fail(cfg.order)
    sized = cfg.strategy in ("lowest", "highest", "random")
    if sized and (cfg.n is None) == (cfg.fraction is None):
        raise ConfigError(f"strategy '{cfg.strategy}' needs exactly one of n or fraction")
    if not sized and (cfg.n is not None or cfg.fraction is not None):
        raise ConfigError(f"strategy '{cfg.strategy}' does not take n or fraction")
    if (cfg.strategy == "prune") != (cfg.prune_percent is not None):
        raise ConfigError("prune_percent is required by, and only used by, strategy 'prune'")
    if (cfg.strategy == "accuracy") != (cfg.min_correct is not None):
        raise ConfigError("min_correct is required by, and only used by, strategy 'accuracy'")
    if cfg.weights and "hybrid" not in (cfg.metric, cfg.order_metric):
        raise ConfigError("weights are only used with metric=hybrid or order_metric=hybrid")
    for name in cfg.weights or {}:
        metric_column(name)


def parse_ordering_or_fail(ordering: str) -> None:
    try:
        parse_ordering(ordering)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _count(cfg: Config, eligible: int) -> int:
    if cfg.n is not None:
        return min(cfg.n, eligible)
    return min(eligible, _round_half_up(cfg.fraction * eligible))


def _show(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "undefined"
    return f"{value:.6g}"


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def _by_value(values: np.ndarray, ids: np.ndarray, eligible: np.ndarray, cfg: Config, label: str):
    """lowest / highest / prune: (chosen rows, [(row, reason)], thresholds)."""
    m = len(eligible)
    ranked = eligible[sort_by_value(values[eligible], ids[eligible], cfg.strategy == "highest", cfg.missing)]
    if cfg.strategy == "prune":
        keep = m - _round_half_up(cfg.prune_percent / 100 * m)
    else:
        keep = _count(cfg, m)
    chosen, rest = ranked[:keep], ranked[keep:]
    last_kept = float(values[chosen[-1]]) if keep else None
    if cfg.strategy == "prune":
        first_dropped = float(values[rest[0]]) if len(rest) else None
        thresholds = {"prune_percent": cfg.prune_percent, "drop_from": first_dropped, "kept": keep}
        rule = f"in the top {cfg.prune_percent:g}% (threshold {_show(first_dropped)})"
    else:
        thresholds = {"cutoff": last_kept, "kept": keep}
        side = ">" if cfg.strategy == "lowest" else "<"
        rule = f"{side} cutoff {_show(last_kept)} ({cfg.strategy} {keep} of {m})"
    dropped = []
    for i in rest:
        value = float(values[i])
        tied = last_kept is not None and (value == last_kept or (math.isnan(value) and math.isnan(last_kept)))
        reason = f"{label}={_show(value)} {rule}"
        if tied:
            reason += f"; ties the last kept value {_show(last_kept)}, tie broken by id"
        dropped.append((int(i), reason))
    return chosen, dropped, thresholds


def select(rows: list[dict], cfg: Config, file: str = "<scores>") -> Selection:
    """The pure selection + ordering of `egt curate` (no files)."""
    check_config(cfg)
    ids = [str(r.get("id")) for r in rows]
    check_unique_ids(ids, file)
    ids_arr = np.array(ids, dtype=object)
    by_value = cfg.strategy in ("lowest", "highest", "prune")
    values = metric_values(rows, cfg.metric, cfg.weights, cfg.missing, file) if by_value else None
    label = metric_label(cfg.metric)
    dropped: list[tuple[int, str]] = []
    eligible = np.arange(len(rows))
    if by_value and cfg.missing == "drop":
        undefined = np.isnan(values)
        dropped += [(int(i), f"{label} undefined (missing=drop)") for i in np.flatnonzero(undefined)]
        eligible = np.flatnonzero(~undefined)
    m = len(eligible)
    if by_value:
        chosen, more, thresholds = _by_value(values, ids_arr, eligible, cfg, label)
        dropped += more
    elif cfg.strategy == "random":
        keep = _count(cfg, m)
        by_id = eligible[np.argsort(ids_arr[eligible].astype(str), kind="stable")]
        drawn = np.random.default_rng(cfg.seed).permutation(m)
        chosen = np.sort(by_id[drawn[:keep]])
        dropped += [(int(i), f"not drawn by the random baseline (seed {cfg.seed}, {keep} of {m})")
                    for i in np.sort(by_id[drawn[keep:]])]
        thresholds = {"kept": keep}
    else:  # accuracy
        correct = []
        for i, row in enumerate(rows):
            if "verdicts" not in row or row["verdicts"] is None:
                raise DataError(file, i, "verdicts", "missing column; expected a score file written by `egt score`")
            correct.append(sum(v is not None and int(v) == int(row["label"]) for v in row["verdicts"]))
        chosen = np.array([i for i in range(len(rows)) if correct[i] >= cfg.min_correct], dtype=np.int64)
        dropped += [(i, f"correct in {correct[i]} of {len(rows[i]['verdicts'])} samples < min_correct {cfg.min_correct}")
                    for i in range(len(rows)) if correct[i] < cfg.min_correct]
        thresholds = {"min_correct": cfg.min_correct}

    order_metric = cfg.order_metric or cfg.metric
    order_missing = "highest" if cfg.missing == "drop" else cfg.missing
    chosen = np.asarray(chosen, dtype=np.int64)
    if parse_ordering(cfg.order)[0] == "random":
        order_vals = np.zeros(len(chosen))  # values unused; avoids requiring the metric column
    else:
        order_vals = metric_values(rows, order_metric, cfg.weights, order_missing, file)[chosen]
    order, stage = order_pairs(order_vals, [ids[i] for i in chosen], cfg.order, cfg.seed, order_missing)
    sequence = np.argsort(order, kind="stable")
    dropped.sort(key=lambda item: item[0])
    counts = {"input": len(rows), "eligible": m, "selected": int(len(chosen)), "dropped": len(dropped),
              "dropped_missing": len(rows) - m}
    return Selection(chosen[sequence], order[sequence], stage[sequence], dropped, thresholds, counts)


def _write_outputs(rows: list[dict], selection: Selection, cfg: Config, scores: Path, input_sha256: str) -> Path:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    selected = []
    for index, order, stage in zip(selection.selected, selection.order, selection.stage):
        row = {k: v for k, v in rows[index].items() if k not in ("order", "stage", "drop_reason")}
        selected.append({**row, "order": int(order), "stage": int(stage)})
    dropped = [{**{k: v for k, v in rows[i].items() if k not in ("order", "stage", "drop_reason")},
                "drop_reason": reason} for i, reason in selection.dropped]
    write_rows(selected, out / "selected.parquet")
    write_rows(dropped, out / "dropped.parquet")
    manifest = {
        "egt_version": egt.__version__,
        "input": {"path": str(Path(scores).resolve()), "sha256": input_sha256, "rows": len(rows)},
        "strategy": cfg.strategy, "metric": cfg.metric,
        "metric_column": metric_label(cfg.metric),
        "weights": cfg.weights, "missing": cfg.missing, "seed": cfg.seed,
        "order": cfg.order, "order_metric": cfg.order_metric or cfg.metric,
        "thresholds": selection.thresholds, "counts": selection.counts,
        "selected_ids": [str(rows[i]["id"]) for i in selection.selected],
        "config": cfg.model_dump(mode="json"),
    }
    write_json(manifest, out / "manifest.json")
    return out


def _manifest_config(manifest_path: Path, manifest, output, scores, overwrite: bool) -> Config:
    """The Config a manifest records, for `output` (DataError naming the manifest's bad field)."""
    from pydantic import ValidationError

    try:
        saved = dict(manifest["config"])
        source = scores or manifest["input"]["path"]
        expected = manifest["input"]["sha256"]
        if not isinstance(expected, str) or not isinstance(manifest["selected_ids"], list):
            raise TypeError("input.sha256 or selected_ids has the wrong type")
    except (KeyError, TypeError) as exc:
        raise DataError(str(manifest_path), None, "config", f"not a curate manifest ({exc})") from None
    saved.update(output=str(output), manifest=None, scores=str(source), overwrite=overwrite)
    try:
        return Config.model_validate(saved)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "config." + ".".join(str(p) for p in err["loc"])
        raise DataError(str(manifest_path), None, field, f"{err['msg']} (got {err.get('input')!r})") from None


def rebuild(manifest_path: str | Path, output: str | Path, scores: str | Path | None = None,
            overwrite: bool = False) -> Path:
    """Rebuild the subset a manifest describes; fails if the input file or the result differ."""
    manifest_path = Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise DataError(str(manifest_path), None, None, "file not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(str(manifest_path), None, None, f"not a curate manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise DataError(str(manifest_path), None, None, "not a curate manifest (expected a JSON object)")
    cfg = _manifest_config(manifest_path, manifest, output, scores, overwrite)
    digest = sha256_file(Path(cfg.scores)) if Path(cfg.scores).is_file() else None
    if digest is None:
        raise DataError(str(cfg.scores), None, None, f"score file not found (named by {manifest_path})")
    if digest != manifest["input"]["sha256"]:
        raise DataError(str(cfg.scores), None, None,
                        f"sha256 {digest[:12]}... differs from the manifest's {manifest['input']['sha256'][:12]}...; "
                        "this is not the score file the subset was built from")
    out = _curate(cfg)
    rebuilt = json.loads((out / "manifest.json").read_text())["selected_ids"]
    if rebuilt != manifest["selected_ids"]:
        raise EgtError(f"rebuilt subset differs from {manifest_path} (egt {manifest['egt_version']} "
                       f"vs {egt.__version__}); check the version")
    return out


def fingerprint(cfg: Config) -> dict:
    """What the selection depends on (egt.core.runfolder): the score file's hash and the selection settings."""
    settings = cfg.model_dump(mode="json", exclude={"scores", "output", "manifest", "overwrite"})
    return runfolder.fingerprint(inputs={"scores": cfg.scores}, settings=settings)


def _curate(cfg: Config) -> Path:
    if cfg.scores is None:
        raise ConfigError("curate needs SCORES (the score file) or manifest=manifest.json")
    scores = Path(cfg.scores)
    rows = read_rows(scores)
    selection = select(rows, cfg, str(scores))
    out = Path(cfg.output)
    with open_run_folder(out, "curate", fingerprint=fingerprint(cfg), owned=OWNED, overwrite=cfg.overwrite,
                         has_results=lambda: (out / "selected.parquet").exists()):
        return _write_outputs(rows, selection, cfg, scores, sha256_file(scores))


def run(cfg: Config) -> Path:
    if cfg.manifest is not None:
        return rebuild(cfg.manifest, cfg.output, cfg.scores, cfg.overwrite)
    return _curate(cfg)
