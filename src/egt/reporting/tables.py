"""Shared report helpers: Markdown tables, number formatting, matplotlib figures.

Figures are drawn with the non-interactive Agg backend (no display needed) and
saved as PNG at a resolution fit for a paper draft. Used by `egt analyze`,
`egt eval` and `egt demo`; JSON and text files are written by egt.core.files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from egt.core.files import atomic_write_bytes

FIGURE_DPI = 120
FIGURE_SIZE_IN = (8.0, 5.0)  # 960 x 600 px at FIGURE_DPI


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers for tables: floats to `digits` decimals, NaN/None as '–', ints as is."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""
    def cell(value):
        return fmt(value, digits).replace("|", "\\|")

    def numeric(value):
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)

    align = ["---:" if rows and numeric(rows[0][i]) else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib.pyplot on the Agg backend (safe on headless machines and in tests)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def new_figure(ncols: int = 1, width_in: float | None = None):
    plt = pyplot()
    width = width_in or FIGURE_SIZE_IN[0] * (1 if ncols == 1 else 0.75 * ncols)
    fig, axes = plt.subplots(1, ncols, figsize=(width, FIGURE_SIZE_IN[1]), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, path: str | Path) -> Path:
    """Save as PNG (tight layout) and free the figure's memory."""
    import io

    plt = pyplot()
    path = Path(path)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
              title: str, xlabel: str, ylabel: str, ylim: tuple[float, float] | None = None,
              xticks: Sequence[float] | None = None, xticklabels: Sequence[str] | None = None,
              reference: float | None = None, reference_label: str = "", marker: str | None = "o") -> Path:
    """One line (with markers unless marker=None) per series name -> (x, y); optional horizontal reference line."""
    fig, (ax,) = new_figure()
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker=marker, linewidth=2, label=name)
    if reference is not None and math.isfinite(reference):
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label=reference_label or None)
    if xticks is not None:
        ax.set_xticks(list(xticks))
        if xticklabels is not None:
            ax.set_xticklabels(list(xticklabels))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=13)
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    return save_figure(fig, path)


def split_histograms(panels: list[tuple[str, dict[str, Sequence[float]]]], path: str | Path, *,
                     title: str, xlabel: str, bins: int = 20) -> Path:
    """Side-by-side panels; each overlays one histogram per group on shared bin edges."""
    fig, axes = new_figure(ncols=len(panels))
    for ax, (panel_title, groups) in zip(axes, panels):
        finite = [np.asarray(v, dtype=float)[np.isfinite(np.asarray(v, dtype=float))] for v in groups.values()]
        every = np.concatenate(finite) if finite else np.zeros(0)
        low, high = (float(every.min()), float(every.max())) if every.size else (0.0, 1.0)
        if high <= low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, bins + 1)
        for (name, _), values in zip(groups.items(), finite):
            ax.hist(values, bins=edges, alpha=0.55, label=f"{name} (n={values.size})",
                    edgecolor="black", linewidth=0.4)
        ax.set_title(panel_title, fontsize=11)
        ax.set_xlabel(xlabel, fontsize=11)
        ax.set_ylabel("pairs", fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=9)
    fig.suptitle(title, fontsize=13)
    return save_figure(fig, path)
