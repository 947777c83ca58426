"""Search-space specs: each syntax, its canonical spec, errors that name the parameter, checks against a model."""

from __future__ import annotations

import optuna
import pytest

from llm4rec.errors import InputError
from llm4rec.experiments.space import Param, check_space, parse_space, settings_for


def test_each_syntax_parses_to_its_range_or_choices():
    space = parse_space(["l2=log(10,2000)", "dropout=float(0, 0.5)", "rate=uniform(0.1,0.2)", "layers=int(1,4)",
                         "dim=intlog(16,256)", "factors=[32,64,128]", 'loss=["ce","bce"]', "augment=[crop, mask]",
                         "model.lora.rank=[4,8]", "flag=[true,false,null]"])
    assert space == {
        "l2": Param("l2", "float", 10.0, 2000.0, log=True),
        "dropout": Param("dropout", "float", 0.0, 0.5),
        "rate": Param("rate", "float", 0.1, 0.2),
        "layers": Param("layers", "int", 1, 4),
        "dim": Param("dim", "int", 16, 256, log=True),
        "factors": Param("factors", "choice", choices=(32, 64, 128)),
        "loss": Param("loss", "choice", choices=("ce", "bce")),
        "augment": Param("augment", "choice", choices=("crop", "mask")),
        "lora.rank": Param("lora.rank", "choice", choices=(4, 8)),
        "flag": Param("flag", "choice", choices=(True, False, None)),
    }
    assert [p.categorical for p in space.values()] == [False] * 5 + [True] * 5
    for param in space.values():  # the canonical spec reads back as the same parameter
        assert parse_space([param.spec()]) == {param.name: param}


def test_suggest_asks_optuna_for_the_right_distribution():
    space = parse_space(["l2=log(10,2000)", "layers=int(1,4)", "loss=[ce,bce]"])
    trial = optuna.trial.FixedTrial({"l2": 50.0, "layers": 3, "loss": "bce"})
    assert {n: p.suggest(trial) for n, p in space.items()} == {"l2": 50.0, "layers": 3, "loss": "bce"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = study.ask()
    values = {n: p.suggest(drawn) for n, p in space.items()}
    assert 10 <= values["l2"] <= 2000 and values["layers"] in range(1, 5) and values["loss"] in ("ce", "bce")
    assert drawn.distributions["l2"] == optuna.distributions.FloatDistribution(10, 2000, log=True)


@pytest.mark.parametrize(("spec", "fragments"), [
    ("l2=log(0,100)", ["'l2'", "positive low bound"]),
    ("l2=float(5,5)", ["'l2'", "LOW < HIGH"]),
    ("layers=int(1.5,4)", ["'layers'", "'1.5' is not a whole number"]),
    ("l2=float(a,3)", ["'l2'", "'a' is not a number"]),
    ("l2=log(1,inf)", ["'l2'", "not a finite number"]),
    ("l2=normal(1,3)", ["'l2'", "cannot read the range", "log(LOW,HIGH)"]),
    ("factors=[]", ["'factors'", "empty"]),
    ("factors=[32,64,32]", ["'factors'", "choice 32 is listed twice"]),
    ("factors=[32,64", ["'factors'", "no closing ']'"]),
    ('lora=[{"rank": 4}]', ["'lora'", "lora.rank=[4,8]"]),
    ("l2", ["'l2'", "NAME=RANGE"]),
    ("l2=", ["'l2'", "no range or choices"]),
    ("2x=[1]", ["'2x'", "NAME=RANGE"]),
])
def test_a_bad_spec_names_the_parameter_and_the_syntax(spec, fragments):
    with pytest.raises(InputError) as err:
        parse_space([spec])
    for fragment in fragments:
        assert fragment in str(err.value)


def test_a_parameter_given_twice_or_with_its_own_field_is_refused():
    with pytest.raises(InputError, match="'l2': given twice"):
        parse_space(["l2=[1,2]", "l2=log(1,9)"])
    with pytest.raises(InputError, match="'lora.rank': conflicts with 'lora'"):
        parse_space(["lora=[a,b]", "lora.rank=[4,8]"])


def test_settings_for_sets_dotted_names_into_the_fixed_settings():
    fixed = {"epochs": "5", "lora": {"alpha": "16"}}
    assert settings_for({"l2": 3.0, "lora.rank": 8}, fixed) == {"epochs": "5", "l2": 3.0,
                                                                "lora": {"alpha": "16", "rank": 8}}
    assert fixed == {"epochs": "5", "lora": {"alpha": "16"}}  # not modified
    with pytest.raises(InputError, match="'epochs' is also a fixed setting"):
        settings_for({"epochs": 3}, fixed)
    with pytest.raises(InputError, match="'epochs.x' is inside the fixed setting 'epochs'"):
        settings_for({"epochs.x": 3}, fixed)


def test_check_space_names_a_setting_the_model_does_not_have_or_refuses():
    check_space(parse_space(["l2=log(10,2000)"]), "ease")
    with pytest.raises(InputError) as err:
        check_space(parse_space(["l3=[1,2]"]), "ease")
    assert "search space parameter 'l3': unknown setting 'l3' for model 'ease'" in str(err.value)
    with pytest.raises(InputError, match="search space parameter 'l2': bad value"):
        check_space(parse_space(["l2=[-5,10]"]), "ease")  # every choice is checked, not only the first
    with pytest.raises(InputError, match="search space parameter 'loss'"):
        check_space(parse_space(["loss=[ce,hinge]"]), "sasrec")
    with pytest.raises(InputError, match="'l2' is also a fixed setting"):
        check_space(parse_space(["l2=[1,2]"]), "ease", {"l2": "3"})
    with pytest.raises(InputError, match="unknown setting 'nope'"):  # a bad fixed setting is reported as such
        check_space(parse_space(["l2=[1,2]"]), "ease", {"nope": "3"})
