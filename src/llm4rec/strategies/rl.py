"""``slateq``: a slate reinforcement-learning agent, SlateQ-style decomposed Q-learning (Ie et al., 2019).

The value of showing slate A in state s is decomposed over its items,
Q(s, A) = sum over i in A of Q(s, i), and each shown item's Q is learned by
temporal differences towards its own reward plus an equal share of the next
slate's value:

    y_i = r_i + gamma * (1 / k) * sum over i' in A' of Q_target(s', i')

A' = the top k of the next state's candidates by the online network (double
Q-learning), Q_target a slowly following copy (Polyak averaging with ``tau``).
Summed over the slate this is the slate-level Bellman equation, so the agent
maximises the discounted clicks of the whole session, not of one step: it
learns, for example, that re-showing what bored the user lowers what comes
later. SlateQ proper weighs items by a user-choice model; clicks here are
per-slot, so items are weighed equally (position effects are learned into
Q on average).

Q(s, i) is a small torch network of the context c (the state: for the
simulator, the user's taste vector, the recent exposure history and the
session's elapsed share) and three numbers per candidate: its rank in the
list, j / (c - 1) (callers list candidates best first, as the simulator does
by the recommender's score; ``use_rank=False`` sets it to 0); the agent's own
exposure trace of the item in this episode (e <- memory e + 1 for each item it
showed, cleared by :meth:`SlateQ.end_episode`: what a platform knows it has
shown); and the item's similarity to that exposure, u_i . sum_a e_a u_a with
u the unit rows of ``item_features`` (e.g. the simulator's item vectors).
Q = MLP(rank, trace, similarity) + w . c: the MLP carries what generalises
across users and items, the linear state term the value of the situation.
With ``factors`` > 0 a low-rank bilinear user-item term (P c) . (Q v_i) is
added; in the ML-100K simulator it overfitted (lower reward after 400
sessions) and it is off by default.

Exploration: with probability eps_t = epsilon / (1 + decay t) (t = updates so
far) the slate is a uniformly random ordered k of the candidates, otherwise
the top k by Q; propensities are exact as for ``epsilon-greedy``. Learning is
online: each ``update`` stores the round in a replay buffer (its next state is
the next ``select``'s context and candidates; :meth:`SlateQ.end_episode` marks
it terminal) and takes one Adam step on a minibatch. The agent learns from the
slates it chose: ``update`` follows a ``select`` with the same items.

Saved as network weights, optimizer moments and replay buffer in ``state.npz``
(no pickle); a loaded agent resumes at the start of an episode (a round still
waiting for its next state is not saved).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from llm4rec.errors import InputError
from llm4rec.strategies._common import check_feedback, check_request, check_setting
from llm4rec.strategies.policy import Feedback, Policy, Slate
from llm4rec.strategies.rerank import top_k

__all__ = ["SlateQ"]

_EXTRAS = 3  # per-candidate numbers: rank, exposure trace, similarity to the exposure


class _QNet(nn.Module):
    """Q(c, v, x) = MLP(x) + w . c (+ (P c) . (Q v) when factors > 0); x the candidate's (rank, trace, similarity)."""

    def __init__(self, context_dim: int, item_dim: int, hidden: int, factors: int) -> None:
        super().__init__()
        self.extra = nn.Sequential(nn.Linear(_EXTRAS, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, 1))
        self.state = nn.Linear(context_dim, 1)
        self.ctx = nn.Linear(context_dim, factors, bias=False) if factors else None
        self.item = nn.Linear(item_dim, factors, bias=False) if factors else None

    def forward(self, c: torch.Tensor, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """c (B, Dc), v (B, C, d), x (B, C, 3) -> Q (B, C)."""
        q = self.extra(x).squeeze(2) + self.state(c)  # (B, C)
        if self.ctx is not None:
            q = q + (self.item(v) * self.ctx(c)[:, None, :]).sum(dim=2)
        return q


class SlateQ(Policy):
    """Decomposed slate Q-learning with a torch network (see the module docstring).

    Settings: ``context_dim`` (length of the contexts), ``hidden`` (MLP
    width), ``factors`` (bilinear rank, 0 = none), ``gamma`` in [0, 1) (discount per step),
    ``lr``, ``epsilon`` / ``decay`` (exploration), ``memory`` in [0, 1) (decay
    per round of the exposure trace), ``batch_size``, ``buffer_size`` (replay
    capacity), ``max_candidates`` (longest candidate list a replayed next
    state keeps), ``tau`` (target-network averaging), ``use_rank``. Argument
    ``item_features``: float[n_actions, d] item vectors (kept in the saved
    state, not in the config).
    """

    name = "slateq"

    def __init__(self, n_actions: int, *, seed: int = 0, context_dim: int = 0, hidden: int = 32, factors: int = 0,
                 gamma: float = 0.9, lr: float = 1e-3, epsilon: float = 0.1, decay: float = 0.0, memory: float = 0.8,
                 batch_size: int = 64, buffer_size: int = 20000, max_candidates: int = 200, tau: float = 0.01,
                 use_rank: bool = True, item_features: np.ndarray | None = None) -> None:
        sizes = {"context_dim": context_dim, "hidden": hidden, "factors": factors, "batch_size": batch_size,
                 "buffer_size": buffer_size, "max_candidates": max_candidates}
        for key, value in sizes.items():
            low = 0 if key == "factors" else 1
            if int(value) != value or value < low:
                raise InputError(f"bad value for setting {key!r}", value=value, expected=f"an integer >= {low}")
        super().__init__(n_actions, seed=seed, **{k: int(v) for k, v in sizes.items()},
                         gamma=check_setting("gamma", gamma, 0.0, 1.0 - 1e-9),
                         lr=check_setting("lr", lr, 0.0, low_open=True),
                         epsilon=check_setting("epsilon", epsilon, 0.0, 1.0),
                         decay=check_setting("decay", decay, 0.0),
                         memory=check_setting("memory", memory, 0.0, 1.0 - 1e-9),
                         tau=check_setting("tau", tau, 0.0, 1.0, low_open=True), use_rank=bool(use_rank))
        self.rounds_ = 0
        self.trace_ = np.zeros(self.n_actions, dtype=np.float32)  # this episode's exposure of each action
        self._pending: tuple | None = None  # (context, items, extras, rewards) waiting for its next state
        self._last: tuple | None = None  # (context, candidates, extras) of the last select
        self._buffer: dict[str, np.ndarray] | None = None  # replay arrays, made at the first stored round
        self._size = self._pos = 0
        if item_features is not None:
            self._start(np.asarray(item_features, dtype=np.float32))
        # else a policy being loaded: _set_state restores the features and the networks

    # ------------------------------------------------------------ network
    def _start(self, item_features: np.ndarray) -> None:
        """Networks and optimizer over ``item_features`` float32[n_actions, d] (seeded by the policy's seed)."""
        if item_features.ndim != 2 or len(item_features) != self.n_actions or not np.isfinite(item_features).all():
            raise InputError("item_features must be finite, one row per action", value=item_features.shape,
                             expected=f"float[{self.n_actions}, d]")
        cfg = self.config
        self.item_features_ = torch.from_numpy(np.ascontiguousarray(item_features))
        norms = np.linalg.norm(item_features, axis=1, keepdims=True)
        self.unit_features_ = item_features / np.where(norms > 0, norms, 1.0)  # (n_actions, d)
        self.trace_vector_ = np.zeros(item_features.shape[1], dtype=np.float32)  # sum of trace_a * unit_a
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net_ = _QNet(cfg["context_dim"], item_features.shape[1], cfg["hidden"], cfg["factors"])
        self.target_ = _QNet(cfg["context_dim"], item_features.shape[1], cfg["hidden"], cfg["factors"])
        self.target_.load_state_dict(self.net_.state_dict())
        self.target_.requires_grad_(False)
        self.optimizer_ = torch.optim.Adam(self.net_.parameters(), lr=cfg["lr"])

    def _check_started(self) -> None:
        if not hasattr(self, "net_"):
            raise InputError("slateq has no item features", expected="item_features=float[n_actions, d] when "
                                                                    "creating the policy")

    def _context(self, context: np.ndarray | None) -> np.ndarray:
        dc = self.config["context_dim"]
        c = None if context is None else np.asarray(context, dtype=np.float32)
        if c is None or c.shape != (dc,) or not np.isfinite(c).all():
            raise InputError("slateq needs a finite context of length context_dim",
                             value=None if c is None else c.shape, expected=f"float[{dc}]")
        return c

    def _extras(self, cands: np.ndarray) -> np.ndarray:
        """float32[c, 3] per candidate: rank j / (c - 1) (0 without ``use_rank``), exposure trace, similarity."""
        n = len(cands)
        rank = np.arange(n, dtype=np.float32) / max(n - 1, 1) if self.config["use_rank"] else np.zeros(n, np.float32)
        similarity = self.unit_features_[cands] @ self.trace_vector_  # (c,) cosine-weighted exposure
        return np.stack([rank, self.trace_[cands], similarity], axis=1).astype(np.float32)

    def _q(self, net: nn.Module, ctx: torch.Tensor, cands: torch.Tensor, extras: torch.Tensor) -> torch.Tensor:
        """Q (B, C) of candidate items cands (B, C) (-1 pads: any value) in contexts ctx (B, Dc)."""
        return net(ctx, self.item_features_[cands.clamp(min=0)], extras)

    # ------------------------------------------------------------ acting
    def epsilon_now(self) -> float:
        """The exploration probability of the next round."""
        return self.config["epsilon"] / (1.0 + self.config["decay"] * self.rounds_)

    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        """Top k candidates by Q, or (probability eps_t) a random ordered k; exact propensities."""
        self._check_started()
        cands, k = check_request(candidates, k, self.n_actions)
        ctx = self._context(context)
        extras = self._extras(cands)
        if self._pending is not None:  # this round is the pending one's next state
            self._store(*self._pending, (ctx, cands, extras), done=False)
            self._pending = None
        with torch.no_grad():
            q = self._q(self.net_, torch.from_numpy(ctx)[None], torch.from_numpy(cands)[None],
                        torch.from_numpy(extras)[None])[0].numpy()
        greedy = top_k(q.astype(np.float64), k)
        eps = self.epsilon_now()
        order = self.rng.permutation(len(cands))[:k] if self.rng.random() < eps else greedy
        self._last = (ctx, cands, extras)
        return Slate(cands[order], eps / len(cands) + (1.0 - eps) * (order == greedy))

    # ------------------------------------------------------------ learning
    def update(self, feedback: Feedback) -> None:
        """Store the round (its next state comes with the next ``select``) and take one gradient step."""
        self._check_started()
        items, rewards = check_feedback(feedback, self.n_actions)
        if self._last is None:
            raise InputError("slateq learns from the slates it chose", expected="select() before each update()")
        ctx, cands, extras = self._last
        where = np.full(self.n_actions, -1)
        where[cands] = np.arange(len(cands))
        pos = where[items]  # (k,) positions of the shown items in the last candidate list
        if (pos < 0).any():
            raise InputError("feedback on items that the last select() did not offer",
                             value=items[pos < 0].tolist(), expected="items from the last slate's candidates")
        if self._pending is not None:  # two updates without a select between: the first had no next state
            self._store(*self._pending, None, done=True)
        self._pending = (ctx, items, extras[pos], rewards)
        self._last = None
        self.trace_ *= self.config["memory"]
        self.trace_[items] += 1.0
        self.trace_vector_ = self.config["memory"] * self.trace_vector_ + self.unit_features_[items].sum(axis=0)
        self.rounds_ += 1
        self._train_step()

    def end_episode(self) -> None:
        """The last updated round ended the episode: store it as terminal and clear the exposure trace."""
        if self._pending is not None:
            self._store(*self._pending, None, done=True)
            self._pending = None
        self._last = None
        self.trace_[:] = 0.0
        self.trace_vector_[:] = 0.0

    def _store(self, ctx: np.ndarray, items: np.ndarray, extras: np.ndarray, rewards: np.ndarray,
               after: tuple[np.ndarray, np.ndarray, np.ndarray] | None, *, done: bool) -> None:
        """Add a round, with its next state ``after`` = (context, candidates, extras) or None, to the replay."""
        cfg = self.config
        k, m = len(items), cfg["max_candidates"]
        if self._buffer is None:
            n, dc = cfg["buffer_size"], cfg["context_dim"]
            self._buffer = {"ctx": np.zeros((n, dc), np.float32), "items": np.zeros((n, k), np.int64),
                            "extras": np.zeros((n, k, _EXTRAS), np.float32), "rewards": np.zeros((n, k), np.float32),
                            "next_ctx": np.zeros((n, dc), np.float32), "next_cands": np.full((n, m), -1, np.int64),
                            "next_extras": np.zeros((n, m, _EXTRAS), np.float32), "done": np.zeros(n, np.float32)}
        buf = self._buffer
        if k != buf["items"].shape[1]:
            raise InputError("slateq keeps one slate size", value=k, expected=str(buf["items"].shape[1]))
        i = self._pos
        buf["ctx"][i], buf["items"][i], buf["extras"][i], buf["rewards"][i] = ctx, items, extras, rewards
        buf["next_ctx"][i], buf["next_cands"][i], buf["next_extras"][i] = 0.0, -1, 0.0
        if after is not None:
            next_ctx, next_cands, next_extras = after
            if len(next_cands) > m:
                raise InputError("more candidates than the setting max_candidates", value=len(next_cands),
                                 expected=f"<= {m}")
            buf["next_ctx"][i] = next_ctx
            buf["next_cands"][i, :len(next_cands)] = next_cands
            buf["next_extras"][i, :len(next_cands)] = next_extras
        buf["done"][i] = float(done)
        self._pos = (i + 1) % len(buf["done"])
        self._size = min(self._size + 1, len(buf["done"]))

    def _train_step(self) -> None:
        """One Adam step on a minibatch of replayed rounds towards the decomposed TD targets."""
        cfg = self.config
        if self._size < cfg["batch_size"]:
            return
        idx = self.rng.integers(0, self._size, cfg["batch_size"])
        b = {key: torch.from_numpy(arr[idx]) for key, arr in self._buffer.items()}
        k = b["items"].shape[1]
        with torch.no_grad():
            valid = b["next_cands"] >= 0  # (B, M), -1 padded
            width = max(k, int(valid.sum(dim=1).max()))  # drop all-padding columns
            nc, nx, valid = b["next_cands"][:, :width], b["next_extras"][:, :width], valid[:, :width]
            q_online = self._q(self.net_, b["next_ctx"], nc, nx).masked_fill(~valid, -torch.inf)  # (B, M')
            best = torch.topk(q_online, k, dim=1).indices  # (B, k) double Q: choose online, value target
            q_next = self._q(self.target_, b["next_ctx"], nc, nx).gather(1, best)
            q_next = torch.where(valid.gather(1, best), q_next, torch.zeros(()))
            target = b["rewards"] + cfg["gamma"] * (1.0 - b["done"])[:, None] * q_next.sum(1, keepdim=True) / k
        q = self._q(self.net_, b["ctx"], b["items"], b["extras"])  # (B, k)
        loss = nn.functional.smooth_l1_loss(q, target)
        self.optimizer_.zero_grad()
        loss.backward()
        self.optimizer_.step()
        with torch.no_grad():
            for p_target, p in zip(self.target_.parameters(), self.net_.parameters(), strict=True):
                p_target.lerp_(p, cfg["tau"])

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, np.ndarray]:
        self._check_started()
        state: dict[str, Any] = {"item_features": self.item_features_.numpy(), "rounds": np.int64(self.rounds_),
                                 "trace": self.trace_, "trace_vector": self.trace_vector_,
                                 "size": np.int64(self._size), "pos": np.int64(self._pos)}
        state |= {f"net.{k}": v.numpy() for k, v in self.net_.state_dict().items()}
        state |= {f"target.{k}": v.numpy() for k, v in self.target_.state_dict().items()}
        for i, moments in self.optimizer_.state_dict()["state"].items():
            state |= {f"adam.{i}.{k}": torch.as_tensor(v).numpy() for k, v in moments.items()}
        state |= {f"buffer.{k}": v for k, v in (self._buffer or {}).items()}
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._start(np.asarray(arrays["item_features"], dtype=np.float32))
        self.rounds_, self._size, self._pos = int(arrays["rounds"]), int(arrays["size"]), int(arrays["pos"])
        self.trace_ = np.array(arrays["trace"], dtype=np.float32)
        self.trace_vector_ = np.array(arrays["trace_vector"], dtype=np.float32)

        def part(prefix: str) -> dict[str, Any]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        self.net_.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in part("net.").items()})
        self.target_.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in part("target.").items()})
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in part("adam.").items():
            i, _, name = key.partition(".")
            moments.setdefault(int(i), {})[name] = torch.from_numpy(np.array(value))
        opt_state = self.optimizer_.state_dict()
        opt_state["state"] = moments
        self.optimizer_.load_state_dict(opt_state)
        self._buffer = {k: np.array(v) for k, v in part("buffer.").items()} or None
