"""Experiment files: every error names the file, the line and the key (or the --set option); paths resolve."""

from __future__ import annotations

import re

import pytest

from llm4rec.errors import InputError
from llm4rec.experiments.config import _locate, load_config

HEAD = """\
name = "toy"
[data]
path = "ratings.csv"
[protocol]
name = "loo"
[report]
baseline = "ease"
[[models]]
name = "pop"
[[models]]
name = "ease"
settings = { l2 = 10.0 }
"""  # 12 lines


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "ratings.csv").write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{u},i{(u + t) % 9},{t}\n" for u in range(6) for t in range(5)))
    return tmp_path


def write(folder, text: str):
    path = folder / "exp.toml"
    path.write_text(text)
    return path


def test_a_file_gets_every_default_and_its_paths_resolved(folder, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # relative paths are the file's, not the cwd's
    config = load_config(write(folder, "[data]\npath = 'ratings.csv'\n[[models]]\nname = 'pop'\n"
                                       "[[models]]\nname = 'ease'\nlabel = 'ease-10'\nsettings = { l2 = 10.0 }\n"))
    assert config.name == "exp" and config.data.path == str(folder / "ratings.csv")
    assert (config.protocol.name, config.protocol.stage, config.protocol.seeds) == ("loo", "test", [2026])
    assert config.labels == ["pop", "ease-10"] and config.report.baseline == "pop" and config.report.metrics == []
    assert config.overrides == [] and config.source == folder / "exp.toml"


def test_environment_variables_expand_with_shell_defaults(folder, monkeypatch):
    monkeypatch.setenv("TOY_DATA", str(folder))
    monkeypatch.delenv("NOT_SET", raising=False)
    text = HEAD.replace('path = "ratings.csv"', 'path = "${TOY_DATA}/${NOT_SET:-ratings}.csv"')
    assert load_config(write(folder, text)).data.path == str(folder / "ratings.csv")
    monkeypatch.setenv("TOY_DATA", "")  # empty counts as unset for ${VAR:-default}
    text = HEAD.replace('path = "ratings.csv"', 'path = "${TOY_DATA:-.}/ratings.csv"')
    assert load_config(write(folder, text)).data.path == str(folder / "ratings.csv")
    with pytest.raises(InputError, match=r"line 3, key 'data.path': environment variable NOT_SET is not set"):
        load_config(write(folder, HEAD.replace('path = "ratings.csv"', 'path = "$NOT_SET/ratings.csv"')))


@pytest.mark.parametrize(("edit", "fragments"), [
    # unknown top-level key, with a suggestion
    (lambda t: t.replace('name = "toy"', 'nmae = "toy"'),
     ["line 1, key 'nmae': unknown key 'nmae'", "expected one of: name, data, protocol", "Did you mean 'name'?"]),
    # unknown key inside the second [[models]] entry: the key names it by label
    (lambda t: t + 'setings = { l2 = 1.0 }\n', ["line 13, key 'models.ease.setings': unknown key 'setings'",
                                                "Did you mean 'settings'?"]),
    # a wrong type
    (lambda t: t.replace('name = "loo"', 'name = "loo"\nseeds = "2026"'),
     ["line 6, key 'protocol.seeds': input should be a valid list", "got '2026'"]),
    (lambda t: t.replace('name = "loo"', 'name = "loo"\nseeds = [1,\n  "x"]'),
     ["line 7, key 'protocol.seeds[1]': input should be a valid integer"]),
    # an unknown model
    (lambda t: t.replace('name = "pop"', 'name = "popp"'),
     ["line 9, key 'models.popp.name': unknown model", "got 'popp'", "expected one of pop, itemknn"]),
    # a bad model setting inside an inline table
    (lambda t: t.replace("{ l2 = 10.0 }", '{ l2 = "big" }'),
     ["line 12, key 'models.ease.settings.l2': bad value for setting 'l2' of model 'ease'", "got 'big'"]),
    (lambda t: t.replace("{ l2 = 10.0 }", "{ l2 = 10.0, l3 = 1 }"),
     ["line 12, key 'models.ease.settings.l3': unknown setting 'l3' for model 'ease'", "expected one of: l2"]),
    # the dataset is missing
    (lambda t: t.replace('path = "ratings.csv"', 'path = "nope/ratings.csv"'),
     ["line 3, key 'data.path': dataset not found", "nope/ratings.csv"]),
    # two models with one label: the second is named
    (lambda t: t + '[[models]]\nname = "itemknn"\nlabel = "ease"\n',
     ["line 15, key 'models.ease.label': label 'ease' is used twice (also by model 2)"]),
    # the baseline is not among the labels
    (lambda t: t.replace('baseline = "ease"', 'baseline = "als"'),
     ["line 7, key 'report.baseline': the baseline is not among the models", "got 'als'",
      "expected one of the labels: pop, ease"]),
    (lambda t: t.replace('baseline = "ease"', 'baseline = "ease"\nmetrics = ["NDCG@10", "Recall@20"]'),
     ["line 8, key 'report.metrics[1]': loo does not report this metric", "expected some of HR@10, NDCG@10"]),
    # a loading option the detected format does not take
    (lambda t: t.replace('path = "ratings.csv"', 'path = "ratings.csv"\ntags = true'),
     ["line 4, key 'data.tags': this option does not apply to csv data"]),
    # a search space element on its own line of a multi-line array
    (lambda t: t + '[[models]]\nname = "itemknn"\ntune = { space = [\n  "neighbors=[5,10]",\n  "l3=[1,2]",\n] }\n',
     ["line 17, key 'models.itemknn.tune.space[1]': search space parameter 'l3'"]),
    (lambda t: t.replace('name = "loo"', 'name = "P-LOO"\nstage = "valid"') + 'tune = { space = ["l2=[1,2]"] }\n',
     ["line 14, key 'models.ease.tune': a tuned model needs protocol.stage = \"test\""]),
    # not TOML at all
    (lambda t: t.replace('baseline = "ease"', 'baseline = ease'), ["line 7: not valid TOML"]),
])
def test_errors_name_the_file_the_line_and_the_key(folder, edit, fragments):
    path = write(folder, edit(HEAD))
    with pytest.raises(InputError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_set_overrides_go_through_the_same_validation(folder, monkeypatch):
    monkeypatch.chdir(folder)
    path = write(folder, HEAD)
    config = load_config(path, ["protocol.seeds=[7, 11]", "models.ease.settings.l2=200", "report.baseline=popular",
                                "models.pop.label=popular", "name=renamed"])
    assert config.protocol.seeds == [7, 11] and config.models[1].settings == {"l2": 200}
    assert config.report.baseline == "popular" and config.labels == ["popular", "ease"] and config.name == "renamed"
    assert load_config(path, ["protocol.seeds=[7]"], seeds=[1, 2]).protocol.seeds == [1, 2]
    assert load_config(path, seeds=[3]).overrides == ["--seeds 3"]
    # a --set path is relative to the current directory
    assert load_config(folder / "exp.toml", ["data.path=ratings.csv"]).data.path == str(folder / "ratings.csv")


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["models.ease.settings.l2=abc"], "--set models.ease.settings.l2=abc: bad value for setting 'l2' of model "
                                      "'ease'"),
    (["models.eas.settings.l2=1"], "--set models.eas.settings.l2=1: no model labelled 'eas' (got 'eas'; expected "
                                   "one of: pop, ease)"),
    (["protocol.seeds=[7, \"x\"]"], "--set protocol.seeds=[7, \"x\"]: input should be a valid integer"),
    (["protocol.sedes=[7]"], "--set protocol.sedes=[7]: unknown key 'sedes'"),
    (["report.baseline=als"], "--set report.baseline=als: the baseline is not among the models"),
    (["data.path=missing.csv"], "--set data.path=missing.csv: dataset not found"),
    (["protocol"], "bad option --set protocol"),
    (["name.x=1"], "--set name.x=1: name is a value, not a table"),
    (["models.ease=1"], "--set models.ease=1: a model is set one key at a time"),
])
def test_a_bad_set_names_the_option_instead_of_a_line(folder, monkeypatch, overrides, fragment):
    monkeypatch.chdir(folder)
    with pytest.raises(InputError) as caught:
        load_config(write(folder, HEAD), overrides)
    message = str(caught.value)
    assert fragment in message and not re.search(r"line \d", message), message


