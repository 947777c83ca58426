"""Inference speed of ``generative`` (issue #14): the batched beam search against the previous decoder and
``sasrec``, side by side in one process.

For each dataset (P-LOO, test stage): ``generative`` and ``sasrec`` are fitted with their default settings
for ``--epochs`` epochs (speed does not depend on accuracy), then ``recommend_indices(users, k=10)`` is timed
in ``--rounds`` interleaved rounds (the order of the three rotates each round) for

- ``new``: the model's decoder (beam search over the trie's children lists, one tensor program per block);
- ``old``: the decoder of commit efa0c53 (its block loop and beam search), kept below
  (:func:`old_beams`, :func:`old_generate`), run on the same fitted model;
- ``sasrec``: a forward pass over each history and one product with the item table per block of users.

Reported: seconds per 1,000 users (median over rounds) and users/s, the ratio new / sasrec, the speed-up
old / new, and whether the two decoders agree: NDCG@10 of each on the same model and the fraction of users
whose whole beam (items in order) is identical, at temperature 0 and (``--temperature``) at one
temperature > 0. One torch thread.

    python bench/generative_speed.py                               # ml-100k, about 3 minutes on 2 cores
    python bench/generative_speed.py --datasets ml-100k,amazon-beauty --users 2000 --cache /tmp/fitted

Writes (merges into) bench/results/generative_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import types
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench" / "results" / "generative_speed.json"


# ------------------------------------------------------------ the old decoder (efa0c53), for comparison only
def _old_block_step(block, x, past, past_ok, own):
    """efa0c53's ``CausalBlock.step``: past (k, v) float[B, H, T, c], past_ok bool[B, T], own float[B, M, H, s, c]."""
    import torch

    q, k, v = block.split(x[:, :, None])  # (B, M, H, 1, c)
    if own is not None:
        k, v = torch.cat([own[0], k], -2), torch.cat([own[1], v], -2)
    b, m = x.shape[:2]
    qh = q[:, :, :, 0].transpose(1, 2)  # (B, H, M, c)
    s_past = (qh @ past[0].transpose(-1, -2)).masked_fill(~past_ok[:, None, None, :], float("-inf"))
    s_own = (q @ k.transpose(-1, -2))[:, :, :, 0].transpose(1, 2)  # (B, H, M, s + 1)
    w = torch.softmax(torch.cat([s_past, s_own], -1) * block.head_dim ** -0.5, -1)
    t = past[0].shape[2]
    a = w[..., :t] @ past[1] + torch.einsum("bhms,bmhsc->bhmc", w[..., t:], v)  # (B, H, M, c)
    x = x + block.out(a.transpose(1, 2).reshape(b, m, -1))
    return x + block.ff(block.norm2(x)), (k, v)


def _old_net_step(net, token, level, cache, past_ok, own):
    """efa0c53's ``GenerativeNet.step``."""
    x = net.tokens(token) + net.positions.weight[net.config.max_len] + net.level_emb.weight[level]
    new = []
    for i, (block, past) in enumerate(zip(net.blocks, cache)):
        x, kv = _old_block_step(block, x, past, past_ok, None if own is None else own[i])
        new.append(kv)
    return net.norm(x), new


def _old_gumbel(decoder, valid, prefix, depth, keys, seed):
    import torch

    from llm4rec._random import uniform

    r, j, code = (x.cpu() for x in torch.nonzero(valid, as_tuple=True))
    parent = prefix.cpu()[r, j].numpy()
    u = uniform(seed, keys[r.numpy()], depth, decoder.paths[depth][parent], code.numpy())
    noise = torch.zeros(valid.shape)
    noise[r, j, code] = torch.from_numpy(-np.log(-np.log(np.maximum(u, 1e-20)))).float()
    return noise.to(valid.device)


_MEMBERS: dict = {}


def _old_alive(trie, seen, rows):
    """efa0c53's ``CodeTrie.alive``: per depth d = 1..m, bool[rows, P_d], the prefix leads to an unseen item
    (its item -> prefix matrices built once per trie, as efa0c53's constructor did)."""
    import scipy.sparse as sp

    n = trie.n_items
    if id(trie) not in _MEMBERS:
        _MEMBERS[id(trie)] = [sp.csr_matrix((np.ones(n, dtype=np.float32), (np.arange(n), trie.prefix[d])),
                                            shape=(n, trie.prefix[d].max() + 1)) for d in range(1, trie.depth + 1)]
    out = []
    seen = None if seen is None else (seen > 0).astype(np.float32)
    for d, members in zip(range(1, trie.depth + 1), _MEMBERS[id(trie)]):
        count = np.bincount(trie.prefix[d])  # (P_d,) items under each prefix
        if seen is None:
            out.append(np.broadcast_to(count > 0, (rows, len(count))))
            continue
        out.append(count[None] - (seen @ members).toarray() > 0.5)
    return out


