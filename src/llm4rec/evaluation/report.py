"""Result tables for the terminal (rich) and comparison plots (matplotlib, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["comparison_figure", "comparison_table", "mean_interval", "plot_comparison", "png_bytes", "save_figure"]


def comparison_table(rows: Sequence[dict[str, Any]], metrics: Sequence[str], *, title: str = ""):
    """A rich Table: one row per model (``{"model", "metrics", "fit_seconds", "eval_seconds"}``).

    The best value of each metric is shown in bold.
    """
    from rich.table import Table

    table = Table(title=title or None)
    table.add_column("model", style="cyan")
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column("fit s", justify="right", style="dim")
    table.add_column("eval s", justify="right", style="dim")
    best = {m: max((r["metrics"].get(m, float("-inf")) for r in rows), default=None) for m in metrics}
    for r in rows:
        cells = []
        for m in metrics:
            v = r["metrics"].get(m)
            text = "-" if v is None else f"{v:.4f}"
            cells.append(f"[bold]{text}[/bold]" if v is not None and v == best[m] else text)
        table.add_row(r["model"], *cells, f"{r.get('fit_seconds', 0):.2f}", f"{r.get('eval_seconds', 0):.2f}")
    return table


def mean_interval(values: np.ndarray, *, n_boot: int = 2000, seed: int = 2026,
                  alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval (level ``1 - alpha``) of the mean of per-user values float[n_users].

    Users are resampled with replacement ``n_boot`` times, as in
    :func:`~llm4rec.evaluation.significance.paired_test`.
    """
    from llm4rec.evaluation.significance import _bootstrap_means

    values = np.asarray(values, dtype=np.float64)
    means = _bootstrap_means(values, n_boot, np.random.default_rng(seed))
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def comparison_figure(rows: Sequence[dict[str, Any]], metrics: Sequence[str], *, title: str = "",
                      note: str = ""):
    """Grouped bar chart: one group per metric, one bar per model (a matplotlib Figure).

    A row may carry ``"intervals": {metric: [low, high]}`` (e.g. from
    :func:`mean_interval`), drawn as error bars, a ``"label"`` for the legend
    and ``"highlight": True`` (outlined bars). ``note`` goes under the axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6.5, 2.6 + 0.45 * len(metrics) * max(1, len(rows))), 4.2))
    colors = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20").colors
    for j, r in enumerate(rows):
        values = np.array([r["metrics"].get(m, np.nan) for m in metrics], dtype=float)
        spans = r.get("intervals") or {}
        yerr = None
        if spans:
            low = np.array([spans.get(m, (v, v))[0] for m, v in zip(metrics, values, strict=True)])
            high = np.array([spans.get(m, (v, v))[1] for m, v in zip(metrics, values, strict=True)])
            yerr = np.clip(np.vstack([values - low, high - values]), 0, None)  # (2, n_metrics)
        ax.bar(x + j * width - 0.4 + width / 2, values, width, yerr=yerr, capsize=3,
               error_kw={"elinewidth": 1, "ecolor": "0.2"}, label=r.get("label", r["model"]),
               color=colors[j % len(colors)], edgecolor="black" if r.get("highlight") else "none", linewidth=1.5)
    ax.set_xticks(x, metrics)
    ax.set_xlim(-0.5, len(metrics) - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("mean per evaluated user (higher is better)")
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if note:
        ax.annotate(note, xy=(0, -0.1), xycoords="axes fraction", va="top", fontsize="small", color="0.35")
    return fig


def plot_comparison(rows: Sequence[dict[str, Any]], metrics: Sequence[str], path: str | Path, *,
                    title: str = "", note: str = "") -> Path:
    """:func:`comparison_figure` saved as a PNG at ``path`` (written atomically)."""
    return save_figure(comparison_figure(rows, metrics, title=title, note=note), path)


def png_bytes(fig, dpi: int = 120) -> bytes:
    """Lay out ``fig``, render it as PNG bytes and close it."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it as a PNG to ``path`` atomically and close it."""
    from llm4rec._atomic import atomic_write_bytes

    atomic_write_bytes(path, png_bytes(fig, dpi))
    return Path(path)
