"""``evaluate --model-path``: a saved model scored as it is, never on targets it may have seen."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli._run import run


@pytest.fixture
def ratings_csv(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for u in range(50):
        lines += [f"u{u},i{i},{t}" for t, i in enumerate(rng.choice(np.arange(u % 2, 40, 2), size=10, replace=False))]
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_saved_model_is_evaluated_as_it_is(capsys, ratings_csv, tmp_path):
    data = ["--data", str(ratings_csv)]
    code, _, err = run(capsys, "evaluate", *data, "--model", "ease", "--set", "l2=5", "--save-model",
                       str(tmp_path / "m"), "--json", str(tmp_path / "fit.json"))
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", *data, "--model-path", str(tmp_path / "m"), "--json",
                         str(tmp_path / "saved.json"))
    assert code == 0, err
    fitted, saved = (json.loads((tmp_path / f"{x}.json").read_text()) for x in ("fit", "saved"))
    assert saved["metrics"] == fitted["metrics"] and saved["fit_seconds"] == 0
    assert saved["model_path"] == str(tmp_path / "m") and "no refit" in saved["evaluated_as"]
    assert saved["data_report"] == fitted["data_report"] and "no refit" in out


@pytest.mark.parametrize(("args", "fragment"), [
    (["--stage", "valid"], "among its fit interactions"),
    (["--protocol", "rand"], "another split"),
    (["--model", "pop"], "--model and --model-path disagree"),
    (["--save-model", "COPY"], "--save-model has nothing to save"),
])
def test_a_saved_model_is_refused_where_it_may_have_seen_the_targets(capsys, ratings_csv, tmp_path, args, fragment):
    run(capsys, "evaluate", "--data", str(ratings_csv), "--model", "ease", "--save-model", str(tmp_path / "m"))
    args = [a.replace("COPY", str(tmp_path / "copy")) for a in args]
    code, _, err = run(capsys, "evaluate", "--data", str(ratings_csv), "--model-path", str(tmp_path / "m"), *args)
    assert code == 2 and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "copy").exists()