def test_the_locator_finds_tables_keys_and_array_elements():
    text = '''\
title = """a "quoted"
[not a table]"""   # a comment [x]
"a.b".'c' = 1
[[models]]
name = 'x'
  [models.tune]
  space = [ "p=[1,2]",  # first
    'q=log(1,2)' ]
[[models]]
settings = { lora = { rank = 8 }, l2 = 1979-05-27 07:32:00 }
[[models.extra]]
n = [[1, 2], [3]]
'''
    lines = _locate(text)
    assert lines[("title",)] == 1 and ("not a table",) not in lines
    assert lines[("a.b",)] == lines[("a.b", "c")] == 3
    assert lines[("models", 0)] == 4 and lines[("models", 0, "name")] == 5
    assert lines[("models", 0, "tune")] == 6 and lines[("models", 0, "tune", "space", 0)] == 7
    assert lines[("models", 0, "tune", "space", 1)] == 8
    assert lines[("models", 1)] == 9 and lines[("models", 1, "settings", "lora", "rank")] == 10
    assert lines[("models", 1, "settings", "l2")] == 10
    assert lines[("models", 1, "extra", 0)] == 11 and lines[("models", 1, "extra", 0, "n", 1, 0)] == 12


def test_messages_are_one_paragraph(folder):
    with pytest.raises(InputError) as caught:
        load_config(write(folder, HEAD.replace("{ l2 = 10.0 }", "{ l2 = -1.0 }")))
    assert "\n" not in str(caught.value) and re.search(r"line 12, key 'models\.ease\.settings\.l2'",
                                                         str(caught.value))