def old_generate(decoder, net, items, seen, beam, temperature, keys, seed):
    """efa0c53's ``_Decoder.generate`` (dense B x M x K candidates over the trie's child tables), bound to a
    model's decoder in place of the new one."""
    import torch

    from llm4rec.models.generative import _truncated_gumbel

    trie = decoder.trie
    m, b, t = trie.depth, len(items), temperature
    real = items >= 0
    first = int(np.argmax(real.any(0))) if real.any() else items.shape[1] - 1
    tok = torch.from_numpy(decoder.tokens(items[:, first:]))
    states, cache = net(tok, first * m)
    last, ok = states[:, -1], tok < decoder.vocab
    alive = [torch.from_numpy(np.ascontiguousarray(a)) for a in _old_alive(trie, seen, b)]
    prefix = torch.zeros(b, 1, dtype=torch.int64)
    score = torch.zeros(b, 1)
    phi = torch.zeros(b, 1)
    token = torch.zeros(b, 1, dtype=torch.int64)
    own = None
    rows = torch.arange(b)[:, None, None]
    for depth in range(m):
        if depth == 0:
            h = last[:, None]
        else:
            h, own = _old_net_step(net, token, depth - 1, cache, ok, own)
        logits = net.logits(h, depth)
        child = torch.from_numpy(trie.child[depth])[prefix.clamp(min=0)]
        valid = (child >= 0) & (prefix >= 0)[..., None] & alive[depth][rows, child.clamp(min=0)]
        if t == 0:
            cand = (score[..., None] + torch.log_softmax(logits, -1)).masked_fill(~valid, float("-inf"))
        else:
            phi_c = phi[..., None] + torch.log_softmax(logits / t, -1)
            g = (phi_c + _old_gumbel(decoder, valid, prefix, depth, keys, seed)).masked_fill(~valid, float("-inf"))
            cand = _truncated_gumbel(score[..., None], g, valid)
            phi_c = phi_c.masked_fill(~valid, float("-inf"))
        width = min(beam, cand.shape[1] * cand.shape[2])
        score, index = cand.flatten(1).topk(width, dim=1)
        parent, code = index // cand.shape[2], index % cand.shape[2]
        if t > 0:
            phi = phi_c.flatten(1).gather(1, index)
        empty = torch.isneginf(score)
        prefix = child.flatten(1).gather(1, index).masked_fill(empty, -1)
        token = code + int(decoder.offsets[depth])
        if own is not None:
            own = [(k[rows[:, :, 0], parent], v[rows[:, :, 0], parent]) for k, v in own]
    return prefix.numpy(), score.numpy()


def old_beams(decoder, net, recent, seen, keys, beam, temperature, seed):
    """efa0c53's ``_beams``: blocks of 256 histories in the given order."""
    import torch

    if len(recent) == 0:
        return np.zeros((0, beam), dtype=np.int64), np.zeros((0, beam), dtype=np.float32)
    net.eval()
    blocks = []
    with torch.no_grad():
        for start in range(0, len(recent), 256):
            rows = slice(start, start + 256)
            blocks.append(decoder.generate(net, recent[rows], None if seen is None else seen[rows], beam,
                                           temperature, None if keys is None else keys[rows], seed))
    return np.concatenate([top for top, _ in blocks]), np.concatenate([score for _, score in blocks])


# ------------------------------------------------------------------------------------------------ bench
NEW_BEAMS = None


def fit(ds, epochs: int, cache: Path | None) -> tuple:
    """The P-LOO test stage and the two models fitted on it (loaded from ``cache`` when saved there before)."""
    from llm4rec.data import make_split
    from llm4rec.models import Recommender, create_model

    stage = make_split(ds, "loo").stage("test")
    models = {}
    for name in ("generative", "sasrec"):
        path = None if cache is None else cache / f"{ds.name}-{name}-epochs{epochs}"
        if path is not None and path.exists():
            models[name] = Recommender.load(path)
            print(f"  loaded {name} from {path}", flush=True)
            continue
        t0 = time.perf_counter()
        models[name] = create_model(name, {"epochs": epochs, "valid": "none"}).fit(stage.fit)
        print(f"  fitted {name} in {time.perf_counter() - t0:.0f} s", flush=True)
        if path is not None:
            models[name].save(path)
    return stage, models


