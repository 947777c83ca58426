"""Online experiments and online metrics: arms assigned by a hash of the user id, readouts with intervals.

An experiment splits the users between two or more arms; an arm is a served
policy, a registry model version, or both. A user's arm is fixed by
``sha256(experiment name, user id)``, so every worker and every restart
agree, with no per-user state. Each slate served in an experiment is logged
with its arm and, for every other arm, the probability that arm would have
shown the same item at the same position (``shadow``). The readout gives
each arm's click-through rate with a Wilson 95% interval, a two-proportion
z-test between the first two arms, and the self-normalised IPS estimate of
each arm on the traffic of the others (the arm that was not served), per
shown position, with a delta-method 95% interval.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4rec.errors import InputError

if TYPE_CHECKING:
    import polars as pl

__all__ = ["assign", "check_arms", "online_series", "readout", "two_proportion", "wilson"]

#: normal quantile of a two-sided 95% interval
Z95 = 1.959963984540054
#: off-policy estimates on fewer effective samples than this are marked unsupported
MIN_ESS = 30


def check_arms(arms: list[dict], policies: list[str], versions: list[str] | None) -> list[dict]:
    """The arms, checked and normalised: names unique, policy served, version in the registry, shares > 0
    summing to 1 (they are rescaled); InputError naming the arm and field otherwise."""
    if not isinstance(arms, list) or len(arms) < 2:
        raise InputError("an experiment needs at least two arms", value=arms, expected="a list of 2 or more arms")
    out, names = [], set()
    for i, arm in enumerate(arms):
        where = f"arms[{i}]"
        name = str(arm.get("name") or "").strip()
        if not name or name in names:
            raise InputError(f"{where}.name missing or repeated", value=arm.get("name"), expected="a unique name")
        names.add(name)
        policy, version = arm.get("policy"), arm.get("model_version")
        if policy is not None and policy not in policies:
            raise InputError(f"{where}.policy is not served", value=policy, expected="one of " + ", ".join(policies))
        if version is not None:
            if versions is None:
                raise InputError(f"{where}.model_version needs a model registry", value=version,
                                 expected="serve a registry (llm4rec publish) to compare model versions")
            if version not in versions:
                raise InputError(f"{where}.model_version is not in the registry", value=version,
                                 expected="one of " + ", ".join(versions))
        share = arm.get("share", 1.0)
        if not isinstance(share, (int, float)) or not math.isfinite(share) or share <= 0:
            raise InputError(f"{where}.share must be a positive number", value=share, expected="> 0")
        out.append({"name": name, "policy": policy, "model_version": version, "share": float(share)})
    if len({(a["policy"], a["model_version"]) for a in out}) < len(out):
        raise InputError("two arms serve the same policy and model version", expected="arms that differ")
    total = sum(a["share"] for a in out)
    for a in out:
        a["share"] /= total
    return out


def assign(name: str, arms: list[dict], user: str) -> dict:
    """The arm of ``user`` in experiment ``name``: the same in every process, uniform over users by share."""
    digest = hashlib.sha256(f"{name}\x00{user}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    edge = 0.0
    for arm in arms:
        edge += arm["share"]
        if u < edge:
            return arm
    return arms[-1]


def wilson(successes: float, n: float) -> tuple[float, float, float]:
    """(rate, low, high): the Wilson score 95% interval of a binomial proportion; (0, 0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 0.0, 1.0
    p = successes / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def two_proportion(c1: float, n1: float, c2: float, n2: float) -> dict[str, float | None]:
    """Pooled two-proportion z-test of rate 2 against rate 1: {"z", "p_value", "lift"} (None where undefined)."""
    if n1 <= 0 or n2 <= 0:
        return {"z": None, "p_value": None, "lift": None}
    p1, p2 = c1 / n1, c2 / n2
    pooled = (c1 + c2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = 0.0 if se == 0 else (p2 - p1) / se
    return {"z": z, "p_value": math.erfc(abs(z) / math.sqrt(2)), "lift": None if p1 == 0 else p2 / p1 - 1}


def _snips(reward: np.ndarray, weight: np.ndarray) -> tuple[float, float, float]:
    """Self-normalised IPS of float64[n] rewards with float64[n] importance weights: (value, low, high)."""
    total = weight.sum()
    value = float((weight * reward).sum() / total)
    se = float(np.sqrt(((weight * (reward - value)) ** 2).sum()) / total)
    return value, value - Z95 * se, value + Z95 * se


def readout(experiment: dict, shown: pl.DataFrame, alpha: float = 0.05) -> dict[str, Any]:
    """The readout of ``experiment`` (as stored) from its impressions (``EventStore.experiment_impressions``)."""
    per_arm = []
    for arm in experiment["arms"]:
        rows = shown.filter(shown["arm"] == arm["name"])
        n, clicks = rows.height, float(rows["reward"].sum()) if rows.height else 0.0
        ctr, low, high = wilson(clicks, n)
        slates = int((rows["position"] == 0).sum()) if rows.height else 0
        per_arm.append({**arm, "slates": slates, "shown": n, "clicks": int(clicks), "ctr": ctr, "ctr_low": low,
                        "ctr_high": high})
    a, b = per_arm[0], per_arm[1]
    test = {"method": "two-proportion z-test", "arms": [a["name"], b["name"]],
            **two_proportion(a["clicks"], a["shown"], b["clicks"], b["shown"])}
    test["significant"] = test["p_value"] is not None and test["p_value"] < alpha
    return {"name": experiment["name"], "active": experiment["active"], "started": experiment["started"],
            "stopped": experiment["stopped"], "arms": per_arm, "test": test,
            "off_policy": [_off_policy(target, logging, shown, per_arm) for target in per_arm for logging in per_arm
                           if target["name"] != logging["name"]]}


def _off_policy(target: dict, logging: dict, shown: pl.DataFrame, per_arm: list[dict]) -> dict[str, Any]:
    """SNIPS estimate of ``target``'s CTR per shown position on the slates served to ``logging``'s users."""
    import polars as pl

    rows = shown.filter(shown["arm"] == logging["name"])
    out = {"target_arm": target["name"], "logging_arm": logging["name"], "estimator": "snips", "n": rows.height,
           "online_value": target["ctr"], "value": None, "low": None, "high": None, "supported": False}
    if rows.height == 0:
        return {**out, "note": "no traffic on the logging arm yet"}
    dtype = pl.Struct({arm["name"]: pl.List(pl.Float64) for arm in per_arm if arm["name"] != logging["name"]})
    target_p = rows.select(pl.col("shadow").str.json_decode(dtype).struct.field(target["name"])
                           .list.get(pl.col("position"), null_on_oob=True)).to_series()
    if target_p.null_count():
        return {**out, "note": "slates without the target's probabilities"}
    target_p = target_p.to_numpy()
    weight = target_p / rows["propensity"].to_numpy()
    if weight.sum() <= 0:
        return {**out, "note": "the target arm would never have shown what the logging arm showed"}
    value, low, high = _snips(rows["reward"].to_numpy(), weight)
    ess = float(weight.sum() ** 2 / (weight ** 2).sum())  # Kish's effective sample size
    deterministic = bool((rows["propensity"].to_numpy() >= 1.0).all())
    if deterministic and (target_p < 1).any():
        note = ("the logging arm is deterministic, so items it never shows are not covered: the estimate is "
                "biased wherever the target would show them")
    elif ess < MIN_ESS:
        note = f"only {ess:.0f} effective samples: too few for a reliable interval (wait for more traffic)"
    else:
        note = ""
    return {**out, "value": value, "low": low, "high": high, "ess": ess, "supported": not note, "note": note}


def online_series(counts: pl.DataFrame, bucket: int) -> dict[str, Any]:
    """CTR and conversion per time bucket and per (model version, policy, arm), and totals, with Wilson 95%
    intervals, from ``EventStore.online_counts``."""
    import polars as pl

    keys = ["model_version", "policy", "arm"]
    sums = [pl.col(c).sum() for c in ("slates", "shown", "clicks", "purchases")]
    series = counts.with_columns(pl.col("t").cast(pl.Int64)).sort(["t", *keys], nulls_last=True)
    totals = counts.group_by(keys).agg(sums).sort(keys, nulls_last=True)
    return {"bucket_seconds": bucket, "series": [_rates(r) for r in series.iter_rows(named=True)],
            "totals": [_rates(r) for r in totals.iter_rows(named=True)]}


def _rates(row: dict) -> dict[str, Any]:
    ctr, low, high = wilson(row["clicks"], row["shown"])
    conv, c_low, c_high = wilson(row["purchases"], row["shown"])
    return {**row, "clicks": int(row["clicks"]), "purchases": int(row["purchases"]), "ctr": ctr, "ctr_low": low,
            "ctr_high": high, "conversion": conv, "conversion_low": c_low, "conversion_high": c_high}
