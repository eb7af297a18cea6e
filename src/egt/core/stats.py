"""Statistics used across egt: ranks, AUROC, Spearman, and paired tests for comparing two judges.

Pure functions of arrays; the estimators come from SciPy and scikit-learn, so egt
keeps no hand-written copies of them:

- `average_ranks` (scipy.stats.rankdata, ties share their mean rank) and
  `percentile_ranks` (ranks scaled to [0, 1], undefined values placed highest or
  lowest) — what curation's hybrid score and the bucket curriculum use;
- `auroc` (sklearn.metrics.roc_auc_score on the ranks, so +-inf scores are fine) and
  `spearman` (scipy.stats.spearmanr); both NaN where the statistic is undefined (a class
  is empty, an input is constant or too short) instead of an exception or a warning;
- `mcnemar`, `paired_bootstrap`, `min_detectable_difference`: two judges scored on the
  SAME pairs (correct / wrong per pair) are compared pair by pair, which is far more
  sensitive than comparing two accuracies as if they were independent samples;
  `runs_interval`: the same comparison repeated over independent training runs, one
  observation per run (`compare_paired` uses it for several runs).

Formulas (b = pairs only judge A gets right, c = pairs only judge B gets right, n pairs):
- McNemar, exact: under H0 each discordant pair is A's with probability 1/2, so b ~
  Binomial(b + c, 1/2); the two-sided p-value is scipy.stats.binomtest's (for p = 1/2,
  min(1, 2 P(X <= min(b, c)))). The accuracy difference is (b - c) / n.
- Minimal detectable difference: the normal approximation to McNemar's test (Connor,
  1987). With discordant rate psi = (b + c) / n and difference delta = (b - c) / n, a
  two-sided test at level alpha has power `power` when
      sqrt(n) delta = z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2),
  whose positive root is
      delta = sqrt(psi) (z_a sqrt(n) + z_b sqrt(n + z_b^2 - z_a^2)) / (n + z_b^2),
  z_a = z_{1-alpha/2}, z_b = z_{power}. For large n this is (z_a + z_b) sqrt(psi / n).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

# ---------------------------------------------------------------- ranks

def average_ranks(values) -> np.ndarray:
    """1-based ranks, ties get the mean of the ranks they span (scipy.stats.rankdata, method average)."""
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(values).any():
        raise ValueError("average_ranks: resolve NaN first (see curriculum.resolve_missing)")
    return rankdata(values, method="average").astype(np.float64)


def percentile_ranks(values, missing: str = "highest") -> np.ndarray:
    """Percentile rank in [0, 1] of each value: lowest 0, highest 1, ties share their average rank.

    NaN/None (undefined entropy) rank above every value with missing="highest" (the default:
    a judgement without a verdict counts as maximally uncertain) or below with "lowest".
    A single value gets 0.5.
    """
    if missing not in ("highest", "lowest"):
        raise ValueError(f"missing must be 'highest' or 'lowest', got {missing!r}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)  # None -> NaN
    n = len(x)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.full(1, 0.5)
    x = np.where(np.isnan(x), np.inf if missing == "highest" else -np.inf, x)
    return (average_ranks(x) - 1.0) / (n - 1)


# ---------------------------------------------------------------- association

def auroc(scores, positives) -> float:
    """Area under the ROC curve of `scores` for `positives` (bool); NaN if a class is empty.

    A tie between a positive and a negative counts 1/2. +-inf scores are allowed (the
    undefined values that `curriculum.resolve_missing` places): the AUROC depends only on the
    ranks, so scikit-learn gets the average ranks, which are always finite.
    """
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positives = np.asarray(positives, dtype=bool).reshape(-1)
    if len(scores) != len(positives):
        raise ValueError(f"{len(scores)} scores but {len(positives)} labels")
    if positives.all() or not positives.any():
        return float("nan")
    return float(roc_auc_score(positives, average_ranks(scores)))


def spearman(x, y) -> float:
    """Spearman's rho (scipy.stats.spearmanr); NaN if either side is constant or has < 2 values."""
    from scipy.stats import spearmanr

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} x values but {len(y)} y values")
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic)


# ---------------------------------------------------------------- paired comparisons