def use(gen, which: str) -> None:
    """Make ``gen`` decode with the ``old`` (efa0c53's block loop and beam search) or the ``new`` decoder."""
    import llm4rec.models.generative as module

    global NEW_BEAMS
    NEW_BEAMS = NEW_BEAMS or module._beams
    if which == "old":
        gen.decoder_.generate = types.MethodType(old_generate, gen.decoder_)
        module._beams = old_beams
    else:
        gen.decoder_.__dict__.pop("generate", None)
        module._beams = NEW_BEAMS


def bench_dataset(name: str, epochs: int, rounds: int, n_users: int, temperature: float, cache: Path | None) -> dict:
    import dataclasses

    from llm4rec.data.sources import load_dataset
    from llm4rec.evaluation import evaluate

    ds = load_dataset(DATA / name)
    stage, models = fit(ds, epochs, cache)
    gen, sas = models["generative"], models["sasrec"]
    users = np.sort(np.random.default_rng(0).permutation(stage.users)[:n_users])
    sample = dataclasses.replace(stage, users=users)

    def old() -> None:
        use(gen, "old")
        try:
            gen.recommend_indices(users, k=10)
        finally:
            use(gen, "new")

    runs = {"new": lambda: gen.recommend_indices(users, k=10), "old": old,
            "sasrec": lambda: sas.recommend_indices(users, k=10)}
    order = list(runs)
    seconds = {k: [] for k in runs}
    loads = []
    runs["sasrec"](), runs["new"]()  # warm-up
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        for key in order[r % 3:] + order[:r % 3]:
            t0 = time.perf_counter()
            runs[key]()
            seconds[key].append(time.perf_counter() - t0)
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()), flush=True)
    per_1k = {k: statistics.median(v) * 1000 / len(users) for k, v in seconds.items()}
    agree = {}
    for temp in (0.0, temperature):
        gen.config = gen.make_config({**gen.config.model_dump(), "temperature": temp})
        out = {}
        for which in ("new", "old"):
            use(gen, which)
            out[which] = gen.generate([str(u) for u in gen.user_ids[users]]), evaluate(gen, sample).metrics["NDCG@10"]
            use(gen, "new")
        (new_b, new_ndcg), (old_b, old_ndcg) = out["new"], out["old"]
        width = min(new_b.items.shape[1], old_b.items.shape[1])
        same = (new_b.items[:, :width] == old_b.items[:, :width]).all(1)
        both = (new_b.items[:, :width] != None) & same[:, None]  # noqa: E711 (an object array)
        agree[f"temperature={temp:g}"] = {
            "NDCG@10_new": round(new_ndcg, 6), "NDCG@10_old": round(old_ndcg, 6),
            "identical_beams": round(float(same.mean()), 6),
            "max_abs_score_diff": float(np.abs(new_b.scores[:, :width][both] - old_b.scores[:, :width][both]).max()),
        }
        print(f"  {agree[f'temperature={temp:g}']}", flush=True)
    gen.config = gen.make_config({**gen.config.model_dump(), "temperature": 0.0})
    return {"dataset": name, "protocol": "P-LOO", "stage": "test", "epochs": epochs, "users_timed": len(users),
            "items": gen.n_items_, "rounds": rounds,
            "seconds_per_1k_users": {k: round(v, 4) for k, v in per_1k.items()},
            "users_per_second": {k: round(1000 / v, 1) for k, v in per_1k.items()},
            "ratio_new_over_sasrec": round(per_1k["new"] / per_1k["sasrec"], 2),
            "ratio_old_over_sasrec": round(per_1k["old"] / per_1k["sasrec"], 2),
            "speedup_new_over_old": round(per_1k["old"] / per_1k["new"], 2),
            "all_seconds": {k: [round(x, 4) for x in v] for k, v in seconds.items()},
            "load_average_1min": [round(x, 2) for x in loads], "agreement": agree,
            "trie_fanout": [int(k.shape[1]) for k in gen.decoder_.trie.kid],
            "codebook_sizes": [int(k) for k in gen.sizes_]}


def main() -> None:
    import torch

    from llm4rec._runinfo import environment

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="ml-100k")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--users", type=int, default=1000, help="users timed per round (at most all)")
    ap.add_argument("--temperature", type=float, default=1.0, help="the stochastic beam compared")
    ap.add_argument("--cache", type=Path, default=None, help="save the fitted models here, and load them "
                                                               "from here on a rerun")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in args.datasets.split(","):
        print(name, flush=True)
        record = bench_dataset(name, args.epochs, args.rounds, args.users, args.temperature, args.cache)
        record.update(date=date.today().isoformat(), command="python bench/generative_speed.py " +
                      " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None), environment=environment())
        results[name] = record
        OUT.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({k: record[k] for k in ("seconds_per_1k_users", "ratio_new_over_sasrec",
                                                 "speedup_new_over_old")}), flush=True)


if __name__ == "__main__":
    main()
