"""`egt rerank`: best-of-N with a trained judge, by a round-robin or knockout tournament.

    egt rerank --model runs/sft/model --candidates candidates.jsonl --output runs/rerank
    egt rerank --model runs/sft/model --candidates candidates.jsonl --output runs/rerank_ko --method knockout

Input rows (.jsonl or .parquet): `id`, `images` (as in a pairs file), `question`, `candidates`
(a list of at least two responses) and optionally `best`: the 0-based index of the known best
candidate, which turns on top-1 accuracy in the summary.

A match is one egt.judge.api comparison of two candidates (both orders by default, so neither
position is favoured, `samples` judgements per order); a candidate's score in a match is its
vote share (judgements without a verdict count for neither).
- `round_robin`: every two candidates meet once (N(N-1)/2 matches); a candidate's score is the
  sum of its vote shares; the best has the highest score.
- `knockout`: candidates meet in bracket order (0-1, 2-3, ... of each round); the higher vote
  share goes on, an odd one out gets a bye; N - 1 matches, in ceil(log2 N) rounds.
Ties go to the lower index (shuffle the candidates if their order carries information).

Output folder (a run folder, egt.core.runfolder: one writer at a time, `.egt.lock`):
- fingerprint.json  what the matches depend on: the candidates file's SHA-256, the model folder's files (an
  endpoint: its URL and served model name) and the judging settings, as `egt judge` records them (see
  there); a rerun with any of them changed is refused, naming it, while matches.jsonl holds matches
  (`overwrite=true` discards them). `method` and `limit` may change: the matches of one are reused by another.
- matches.jsonl   append-only (egt.core.files.Journal), one comparison per match, by `<id>\\t<i>\\t<j>` (i < j;
  response 1 = candidate i), without the traces; a rerun skips judged chunks and judges a chunk a kill
  left partly written again whole (egt.core.files.batches_to_run).
- rankings.jsonl  one row per question: `id`, `best`, `scores` (per candidate: round robin the sum of
  vote shares, knockout the round it reached), `matches` judged, and `best_true`, `correct`.
- summary.json    questions, N, method, matches, top-1 accuracy and the random pick's 1/N (with `best`).

Departure: the paper does not rerank; this is egt's use of the trained judge.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from egt.core import runfolder, selective
from egt.core.errors import DataError
from egt.core.files import Journal, batches_to_run, check_unique_ids, write_json
from egt.core.images import DEFAULT_LIMITS, ImageLimits
from egt.core.records import ImageRef, image_root_of, read_rows, write_rows
from egt.judge.api import Judge, JudgeOptions, build_backend, make_pair
from egt.judge.verdicts import (
    chunk_size,
    has_journal_records,
    image_root_settings,
    judge_fingerprint,
    open_judge_early,
)

LOG_NAME = "matches.jsonl"
# What `egt rerank` writes in its folder (rerank_settings.json: what egt wrote before fingerprints).
OWNED = (LOG_NAME, "rankings.jsonl", "summary.json", "rerank_settings.json")


class Config(JudgeOptions):
    candidates: Path = Field(..., description="questions with candidates (.jsonl or .parquet)")
    output: Path = Field(..., description="output folder")
    method: Literal["round_robin", "knockout"] = Field("round_robin", description="tournament")
    limit: int | None = Field(None, ge=1, description="rerank only the first N questions")
    image_root: Path | None = Field(None, description="folder image paths resolve against and stay inside "
                                                      "(default: the candidates file's folder)")
    allow_absolute_paths: bool = Field(False, description="read absolute image paths outside image_root")
    overwrite: bool = Field(False, description="discard matches of another candidates file, model or settings "
                                               "in output")
    progress: bool = True


# ---------------------------------------------------------------- input

def read_candidates(path: Path, image_root: Path | None = None, allow_absolute_paths: bool = False,
                    limits: ImageLimits = DEFAULT_LIMITS) -> list[dict]:
    """Questions as dicts: id, images (ImageRefs, checked against their root as egt.core.records.read_pairs
    checks them), question, candidates, best (or None)."""
    path = Path(path)
    first_line = 1 if path.suffix.lower() in (".jsonl", ".json", ".ndjson") else 0
    base, recorded = image_root_of(path, image_root)
    out = []
    for i, row in enumerate(read_rows(path)):
        line = i + first_line
        for name in ("id", "question", "candidates"):
            if name not in row:
                raise DataError(str(path), line, name, "missing required field")
        candidates = row["candidates"]
        if not isinstance(candidates, (list, tuple)) or len(candidates) < 2 or \
                not all(isinstance(c, str) and c.strip() for c in candidates):
            raise DataError(str(path), line, "candidates", "must be a list of at least two non-empty strings")
        best = row.get("best")
        if best is not None and (not isinstance(best, int) or not 0 <= best < len(candidates)):
            raise DataError(str(path), line, "best", f"must be an index into the {len(candidates)} candidates")
        try:
            images = [ImageRef.from_row(v, base, allow_absolute_paths, recorded, (str(path), line), limits)
                      for v in (row.get("images") or [])]
        except TypeError as exc:
            raise DataError(str(path), line, "images", str(exc)) from None
        out.append({"id": str(row["id"]), "images": images, "question": row["question"],
                    "candidates": list(candidates), "best": best})
    check_unique_ids([q["id"] for q in out], path)
    return out


# ---------------------------------------------------------------- tournaments

def match_key(question_id: str, i: int, j: int) -> str:
    return f"{question_id}\t{min(i, j)}\t{max(i, j)}"


def share(log: dict[str, dict], question_id: str, i: int, j: int) -> float:
    """Candidate i's vote share in its match against j."""
    record = log[match_key(question_id, i, j)]
    return record["vote_share"][0 if i < j else 1]


