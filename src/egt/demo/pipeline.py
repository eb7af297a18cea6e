"""`egt demo`: the whole EGT recipe on the embedded tiny judge, with a replication report.

    egt demo --output runs/demo                                   # what `make demo` runs
    egt demo --output runs/study --seeds 3 --rl_steps 200 --dose-response 0      # the 3-seed study (docs/replication.md)
    egt demo --tiny --output /tmp/d                               # CI-sized smoke run

Stages (one run folder; each stage writes `stages/<stage>.json` and a rerun skips it):
 1 data     synthetic train / pool (label noise with known flags) / clean test splits;
            the base judge is the shipped pre-trained tiny base (egt.tiny.build.shipped_base)
 2 distill  oracle teacher with deliberate mistakes + the fidelity filter
 3 sft      the base on the kept traces (TRL SFTTrainer)
 4 score    K sampled judgements per pool pair and their entropies
 5 analyze  entropy bins vs accuracy, noise share, AUROC, figures
 6 curate   lowest-entropy subset (EGT) + random and accuracy baselines; view.html (egt view:
            every pool pair, its judgements token by token, kept/dropped per subset)
 7 rl       GRPO from the same SFT checkpoint, same settings and seed, for
            (a) EGT: curated, ascending entropy; (b) full pool, random order;
            (c) random subset of the curated size, random order;
            (d) curated, descending entropy; plus, with `dose_response`, the full
            pool relabelled at each noise rate (0 = the true labels)
 8 eval     SFT and every RL model on the clean test split, both orders
 9 report   report.md: every table and figure from this run, paired statistics

RL runs and evaluations are independent jobs, `workers` at a time, one CPU thread
each (egt.core.parallel), so their numbers do not depend on the worker count.

Deviations from the paper, by necessity of scale: the judge is a ~0.9M-parameter model
whose pre-training is minutes of captioning and checking single claims about synthetic
scenes, the teacher is an oracle that reads the scene, and the RL runs are 100 steps.
The report says which claims reproduce here and what was measured where they do not.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Literal

from pydantic import Field

from egt import __version__
from egt.core.config import StageConfig, load_config, save_config
from egt.core.files import write_json
from egt.core.records import read_rows
from egt.core.runfolder import open_run_folder
from egt.demo.claims import dose_name, dose_runs
from egt.model.training import TRAIN_SUMMARY

RL_RUNS = {
    "a_egt": ("EGT: lowest-entropy subset, ascending", "curated_ascending"),
    "b_full": ("Full pool, random order (baseline)", "full_random"),
    "c_random": ("Random subset of the same size, random order", "random_subset"),
    "d_descending": ("Lowest-entropy subset, descending (curriculum ablation)", "curated_descending"),
}
STAGES = ("data", "distill", "sft", "score", "analyze", "curate", "rl", "eval", "report")
# What each stage writes in the run folder (removed when --overwrite redoes it).
STAGE_OUTPUTS = {"data": ["data"], "distill": ["distill"], "sft": ["sft"], "score": ["score"],
                 "analyze": ["analysis"], "curate": ["curate", "view.html"], "rl": ["rl"], "eval": ["eval"], "report": []}
# The first stage whose results a setting changes; unlisted settings count from "data".
FIRST_STAGE = {
    **dict.fromkeys(("distill_orders", "distill_max_attempts", "oracle_wrong_rate"), "distill"),
    **dict.fromkeys(("sft_epochs", "sft_learning_rate", "sft_batch_size", "sft_adam_beta2"), "sft"),
    **dict.fromkeys(("samples", "score_temperature", "max_new_tokens", "eval_batch_size"), "score"),
    **dict.fromkeys(("curate_metric", "curate_fraction", "accuracy_min_correct"), "curate"),
    **dict.fromkeys(("rl_steps", "rl_num_generations", "rl_batch_size", "rl_learning_rate", "rl_beta",
                     "rl_loss_type", "rl_both_orders", "rl_freeze_vision", "rl_temperature", "rl_variants",
                     "dose_response"), "rl"),
}
# Settings that do not change any result (the worker count: one thread per job either way).
NOT_FINGERPRINTED = ("output", "seeds", "workers", "overwrite")


class Config(StageConfig):
    output: Path = Field(Path("runs/demo"), description="run folder")
    seed: int = Field(0, description="seed of everything downstream of the base model (data, SFT, sampling, RL)")
    seeds: int = Field(1, description="run the recipe for seeds seed..seed+seeds-1 and summarise")
    tiny: bool = Field(False, description="CI-sized run: small data, few steps")
    workers: int | None = Field(None, ge=1, description="parallel jobs for RL runs and evaluations (None: one per "
                                "core); each job uses one thread, so results do not depend on this")
    base_model: Path | None = Field(None, description="base judge to fine-tune; None = the shipped tiny base "
                                    "(egt.tiny.build.shipped_base, rebuilt by `egt model tiny`)")
    noise: str = Field("ambiguity:0.3", description="label-noise model of the train split and the RL pool")
    n_train: int = Field(19000, description="fresh pairs beat more epochs: the tiny judge memorises")
    n_pool: int = 800
    n_test: int = Field(1000, description="clean test pairs, each judged in both orders")
    distill_orders: Literal["one", "both"] = Field("one", description="both: swap augmentation of the SFT traces")
    distill_max_attempts: int = 3
    oracle_wrong_rate: float = Field(0.3, description="share of deliberately wrong teacher traces")
    sft_epochs: float = 1.0
    sft_learning_rate: float = 2e-3
    sft_batch_size: int = Field(8, description="small batches: the tiny judge's checks need steps more than samples")
    sft_adam_beta2: float = 0.98
    samples: int = Field(4, description="K judgements per pool pair when scoring")
    score_temperature: float = 1.0
    max_new_tokens: int = 64
    curate_metric: str = Field("max", description="entropy metric for the EGT subset")
    curate_fraction: float = Field(0.5, description="share of the pool kept by EGT")
    accuracy_min_correct: int = Field(0, description="accuracy baseline: right in >= m of K (0 = K)")
    rl_steps: int = Field(100, description="GRPO steps per run: 100 x 4 prompts = the first half of the EGT subset in "
                          "both orders (bench_rl, true labels: 100 steps +4.8 points, 200 +5.8; on the noisy subsets "
                          "200 steps lost 8-11 points: the second half of the ascending curriculum is the noisier)")
    rl_num_generations: int = 4
    rl_batch_size: int = Field(16, description="completions per step (rl_batch_size / rl_num_generations pairs)")
    rl_learning_rate: float = Field(1e-4, description="with both-order pairs; one order at 1e-4 can collapse to a position")
    rl_beta: float = 0.0
    rl_loss_type: str = "dapo"
    rl_both_orders: bool = Field(True, description="show every RL pair in both orders (swap augmentation)")
    rl_freeze_vision: bool = Field(False, description="the tiny judge still learns to see during RL")
    rl_temperature: float = 1.0
    rl_variants: list[Literal["a_egt", "b_full", "c_random", "d_descending"]] = Field(
        default_factory=lambda: list(RL_RUNS), description="which of the RL runs (a)-(d) to train and evaluate")
    dose_response: list[float] = Field(default_factory=list, description="also run RL on the full pool relabelled "
                                       "at these noise rates (0 = true labels) and report gain vs noise")
    eval_batch_size: int = 64
    overwrite: bool = Field(False, description="redo the stages whose settings changed since this folder's run "
                                               "(without it such a rerun is refused, naming what changed)")

    def sized(self) -> "Config":
        if not self.tiny:
            return self
        small = dict(n_train=200, n_pool=48, n_test=24, sft_epochs=1.0, samples=2, rl_steps=2,
                     rl_num_generations=2, rl_batch_size=4, max_new_tokens=48)
        return self.model_copy(update=small)


def rl_settings(cfg: Config) -> dict:
    """The `egt rl` settings every demo RL run shares (benchmarks/bench_rl.py starts from them too)."""
    return {"max_steps": cfg.rl_steps, "num_generations": cfg.rl_num_generations,
            "per_device_train_batch_size": cfg.rl_batch_size, "learning_rate": cfg.rl_learning_rate,
            "beta": cfg.rl_beta, "loss_type": cfg.rl_loss_type, "both_orders": cfg.rl_both_orders,
            "freeze_vision": cfg.rl_freeze_vision, "temperature": cfg.rl_temperature,
            "max_completion_length": cfg.max_new_tokens}


def _stage_cfg(module, **values):
    """Build a stage's Config through the validating loader (clear errors)."""
    return load_config(module.Config, None, {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()})


