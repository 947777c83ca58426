"""While a neural model trains, evaluate shows epoch i/N, loss, the validation metric, elapsed and time left."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import numpy as np

import llm4rec.cli._training as training
from llm4rec.cli._training import TrainingDisplay
from llm4rec.cli.main import main


def test_epoch_lines_know_the_best_epoch_and_the_time_left(monkeypatch):
    from rich.console import Console
    from rich.progress import Progress

    ticks = iter([0.0, 10.0, 20.0, 30.0])
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    buf = io.StringIO()
    progress = Progress(console=Console(file=buf, width=200), disable=True)
    display = TrainingDisplay(progress, prefix="m: ")
    state = SimpleNamespace(options=SimpleNamespace(epochs=3), batches_per_epoch=2, monitor="valid_NDCG@10",
                            best_epoch=None, best_value=None, epoch=1)
    display.on_train_begin(state)
    for epoch, value, best in ((1, 0.2, 1), (2, 0.1, 1), (3, 0.15, 1)):
        state.epoch = epoch
        display.on_batch_end(state, 1.0)
        display.on_batch_end(state, 0.5)
        assert progress.tasks[0].description == f"m: epoch {epoch}/3 · loss 0.7500"
        state.best_epoch, state.best_value = best, 0.2
        display.on_epoch_end(state, {"epoch": epoch, "loss": 0.75, "valid_NDCG@10": value, "seconds": 10.0})
    display.on_train_end(state)
    assert buf.getvalue().splitlines() == [
        "m: epoch 1/3 · loss 0.7500 · NDCG@10 0.2000 (best) · 10s elapsed · ≤ 20s left",
        "m: epoch 2/3 · loss 0.7500 · NDCG@10 0.1000 (best 0.2000 at epoch 1) · 20s elapsed · ≤ 10s left",
        "m: epoch 3/3 · loss 0.7500 · NDCG@10 0.1500 (best 0.2000 at epoch 1) · 30s elapsed",
    ]
    assert progress.tasks == []


def test_evaluate_prints_one_line_per_epoch_on_stderr(capsys, tmp_path):
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for u in range(40):
        lines += [f"u{u},i{i},{t}" for t, i in enumerate(rng.choice(np.arange(u % 2, 30, 2), size=8, replace=False))]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    code = main(["evaluate", "--data", str(tmp_path / "log.csv"), "--model", "sasrec", "--set", "epochs=3",
                 "--set", "patience=0", "--set", "dim=8", "--set", "layers=1", "--set", "max_len=8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    epochs = [line for line in err.splitlines() if line.startswith("sasrec: epoch")]
    pattern = r"sasrec: epoch {}/3 · loss \d+\.\d{{4}} · NDCG@10 \d\.\d{{4}} \(best.*\) · [\d.]+s elapsed"
    assert len(epochs) == 3 and all(re.fullmatch(pattern.format(i + 1) + (r" · ≤ [\d.]+s left" if i < 2 else ""), e)
                                    for i, e in enumerate(epochs)), epochs
    assert "epoch" not in out