def round_robin_matches(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def round_robin_scores(n: int, won) -> list[float]:
    """Sum over opponents of `won(i, j)`, i's vote share against j."""
    return [sum(won(i, j) for j in range(n) if j != i) for i in range(n)]


def knockout_round(alive: list[int], won) -> list[int]:
    """Winners of one round: alive[0] vs alive[1], ...; the higher share goes on, a tie to the lower index."""
    nxt = []
    for a in range(0, len(alive) - 1, 2):
        i, j = alive[a], alive[a + 1]
        nxt.append(i if won(i, j) >= won(j, i) else j)
    if len(alive) % 2:
        nxt.append(alive[-1])  # a bye
    return nxt


def best_index(scores: list[float]) -> int:
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


# ---------------------------------------------------------------- the command

class _Matches:
    """Judges the matches not yet in the journal, in fixed chunks of the wanted list (egt.core.files.
    batches_to_run: a chunk a kill left partly written is judged again whole), loading the judge on first need."""

    def __init__(self, cfg: Config, log: Journal, judge: Judge | None = None):
        self.cfg, self.log, self.done, self.judge = cfg, log, log.load(), judge

    def play(self, wanted: list[tuple[dict, int, int]], bar) -> None:
        matches = list({match_key(q["id"], i, j): (q, i, j) for q, i, j in wanted}.values())
        keys = [match_key(q["id"], i, j) for q, i, j in matches]
        chunks = batches_to_run(keys, self.done, chunk_size(self.cfg))
        bar.update(len(matches) - sum(len(c) for c in chunks))
        for positions in chunks:
            chunk = [matches[k] for k in positions]
            if self.judge is None:
                self.judge = Judge(build_backend(self.cfg), self.cfg)
            pairs = [make_pair(q["images"], q["question"], q["candidates"][i], q["candidates"][j])
                     for q, i, j in chunk]
            results = self.judge.compare_many(pairs)
            records = [{"key": match_key(q["id"], i, j), "id": q["id"], "i": i, "j": j, **c.to_dict(traces=False)}
                       for (q, i, j), c in zip(chunk, results)]
            self.log.append(records)
            self.done.update((r["key"], r) for r in records)
            bar.update(len(chunk))


def run(cfg: Config) -> Path:
    started = time.perf_counter()
    out = Path(cfg.output)
    questions = read_candidates(cfg.candidates, cfg.image_root, cfg.allow_absolute_paths, cfg.image_limits)
    if not questions:
        raise DataError(str(cfg.candidates), None, None, "no questions to rerank")
    questions = questions[:cfg.limit] if cfg.limit else questions
    for question in questions:
        for ref in question["images"]:
            ref.size()   # inside the root and within the pixel cap, before any work
    judge = open_judge_early(cfg)

    def fingerprint() -> dict:
        return judge_fingerprint(cfg, {"candidates": cfg.candidates}, judge.backend.model if judge else None,
                                 **image_root_settings(cfg.image_root, cfg.allow_absolute_paths))

    with runfolder.open_run_folder(out, "rerank", fingerprint=fingerprint, owned=OWNED, overwrite=cfg.overwrite,
                                   has_results=lambda: has_journal_records(out / LOG_NAME)):
        return _rerank(cfg, out, questions, _Matches(cfg, Journal(out / LOG_NAME, key="key"), judge), started)


def _rerank(cfg: Config, out: Path, questions: list[dict], matches: _Matches, started: float) -> Path:
    from tqdm.auto import tqdm

    sizes = [len(q["candidates"]) for q in questions]
    total = sum(n * (n - 1) // 2 if cfg.method == "round_robin" else n - 1 for n in sizes)
    rows = []
    with tqdm(total=total, desc=f"rerank ({cfg.method})", unit="match", disable=not cfg.progress,
              dynamic_ncols=True) as bar:
        if cfg.method == "round_robin":
            matches.play([(q, i, j) for q in questions for i, j in round_robin_matches(len(q["candidates"]))], bar)
            for q in questions:
                n = len(q["candidates"])
                scores = round_robin_scores(n, lambda i, j, q=q: share(matches.done, q["id"], i, j))
                rows.append({"id": q["id"], "best": best_index(scores), "scores": scores,
                             "matches": n * (n - 1) // 2})
        else:
            alive = {q["id"]: list(range(len(q["candidates"]))) for q in questions}
            reached = {q["id"]: [0] * len(q["candidates"]) for q in questions}
            depth = 0
            while any(len(a) > 1 for a in alive.values()):
                depth += 1
                wanted = [(q, a[k], a[k + 1]) for q in questions for a in [alive[q["id"]]]
                          for k in range(0, len(a) - 1, 2)]
                matches.play(wanted, bar)
                for q in questions:
                    if len(alive[q["id"]]) > 1:
                        alive[q["id"]] = knockout_round(alive[q["id"]],
                                                        lambda i, j, q=q: share(matches.done, q["id"], i, j))
                        for i in alive[q["id"]]:
                            reached[q["id"]][i] = depth
            for q in questions:
                rows.append({"id": q["id"], "best": alive[q["id"]][0], "scores": reached[q["id"]],
                             "matches": len(q["candidates"]) - 1})
    for q, row in zip(questions, rows):
        if q["best"] is not None:
            row["best_true"], row["correct"] = q["best"], row["best"] == q["best"]
    write_rows(rows, out / "rankings.jsonl")
    labelled = [r["correct"] for r in rows if "correct" in r]
    summary = {"questions": len(rows), "method": cfg.method, "candidates_min": min(sizes),
               "candidates_max": max(sizes), "matches": sum(r["matches"] for r in rows),
               "orders": cfg.orders, "samples": cfg.samples,
               "top1_accuracy": selective.accuracy(labelled) if labelled else None,
               "random_pick_accuracy": (sum(1 / len(q["candidates"]) for q in questions if q["best"] is not None)
                                        / len(labelled)) if labelled else None,
               "wall_s": round(time.perf_counter() - started, 3)}
    write_json(summary, out / "summary.json")
    accuracy = (f"; top-1 accuracy {summary['top1_accuracy']:.4f} (random pick {summary['random_pick_accuracy']:.4f})"
                if labelled else "")
    print(f"egt rerank: {len(rows)} questions, {summary['matches']} matches ({cfg.method}){accuracy}")
    return out