def _rl_job(values: dict) -> dict:
    from egt.stages import rl

    out = rl.run(_stage_cfg(rl, **values))
    return _trainer_log(out)


def _eval_job(values: dict) -> dict:
    from egt.stages import evaluate

    out = evaluate.run(_stage_cfg(evaluate, **values))
    return json.loads((Path(out) / "metrics.json").read_text())


def _noisy_share(rows: list[dict]) -> float:
    return round(sum(bool(r["meta"].get("noisy")) for r in rows) / max(len(rows), 1), 3)


class Pipeline:
    def __init__(self, cfg: Config, run_dir: Path, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.dir = run_dir
        self.log = log
        self.timings: dict[str, float] = {}
        self.headlines: dict[str, dict] = {}
        self._base_fingerprint: dict | None = None

    def stage_fingerprint(self, name: str) -> dict:
        """What stage `name`'s results depend on: the base model's files and every setting of this stage
        and the stages before it (a setting no stage claims counts from the first: changing it redoes all)."""
        from egt.core import runfolder

        upto = STAGES.index(name)
        settings = {key: value for key, value in self.cfg.model_dump(mode="json").items()
                    if key not in NOT_FINGERPRINTED and STAGES.index(FIRST_STAGE.get(key, "data")) <= upto}
        if self._base_fingerprint is None:
            self._base_fingerprint = runfolder.fingerprint(models={"base": self.base_model()})
        return {**self._base_fingerprint, "settings": settings}

    def stage(self, name: str, fn: Callable[[], dict]) -> dict:
        """Run one stage unless its marker holds this run's fingerprint; record wall time and headline.

        A marker of other settings is refused (StaleRunError naming what changed) unless `overwrite`,
        which removes the stage's folders and runs it again; the stages after it follow, since their
        fingerprints include this stage's settings."""
        from egt.core import runfolder

        index, total = STAGES.index(name) + 1, len(STAGES)
        marker = self.dir / "stages" / f"{name}.json"
        current = self.stage_fingerprint(name)
        record = json.loads(marker.read_text()) if marker.exists() else None
        if record is not None and record.get("fingerprint") != current:
            if not self.cfg.overwrite:
                diffs = runfolder.differences(record.get("fingerprint"), current)
                shown = "; ".join(diffs[:6]) + (f"; ... {len(diffs) - 6} more" if len(diffs) > 6 else "")
                raise runfolder.StaleRunError(
                    f"{self.dir}: stage {name} was run with other settings ({shown or 'made by an older egt'}) "
                    f"(use another --output, or --overwrite to redo {name} and the stages after it)")
            record = None
        if record is not None:
            self.log(f"[{index}/{total}] {name:<8} cached ({record['seconds']:.0f} s)  {record['headline_text']}")
        else:
            if marker.exists() or self.cfg.overwrite:
                marker.unlink(missing_ok=True)
                runfolder.remove_owned(self.dir, STAGE_OUTPUTS[name])
            log_path = self.dir / "logs" / f"{name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log(f"[{index}/{total}] {name:<8} running ... (details: {log_path})")
            start = time.perf_counter()
            # Each stage's own bars and trainer logs go to its log file so the terminal
            # keeps one line per stage.
            with open(log_path, "a", buffering=1) as handle, _quiet(handle):
                headline = fn()
            seconds = time.perf_counter() - start
            text = _headline_text(headline)
            record = {"seconds": seconds, "headline": headline, "headline_text": text, "fingerprint": current}
            write_json(record, marker)
            self.log(f"[{index}/{total}] {name:<8} done in {seconds:.0f} s  {text}")
        self.timings[name] = record["seconds"]
        self.headlines[name] = record["headline"]
        return record["headline"]

    # ------------------------------------------------------------ stages
    def base_model(self) -> Path:
        from egt.tiny.build import shipped_base

        return Path(self.cfg.base_model) if self.cfg.base_model else shipped_base()

    def data(self) -> dict:
        from egt.core.files import read_json, sha256_file
        from egt.data import synth

        cfg = self.cfg
        base = self.base_model()
        out = {"base_model": str(base), "base_sha256": sha256_file(base / "model.safetensors")}
        for name in ("egt_tiny.json", "pretrain.json"):
            if (base / name).exists():
                out[name.split(".")[0]] = read_json(base / name)
        splits = {"train": (cfg.n_train, cfg.noise), "pool": (cfg.n_pool, cfg.noise), "test": (cfg.n_test, "none")}
        for offset, (split, (n, noise)) in enumerate(splits.items()):
            path = synth.run(_stage_cfg(synth, split=split, n=n, seed=cfg.seed * 100 + offset, noise=noise,
                                        output=self.dir / "data" / f"{split}.parquet"))
            rows = read_rows(path)
            out[f"{split}_pairs"] = len(rows)
            out[f"{split}_noise"] = _noisy_share(rows)
        return out

    def distill(self) -> dict:
        from egt.stages import distill

        out = distill.run(_stage_cfg(distill, pairs=self.dir / "data" / "train.parquet",
                                     output=self.dir / "distill", backend="oracle", orders=self.cfg.distill_orders,
                                     max_attempts=self.cfg.distill_max_attempts,
                                     oracle_wrong_rate=self.cfg.oracle_wrong_rate, seed=self.cfg.seed))
        stats = json.loads((Path(out) / "stats.json").read_text())
        return {"kept": stats.get("kept"), "dropped": stats.get("dropped"),
                "kept_pct": stats.get("kept_pct"), "stats": stats}

    def sft(self) -> dict:
        from egt.stages import sft

        cfg = self.cfg
        sft.run(_stage_cfg(sft, model=self.base_model(), traces=self.dir / "distill" / "traces.parquet",
                           output=self.dir / "sft", num_train_epochs=cfg.sft_epochs,
                           learning_rate=cfg.sft_learning_rate, per_device_train_batch_size=cfg.sft_batch_size,
                           adam_beta2=cfg.sft_adam_beta2, freeze_vision_tower=False, seed=cfg.seed))
        state = _trainer_log(self.dir / "sft")
        return {"train_loss": state.get("train_loss"), "steps": state.get("steps")}

    def score(self) -> dict:
        from egt.stages import score

        cfg = self.cfg
        out = score.run(_stage_cfg(score, model=self.dir / "sft" / "model", pairs=self.dir / "data" / "pool.parquet",
                                   output=self.dir / "score", samples=cfg.samples, temperature=cfg.score_temperature,
                                   max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size,
                                   seed=cfg.seed, dump_tokens=True))
        rows = read_rows(Path(out) / "scores.parquet")
        k_acc = sum(r["k_accuracy"] for r in rows) / len(rows)
        return {"pairs": len(rows), "k_sample_accuracy": round(k_acc, 3)}

    def analyze(self) -> dict:
        from egt.stages import analyze

        out = analyze.run(_stage_cfg(analyze, scores=self.dir / "score" / "scores.parquet",
                                     output=self.dir / "analysis"))
        result = json.loads((Path(out) / "analysis.json").read_text())
        noisy = {m: v.get("noisy") for m, v in _auroc_summary(result).items()}
        return {"auroc_noisy": noisy, "auroc": _auroc_summary(result)}

    def curate(self) -> dict:
        from egt.stages import curate

        cfg = self.cfg
        scores = self.dir / "score" / "scores.parquet"
        n_keep = max(1, int(round(cfg.curate_fraction * cfg.n_pool)))
        min_correct = cfg.accuracy_min_correct or cfg.samples
        subsets = {
            "curated_ascending": dict(strategy="lowest", metric=cfg.curate_metric, n=n_keep, order="ascending"),
            "curated_descending": dict(strategy="lowest", metric=cfg.curate_metric, n=n_keep, order="descending"),
            "full_random": dict(strategy="random", fraction=1.0, order="random"),
            "random_subset": dict(strategy="random", n=n_keep, order="random"),
            "accuracy": dict(strategy="accuracy", min_correct=min_correct, order="random"),
        }
        summary = {}
        for name, options in subsets.items():
            out = curate.run(_stage_cfg(curate, scores=scores, output=self.dir / "curate" / name,
                                        seed=cfg.seed, **options))
            rows = read_rows(Path(out) / "selected.parquet")
            summary[name] = {"pairs": len(rows), "noise": _noisy_share(rows)}
        from egt.reporting.view import write_view

        # One page to browse the pool: every pair, its K judgements token by token, kept/dropped per subset.
        # Its images are the pool's, in <run>/data/pool_images: that folder's parent is the image root.
        view = write_view(scores, self.dir / "view.html", tokens=self.dir / "score" / "tokens.parquet",
                          manifests=[self.dir / "curate" / name / "manifest.json" for name in subsets],
                          title=f"egt demo pool (seed {cfg.seed})", image_root=self.dir / "data")
        return {"view": view.name, "egt_pairs": summary["curated_ascending"]["pairs"],
                "egt_noise": summary["curated_ascending"]["noise"],
                "pool_noise": summary["full_random"]["noise"], "subsets": summary}

    def rl_runs(self) -> dict[str, Path]:
        """RL run name -> its training pairs: (a)-(d), then the dose-response pools."""
        runs = {name: self.dir / "curate" / subset / "selected.parquet" for name, (_, subset) in RL_RUNS.items()
                if name in self.cfg.rl_variants}
        for noise, run in dose_runs(self.cfg).items():
            if run != "b_full":
                runs[run] = self._ordered_pool(noise)
        return runs

    def _ordered_pool(self, noise: float) -> Path:
        """The pool's scenes relabelled at `noise` (0 = true labels), in the full-pool run's random order,
        so only the labels differ from run (b)."""
        from egt.core.records import read_pairs, write_pairs
        from egt.data import synth

        path = self.dir / "rl" / "pools" / f"pool_{dose_name(noise)}_ordered.parquet"
        if not path.exists():
            relabelled = synth.run(_stage_cfg(synth, split="pool", n=self.cfg.n_pool, seed=self.cfg.seed * 100 + 1,
                                              noise=f"ambiguity:{noise}" if noise else "none",
                                              output=self.dir / "rl" / "pools" / f"pool_{dose_name(noise)}.parquet"))
            order = {r["id"]: r["order"] for r in read_rows(self.dir / "curate" / "full_random" / "selected.parquet")}
            pairs = read_pairs(relabelled)
            for pair in pairs:
                pair.extra["order"] = order[pair.id]
            write_pairs(pairs, path)
        return path

    def rl(self) -> dict:
        from egt.core.parallel import Job, run_jobs

        cfg = self.cfg
        jobs = [Job(name, _rl_job, ({**rl_settings(cfg), "model": str(self.dir / "sft" / "model"),
                                     "train": str(train), "output": str(self.dir / "rl" / name), "seed": cfg.seed},),
                    log=self.dir / "logs" / f"rl-{name}.log")
                for name, train in self.rl_runs().items()]
        logs = run_jobs(jobs, workers=cfg.workers, threads=1)
        pool_noise = {run: _noisy_share(read_rows(self._ordered_pool(noise)))
                      for noise, run in dose_runs(cfg).items() if run != "b_full"}
        return {"runs": len(jobs), "steps": cfg.rl_steps, "logs": dict(zip([j.name for j in jobs], logs)),
                "dose_pool_noise": pool_noise}

    def models_to_eval(self) -> dict[str, Path]:
        models = {"sft": self.dir / "sft" / "model"}
        models.update({name: self.dir / "rl" / name / "model" for name in self.rl_runs()})
        return models

    def evaluate(self) -> dict:
        from egt.core.parallel import Job, run_jobs

        cfg = self.cfg
        jobs = [Job(name, _eval_job, ({"benchmark": "synthetic", "data": str(self.dir / "data" / "test.parquet"),
                                       "model": str(model_dir), "orders": "both",
                                       "output": str(self.dir / "eval" / name), "batch_size": cfg.eval_batch_size,
                                       "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed, "progress": False},),
                    log=self.dir / "logs" / f"eval-{name}.log")
                for name, model_dir in self.models_to_eval().items()]
        results = dict(zip([j.name for j in jobs], run_jobs(jobs, workers=cfg.workers, threads=1)))
        return {"both_order_accuracy": {k: _metric(v, "both_order_accuracy") for k, v in results.items()},
                "metrics": results}

    def report(self) -> dict:
        from egt.demo.report import write_report

        path = write_report(self, command_line(self.cfg))
        return {"report": str(path)}

    def run(self) -> Path:

        self.dir.mkdir(parents=True, exist_ok=True)
        with open_run_folder(self.dir, "demo"):
            save_config(self.cfg, self.dir / "config.yaml")   # this run's settings (`--config` reloads them)
            for name in STAGES[:-1]:
                self.stage(name, getattr(self, "evaluate" if name == "eval" else name))
            # The report is always rewritten so it reflects every cached stage.
            (self.dir / "stages" / "report.json").unlink(missing_ok=True)
            self.stage("report", self.report)
        return self.dir


def _headline_text(headline: dict) -> str:
    """Scalars as `key value`; a dict of scalars (e.g. accuracy per model) as `key a=0.71 b=0.69`."""
    parts = []
    for key, value in headline.items():
        if isinstance(value, dict) and value and all(isinstance(v, (int, float, str)) or v is None
                                                     for v in value.values()):
            parts.append(f"{key} " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in value.items()))
        elif not isinstance(value, (dict, list)):
            parts.append(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


@contextlib.contextmanager
def _quiet(handle):
    """Send stdout, stderr and warnings of a stage to `handle`."""
    import logging
    import warnings

    root = logging.getLogger()
    file_handler = logging.StreamHandler(handle)
    root.addHandler(file_handler)
    with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            root.removeHandler(file_handler)


def _metric(metrics: dict, key: str):
    """Find `key` at the top level or under `overall` of an eval metrics.json."""
    if key in metrics:
        return metrics[key]
    for section in ("overall", "metrics"):
        if isinstance(metrics.get(section), dict) and key in metrics[section]:
            return metrics[section][key]
    return None


def _auroc_summary(result: dict) -> dict:
    out = {}
    for metric, values in (result.get("auroc") or {}).items():
        if isinstance(values, dict):
            out[metric] = {k: (round(v, 3) if isinstance(v, float) and not math.isnan(v) else v)
                           for k, v in values.items()}
    return out


def _trainer_log(stage_dir: Path) -> dict:
    """Final training loss and steps from the stage's train_summary.json (egt sft and egt rl), when present."""
    path = stage_dir / TRAIN_SUMMARY
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    losses = [h["loss"] for h in data.get("log_history", []) if "loss" in h]
    return {"train_loss": data.get("train_loss", losses[-1] if losses else None), "steps": data.get("global_step"),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def command_line(cfg: Config) -> str:
    """The `egt demo` command that reruns `cfg`: every setting that differs from its default."""
    defaults = Config().model_dump(mode="json")
    args = ["egt", "demo", "--output", str(cfg.output), "--seed", str(cfg.seed)]
    for key, value in cfg.model_dump(mode="json").items():
        if key in ("output", "seed", "workers", "overwrite") or value == defaults.get(key):
            continue
        if isinstance(value, bool):
            args += [f"--{key}"] if value else [f"{key}=false"]
        elif isinstance(value, list):
            args += [f"--{key}", *map(str, value)] if value else [f"{key}=[]"]
        else:
            args += [f"--{key}", str(value)]
    return shlex.join(args)


def run(cfg: Config) -> Path:
    cfg = cfg.sized()
    start = time.perf_counter()
    run_dirs = []
    for offset in range(cfg.seeds):
        seed = cfg.seed + offset
        run_dir = cfg.output if cfg.seeds == 1 else cfg.output / f"seed-{seed}"
        if cfg.seeds > 1:
            print(f"=== seed {seed} ({offset + 1}/{cfg.seeds}) ===", flush=True)
        Pipeline(cfg.model_copy(update={"seed": seed}), run_dir,
                 log=lambda line: print(line, flush=True)).run()
        run_dirs.append(run_dir)
    if cfg.seeds > 1:
        from egt.demo.report import write_seed_summary

        summary = write_seed_summary(cfg, run_dirs, command_line(cfg))
        print(f"summary: {summary}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s on {platform.machine()} "
          f"(python {sys.version.split()[0]}, egt {__version__})")
    return cfg.output / ("report.md" if cfg.seeds == 1 else "summary.md")