def _paired(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired inputs differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("paired inputs are empty")
    return a, b


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test of two judges' correctness on the same pairs.

    Returns n, b (A right, B wrong), c (A wrong, B right), accuracy_a, accuracy_b,
    difference (accuracy_a - accuracy_b = (b - c) / n) and the two-sided p_value
    (1.0 when there is no discordant pair).
    """
    from scipy.stats import binomtest

    a, b_ = _paired(correct_a, correct_b)
    a, b_ = a.reshape(-1), b_.reshape(-1)
    n = int(a.size)
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return {"n": n, "b": b, "c": c, "accuracy_a": float(a.mean()), "accuracy_b": float(b_.mean()),
            "difference": (b - c) / n, "p_value": min(1.0, p_value)}


def paired_bootstrap(correct_a, correct_b, n_boot: int = 10000, seed: int = 0,
                     confidence: float = 0.95, block: int = 500) -> dict:
    """Mean accuracy difference A - B and its percentile bootstrap confidence interval.

    1-D inputs (one value per pair): pairs are resampled with replacement. 2-D inputs
    [seeds x pairs] (the same comparison repeated over training seeds): a hierarchical
    bootstrap -- each replicate draws the seeds with replacement and then, inside each
    drawn seed, its pairs with replacement -- so the interval covers seed-to-seed
    variation as well as the finite test set. Same inputs and seed -> same interval.
    """
    a, b = _paired(correct_a, correct_b)
    if a.ndim not in (1, 2):
        raise ValueError(f"expected [pairs] or [seeds x pairs], got shape {a.shape}")
    if n_boot < 1 or not 0 < confidence < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    if diff.ndim == 1:
        diff = diff[None, :]
    n_seeds, n_pairs = diff.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, block):
        reps = min(block, n_boot - start)
        seeds = rng.integers(0, n_seeds, size=(reps, n_seeds)) if n_seeds > 1 else np.zeros((reps, 1), dtype=np.int64)
        pairs = rng.integers(0, n_pairs, size=(reps, n_seeds, n_pairs))
        means[start:start + reps] = diff[seeds[:, :, None], pairs].mean(axis=(1, 2))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean_difference": float(diff.mean()), "ci_low": float(low), "ci_high": float(high),
            "confidence": confidence, "n_boot": int(n_boot), "n_seeds": int(n_seeds), "n_pairs": int(n_pairs)}


def min_detectable_difference(n_pairs: int, discordant_rate: float, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """Smallest accuracy difference a two-sided McNemar test at `alpha` detects with `power`.

    Normal approximation (module docstring). NaN when even the largest possible difference
    (all discordant pairs going one way, delta = discordant_rate) is not detectable.
    """
    from scipy.stats import norm

    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if not 0 < discordant_rate <= 1:
        raise ValueError(f"discordant_rate must be in (0, 1], got {discordant_rate}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    z_a, z_b = float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))
    n = float(n_pairs)
    inner = n + z_b * z_b - z_a * z_a
    if inner < 0:
        return float("nan")
    delta = math.sqrt(discordant_rate) * (z_a * math.sqrt(n) + z_b * math.sqrt(inner)) / (n + z_b * z_b)
    return delta if delta <= discordant_rate else float("nan")


def runs_interval(differences, alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean of per-run differences and its Student-t interval (n - 1 degrees of freedom).

    Each training run is one observation: its difference already carries the sampling of its test
    pairs, so the spread between runs covers both. With few runs a bootstrap over runs under-covers
    (it treats the runs drawn as the population: 5 runs, 2 of them ~0, still give an interval above 0);
    the t-interval is exact for normal differences and widens as it should (t_{0.975,2} = 4.30).
    """
    from scipy.stats import t as student_t

    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        raise ValueError("a t-interval over runs needs at least 2 runs")
    mean, half = float(d.mean()), float(student_t.ppf(1 - alpha / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return mean, mean - half, mean + half


def compare_paired(correct_a, correct_b, n_boot: int = 4000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Everything a report states about judge A vs judge B on the same pairs.

    `correct_a`, `correct_b`: [pairs] (one training run) or [runs x pairs] booleans. Returns the mean
    difference A - B and its 95% interval: one run, the paired bootstrap over its pairs (it covers the
    test set, not training randomness); several runs, the t-interval over the per-run differences
    (`runs_interval`, which covers run-to-run variation; `ci_bootstrap` keeps the hierarchical
    bootstrap's for reference). Also the exact McNemar p-value per run, the discordant rate and the
    smallest difference one run's test split detects (alpha, power 0.8) at that rate, and a verdict on
    the sign: `higher` / `lower` when the interval excludes 0, else `inconclusive`.
    """
    a, b = _paired(correct_a, correct_b)
    a2, b2 = (a[None, :], b[None, :]) if a.ndim == 1 else (a, b)
    boot = paired_bootstrap(a2 if a.ndim == 2 else a, b2 if a.ndim == 2 else b, n_boot=n_boot, seed=seed,
                            confidence=1 - alpha)
    tests = [mcnemar(x, y) for x, y in zip(a2, b2)]
    per_run = [t["difference"] for t in tests]
    if len(per_run) > 1:
        difference, low, high = runs_interval(per_run, alpha)
    else:
        difference, low, high = boot["mean_difference"], boot["ci_low"], boot["ci_high"]
    discordant = float(np.mean([(t["b"] + t["c"]) / t["n"] for t in tests]))
    mdd = min_detectable_difference(a2.shape[1], discordant, alpha) if discordant > 0 else float("nan")
    verdict = "higher" if low > 0 else "lower" if high < 0 else "inconclusive"
    return {"difference": difference, "ci_low": low, "ci_high": high,
            "ci_bootstrap": [boot["ci_low"], boot["ci_high"]],
            "per_seed": per_run, "p_values": [t["p_value"] for t in tests],
            "discordant_rate": discordant, "min_detectable": mdd, "verdict": verdict,
            "n_seeds": int(a2.shape[0]), "n_pairs": int(a2.shape[1])}
