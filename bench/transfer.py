"""Transfer through item text: ``sasrec-text`` trained on one catalogue, applied to another.

Amazon Beauty is cut in two halves of its second-level categories that
share no item: the source (Skin Care, Makeup, Fragrance) and the target
(Hair Care, Tools & Accessories, Bath & Body); each keeps the users with
at least 5 interactions inside it. (The Sports data we have carries no
item text, so it cannot be the target.) ``sasrec-text`` with its defaults
is trained on the whole source half and saved; on the target half's P-LOO
test stage it is then

* applied zero-shot (``llm4rec evaluate --model-path DIR``, ``epochs=0``),
* fine-tuned briefly (``--set epochs=1`` and ``epochs=3``),

beside pop, EASE (``l2=100``), ``sasrec-text`` trained on the target from
scratch with the same brief budget (3 epochs) and with its defaults. The
source model is also applied zero-shot to ml-100k P-LOO (another domain).
Nothing here is tuned: every setting is a default.

    python bench/transfer.py            # about 1 h on one core

Writes bench/results/transfer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
SOURCE = ("Skin Care", "Makeup", "Fragrance")
TARGET = ("Hair Care", "Tools & Accessories", "Bath & Body")


def half(ds, categories: tuple[str, ...], name: str, min_user: int = 5):
    """The interactions of ``ds`` with items of these second-level categories, as a new dataset."""
    import polars as pl

    from llm4rec.data import Dataset

    attrs = ds.item_attrs
    second = attrs["categories"].str.split(" > ").list.get(1, null_on_oob=True)
    keep_items = set(attrs.filter(second.is_in(list(categories)))["item_id"].to_list())
    frame = pl.DataFrame({"user_id": ds.users.tokens[ds.user], "item_id": ds.items.tokens[ds.item],
                          "timestamp": ds.timestamp})
    frame = frame.filter(pl.col("item_id").is_in(list(keep_items)))
    counts = frame.group_by("user_id").len()
    frame = frame.filter(pl.col("user_id").is_in(counts.filter(pl.col("len") >= min_user)["user_id"].to_list()))
    return Dataset.from_frame(frame, name=name, item_attrs=attrs, text_fields=ds.text_fields)


def main() -> None:
    from llm4rec.data import make_split
    from llm4rec.data.sources import load_dataset
    from llm4rec.evaluation.experiment import run_experiment
    from llm4rec.models import create_model, transfer_settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source-dir", default="/tmp/llm4rec-transfer/beauty-face",
                    help="where the source model is saved (reused when it exists)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "transfer.json"))
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else []

    def keep(record: dict) -> None:
        key = ("dataset", "label")
        results[:] = [r for r in results if tuple(r.get(k) for k in key) != tuple(record.get(k) for k in key)]
        results.append(record)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")

    beauty = load_dataset(DATA / "amazon-beauty")
    source, target = half(beauty, SOURCE, "beauty-face"), half(beauty, TARGET, "beauty-body")
    shared = set(source.items.tokens) & set(target.items.tokens)
    assert not shared, "the halves must not share items"
    print(f"source {source}, target {target}", flush=True)
    src_dir = Path(args.source_dir)
    if not (src_dir / "config.json").exists():
        t0 = time.perf_counter()
        model = create_model("sasrec-text", {"seed": 2026}).fit(source)
        model.save(src_dir)
        keep({"dataset": source.name, "label": "source model (sasrec-text defaults, all of the source half)",
              "n_users": source.n_users, "n_items": source.n_items, "n_interactions": source.n_interactions,
              "fit_seconds": round(time.perf_counter() - t0, 1), "training": model.train_summary_})
    _, base = transfer_settings(src_dir)
    runs = [("pop", "pop", {}), ("ease", "EASE l2=100", {"l2": 100.0}),
            ("sasrec-text", "zero-shot transfer", base),
            ("sasrec-text", "transfer + 1 epoch", {**base, "epochs": 1}),
            ("sasrec-text", "transfer + 3 epochs", {**base, "epochs": 3}),
            ("sasrec-text", "from scratch, 3 epochs", {"epochs": 3}),
            ("sasrec-text", "from scratch, defaults", {})]
    ml100k = load_dataset(DATA / "ml-100k")
    for ds, todo in ((target, runs), (ml100k, [runs[0], runs[2], runs[4], runs[6]])):
        split = make_split(ds, "loo")
        for model, label, settings in todo:
            exp = run_experiment(ds, model, protocol="loo", settings=settings, split=split)
            rec = exp.record
            rec.update(label=label, n_items=ds.n_items, training=getattr(exp.model, "train_summary_", None))
            keep(rec)
            print(f"{ds.name:12s} {label:26s} NDCG@10 {rec['metrics']['NDCG@10']:.4f} "
                  f"HR@10 {rec['metrics']['HR@10']:.4f} fit {rec['fit_seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
