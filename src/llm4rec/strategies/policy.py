"""The ``Policy`` interface: choose a slate of k items for a context, learn from feedback.

A round: ``slate = policy.select(context, candidates, k)`` shows
``slate.items`` (best first, position 0 = top), the user answers with one
reward per shown item, ``policy.update(Feedback(context, slate.items,
rewards))``. ``slate.propensities[j]`` is the probability that the policy
put ``slate.items[j]`` at position j in this round, what off-policy
estimators and logging need. ``distribution`` gives the whole
action-by-position distribution for off-policy evaluation without
touching the policy's state.

Every policy is deterministic for its ``seed`` and saves as ``config.json``
+ ``state.npz`` (no pickle); :func:`load_policy` reads any saved policy.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from llm4rec._atomic import atomic_dir
from llm4rec.errors import InputError

__all__ = ["POLICIES", "Feedback", "Policy", "Slate", "create_policy", "load_policy", "policy_class"]

#: policy name -> "module:Class", imported lazily (add every new policy here)
POLICIES: dict[str, str] = {
    "uniform": "llm4rec.strategies.logged:UniformPolicy",
    "empirical": "llm4rec.strategies.logged:EmpiricalPolicy",
    "epsilon-greedy": "llm4rec.strategies.bandits:EpsilonGreedy",
    "ucb1": "llm4rec.strategies.bandits:UCB1",
    "thompson": "llm4rec.strategies.bandits:Thompson",
    "gaussian-thompson": "llm4rec.strategies.bandits:GaussianThompson",
    "linucb": "llm4rec.strategies.linear:LinUCB",
    "lin-thompson": "llm4rec.strategies.linear:LinThompson",
    "neural-linear": "llm4rec.strategies.neural_linear:NeuralLinear",
    "greedy": "llm4rec.strategies.greedy:Greedy",
    "slateq": "llm4rec.strategies.rl:SlateQ",
}


@dataclass(frozen=True)
class Slate:
    """What a policy shows in one round.

    Attributes:
        items: int64[k] action (item) indices, position 0 first.
        propensities: float64[k] P(items[j] at position j | context), in (0, 1].
    """

    items: np.ndarray
    propensities: np.ndarray


@dataclass(frozen=True)
class Feedback:
    """The answer to one shown slate.

    Attributes:
        context: float64[d] the round's context (None for context-free policies).
        items: int64[k] the shown actions, position 0 first.
        rewards: float64[k] one reward per shown action (e.g. click 0/1).
    """

    context: np.ndarray | None
    items: np.ndarray
    rewards: np.ndarray


def policy_class(name: str) -> type[Policy]:
    """The class of policy ``name`` (InputError for an unknown name)."""
    import importlib

    if name not in POLICIES:
        raise InputError("unknown policy", value=name, expected="one of " + ", ".join(POLICIES))
    module, _, attr = POLICIES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def create_policy(name: str, n_actions: int, **config: Any) -> Policy:
    """A new policy ``name`` over ``n_actions`` actions with these settings (InputError for an unknown one)."""
    import inspect

    klass = policy_class(name)
    params = inspect.signature(klass.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        known = [p for p in params if p not in ("self", "n_actions")]
        for key in config:
            if key not in known:
                raise InputError(f"unknown setting {key!r} for policy {name!r}", value=config[key],
                                 expected="one of: " + ", ".join(known))
    return klass(n_actions, **config)


class Policy(ABC):
    """Chooses slates over ``n_actions`` actions; see the module docstring.

    Subclasses set ``name``, take their settings as keyword arguments
    (stored in ``self.config``, JSON-serialisable), implement ``select``
    and, when they learn, ``update``; ``_state`` / ``_set_state`` expose
    their learned arrays.
    """

    name: ClassVar[str]

    def __init__(self, n_actions: int, *, seed: int = 0, **config: Any) -> None:
        if n_actions < 1:
            raise InputError("a policy needs at least one action", value=n_actions, expected=">= 1")
        self.n_actions, self.seed = int(n_actions), int(seed)
        self.config = dict(config)
        self.rng = np.random.default_rng(seed)

    @abstractmethod
    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        """The slate of k of ``candidates`` (int64[c] action indices) for ``context`` (float64[d] or None)."""

    def update(self, feedback: Feedback) -> None:
        """Learn from one round's feedback (no-op for fixed policies)."""

    def distribution(self, contexts: np.ndarray | None, n_rounds: int, k: int) -> np.ndarray:
        """float64[n_rounds, n_actions, k]: P(action a at position j) per round, every action a candidate.

        ``contexts``: float64[n_rounds, d] or None. Fixed policies override
        this with the exact distribution; the default raises.
        """
        raise InputError(f"policy {self.name!r} has no action distribution for off-policy evaluation",
                         expected="a policy that implements distribution()")

    def marginals(self, candidates: np.ndarray, k: int) -> np.ndarray:
        """float64[c, k]: P(candidates[i] at position j) if ``select`` were called now; the policy is unchanged.

        Used to log, beside a served slate, what another policy would have shown (the off-policy estimate
        of an experiment's other arm). Fixed and context-free policies implement it; the default raises.
        """
        raise InputError(f"policy {self.name!r} has no per-request marginals", expected="greedy, uniform, "
                         "epsilon-greedy, ucb1, thompson or gaussian-thompson")

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        return None

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``config.json`` and ``state.npz`` (no pickle) into directory ``path``.

        ``path`` must be new or empty; ``overwrite=True`` replaces a policy saved there before.
        """
        path = Path(path)
        if overwrite and path.exists() and not (path / "state.npz").is_file():
            raise InputError("not a saved policy directory, so it is not replaced", path=path,
                             expected="a new or empty directory, or a saved policy")
        meta = {"policy": self.name, "n_actions": self.n_actions, "seed": self.seed, "config": self.config,
                "rng": self.rng.bit_generator.state}
        with atomic_dir(path, replace=overwrite) as tmp:
            np.savez(tmp / "state.npz", **{k: np.asarray(v) for k, v in self._state().items()})
            (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=_plain) + "\n")
        return path


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays in configs."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def load_policy(path: str | Path) -> Policy:
    """A policy saved by :meth:`Policy.save`, in the state it was saved in (random stream included)."""
    path = Path(path)
    meta_path = path / "config.json"
    if not meta_path.exists():
        raise InputError("not a saved policy directory", path=path, expected="config.json and state.npz")
    meta = json.loads(meta_path.read_text())
    policy = create_policy(meta.get("policy"), meta["n_actions"], seed=meta["seed"], **meta["config"])
    policy.rng.bit_generator.state = meta["rng"]
    with np.load(path / "state.npz", allow_pickle=False) as z:
        policy._set_state({k: z[k] for k in z.files})
    return policy
