"""Logged bandit feedback: the OBD layout, generic tables, and errors that name the place."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from llm4rec.data.logs import BanditLogs, load_bandit_logs
from llm4rec.errors import InputError

HEADER = "action,position,reward,propensity,user_feature_0,context_0"


def write(tmp_path, rows, header=HEADER, name="logs.csv"):
    path = tmp_path / name
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_generic_csv_reads_actions_positions_and_context(tmp_path):
    path = write(tmp_path, ["0,0,1,0.5,a,0.1", "2,1,0,0.25,b,0.2", "1,0,0,1,a,0.3"])
    logs = load_bandit_logs(path)
    assert logs.n_rounds == 3 and logs.n_actions == 3 and logs.n_positions == 2 and logs.name == "logs"
    assert logs.action.tolist() == [0, 2, 1] and logs.position.tolist() == [0, 1, 0]
    assert logs.reward.tolist() == [1, 0, 0] and logs.propensity.tolist() == [0.5, 0.25, 1.0]
    np.testing.assert_allclose(logs.context, [[1, 0, 0.1], [0, 1, 0.2], [1, 0, 0.3]])  # one-hot, then floats
    assert logs.mean_reward == pytest.approx(1 / 3)


def test_obd_names_and_parquet_rows(tmp_path):
    pl.DataFrame({"item_id": [1, 0], "click": [0, 1], "propensity_score": [0.5, 1.5]}).write_parquet(
        tmp_path / "l.parquet")
    with pytest.raises(InputError, match=r"l\.parquet, column 'propensity_score': row 1: propensity outside "
                                         r"\(0, 1\].*got 1\.5"):
        load_bandit_logs(tmp_path / "l.parquet")


@pytest.mark.parametrize(("rows", "header", "fragments"), [
    (["0,0,1"], "action,position,reward", ["missing propensity column", "propensity_score"]),
    (["0,0,1,0.5,a,0", "1,0,0,0,a,0"], HEADER, ["line 3", "'propensity'", "outside (0, 1]", "got 0.0"]),
    (["0,0,1,1.2,a,0"], HEADER, ["line 2", "got 1.2"]),
    (["0,0,1,x,a,0"], HEADER, ["line 2", "'propensity'", "not a number", "'x'"]),
    (["-1,0,1,0.5,a,0"], HEADER, ["line 2", "'action'", "unknown action", "got -1"]),
    (["0,-1,1,0.5,a,0"], HEADER, ["line 2", "'position'", "unknown position", "got -1"]),
    (["0.5,0,1,0.5,a,0"], HEADER, ["line 2", "not a whole number"]),
    (["0,0,,0.5,a,0"], HEADER, ["line 2", "'reward'", "missing value"]),
])
def test_bad_rows_name_file_line_column_and_value(tmp_path, rows, header, fragments):
    with pytest.raises(InputError) as info:
        load_bandit_logs(write(tmp_path, rows, header))
    message = str(info.value)
    assert "logs.csv" in message
    for fragment in fragments:
        assert fragment in message, message


def test_declared_sizes_bound_actions_and_positions(tmp_path):
    path = write(tmp_path, ["0,1,1,0.5,a,0", "3,3,0,0.5,a,0"])
    with pytest.raises(InputError, match=r"line 3, column 'action': unknown action \(got 3; expected an action "
                                         r"in 0..2"):
        load_bandit_logs(path, n_actions=3)
    with pytest.raises(InputError, match=r"line 3, column 'position': unknown position \(got 3; expected a position "
                                         r"in 1..2"):
        load_bandit_logs(path, n_positions=2, position_base=1, n_actions=4)


def test_arrays_are_checked_too():
    ok = dict(action=np.array([0, 1]), position=np.array([0, 0]), reward=np.array([0.0, 1.0]), n_actions=2,
              n_positions=1)
    assert BanditLogs(propensity=np.array([0.5, 0.5]), **ok).n_rounds == 2
    with pytest.raises(InputError, match=r"row 1, propensity: propensity outside \(0, 1\]"):
        BanditLogs(propensity=np.array([0.5, -0.1]), **ok)


def test_a_directory_must_be_an_obd_campaign(tmp_path):
    with pytest.raises(InputError, match="not an Open Bandit Dataset campaign directory"):
        load_bandit_logs(tmp_path)


@pytest.mark.realdata
def test_obd_campaign_directory(shared_data):
    logs = load_bandit_logs(shared_data / "obd" / "random" / "men")
    assert (logs.n_rounds, logs.n_actions, logs.n_positions, logs.name) == (10000, 34, 3, "random/men")
    assert set(np.unique(logs.position)) == {0, 1, 2}
    np.testing.assert_allclose(logs.propensity, 1 / 34)
    assert logs.mean_reward == pytest.approx(0.0046)
    assert logs.context.shape[0] == 10000 and logs.action_context.shape[0] == 34
