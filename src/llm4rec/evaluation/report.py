"""Result tables for the terminal (rich) and comparison plots (matplotlib, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["comparison_table", "plot_comparison", "save_figure"]


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


def plot_comparison(rows: Sequence[dict[str, Any]], metrics: Sequence[str], path: str | Path, *,
                    title: str = "") -> Path:
    """Grouped bar chart of metrics per model, saved as PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = [r["model"] for r in rows]
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(metrics) * max(1, len(models)) / 3, 3.6))
    for j, r in enumerate(rows):
        ax.bar(x + j * width - 0.4 + width / 2, [r["metrics"].get(m, 0.0) for m in metrics], width,
               label=r["model"])
    ax.set_xticks(x, metrics)
    ax.set_ylabel("value (higher is better)")
    ax.set_title(title)
    ax.legend(fontsize="small", ncols=min(len(models), 5))
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it as a PNG to ``path`` atomically and close it."""
    import io

    import matplotlib.pyplot as plt

    from llm4rec._atomic import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
