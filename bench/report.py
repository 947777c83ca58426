"""Render bench/results/*.json as the markdown tables of bench/RESULTS.md (printed to stdout)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def baselines_table(records: list[dict]) -> str:
    lines = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["protocol"]), []).append(r)
    for (dataset, protocol), rows in groups.items():
        metrics = list(rows[0]["metrics"])
        extra = list(rows[0].get("extra_metrics", {}))
        ranking = rows[0].get("ranking", "full")
        ranking = "full ranking" if ranking == "full" else ranking.replace("sampled", "sampled ranking")
        lines.append(f"\n#### {dataset}, {protocol}, {ranking}, {rows[0]['n_users_evaluated']} users\n")
        head = ["model", "chosen settings (valid stage)", *metrics, *extra, "fit s", "eval s", "peak RSS MiB"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        best = {m: max(r["metrics"][m] for r in rows) for m in metrics}
        for r in rows:
            settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in r.get("chosen_settings", {}).items()) or "-"
            cells = [f"**{r['metrics'][m]:.4f}**" if r["metrics"][m] == best[m] else f"{r['metrics'][m]:.4f}"
                     for m in metrics]
            cells += [f"{r['extra_metrics'][m]:.3f}" for m in extra]
            lines.append("| " + " | ".join([r["model"], settings, *cells, f"{r['fit_seconds']:.2f}",
                                            f"{r['eval_seconds']:.2f}", f"{r['peak_rss_mib']:.0f}"]) + " |")
    return "\n".join(lines)


def main() -> None:
    path = ROOT / "bench" / "results" / "baselines.json"
    if path.exists():
        print(baselines_table(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
