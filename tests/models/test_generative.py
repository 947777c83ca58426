"""generative: a deterministic next-item rule is learned, decoding stays on real items and does not depend on
the batch, new items get their nearest codes, save/load, settings."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from llm4rec.data import Dataset, make_split
from llm4rec.errors import InputError
from llm4rec.evaluation import evaluate
from llm4rec.models import Recommender, create_model
from llm4rec.models.generative import FLOOR, windows
from llm4rec.testing import cycle_chain

#: small and fast: 32-d, one block, 8 codes per level
FAST = {"dim": 32, "layers": 1, "heads": 1, "max_len": 20, "epochs": 30, "lr": 0.005, "batch_size": 64,
        "dropout": 0.1, "codebook": 8, "levels": 2}
#: the held-out item of the add_items tests (an item index of cycle_chain())
HELD = 7


@pytest.fixture(scope="module")
def stage():
    """P-LOO on users walking a fixed cycle of 60 items: the next item is a function of the last."""
    return make_split(cycle_chain(), "loo").stage("test")


@pytest.fixture(scope="module")
def model(stage):
    return create_model("generative", FAST).fit(stage.fit)


@pytest.fixture(scope="module")
def untrained(stage):
    """Barely trained (one epoch at a tiny learning rate), sampling at a high temperature."""
    return create_model("generative", {**FAST, "epochs": 1, "lr": 1e-9, "valid": "none", "temperature": 5.0,
                                       "beam": 20}).fit(stage.fit)


def with_settings(model, tmp_path, **settings):
    """A loaded copy of ``model`` decoding with other settings (the weights unchanged)."""
    copy = Recommender.load(model.save(tmp_path / "copy", overwrite=True))
    copy.config = copy.make_config({**model.config.model_dump(), **settings})
    return copy


def test_a_deterministic_next_item_rule_is_learned_to_near_perfect_hr(model, stage):
    ours = evaluate(model, stage).metrics
    pop = evaluate(create_model("pop").fit(stage.fit), stage).metrics
    assert ours["HR@10"] == 1.0 and ours["NDCG@10"] >= 0.8
    assert pop["HR@10"] < 0.4
    assert model.train_summary_["monitor"] == "valid_NDCG@10"
    assert len(np.unique(model.codes_, axis=0)) == stage.fit.n_items


def test_a_test_stage_is_refused_for_early_stopping(stage):
    with pytest.raises(InputError, match="early stopping on a 'test' stage"):
        create_model("generative", {**FAST, "epochs": 1}).fit(stage.fit, valid=stage)


@pytest.mark.parametrize("which", ["model", "untrained"])
def test_decoding_returns_only_real_unseen_items_without_repeats(which, request, stage):
    fitted = request.getfixturevalue(which)
    users = [str(u) for u in fitted.user_ids]
    beams = fitted.generate(users)
    beam = fitted.config.beam
    assert beams.items.shape == beams.scores.shape == (len(users), beam)
    real = beams.items != None
    top = np.full(real.shape, -1)
    top[real] = fitted.items_.index([str(i) for i in beams.items[real]])
    seen = stage.fit.matrix()
    unseen = stage.fit.n_items - np.diff(seen.indptr)
    assert (real.sum(1) == np.minimum(beam, unseen)).all()  # the beam is full when it can be
    assert np.isfinite(beams.scores[real]).all() and np.isneginf(beams.scores[~real]).all()
    assert (np.diff(np.where(real, beams.scores, FLOOR), axis=1) <= 0).all()  # best first
    assert (seen[np.nonzero(real)[0], top[real]] == 0).all()
    assert all(len(set(row[row >= 0])) == (row >= 0).sum() for row in top)
    full = fitted.score(users)
    assert ((full > FLOOR).sum(1) == real.sum(1)).all()
    np.testing.assert_array_equal(np.take_along_axis(full, np.maximum(top, 0), 1)[real], beams.scores[real])


def test_cached_decoding_matches_a_full_forward_pass(model, stage):
    """The beam's incremental path (cached history + prefix) gives the same log-probabilities as reading
    history and item as one sequence."""
    import torch

    dec, net = model.decoder_, model.net_
    users, items = np.arange(5), np.array([3, 17, 42])
    hist = model.fit_histories(users).recent(model.config.max_len)
    m = dec.trie.depth
    want = np.zeros((5, 3))
    with torch.no_grad():
        got = dec.log_probs(net, hist, np.broadcast_to(items, (5, 3)))
        for c, item in enumerate(items):
            seq = np.concatenate([hist, np.full((5, 1), item)], axis=1)  # (5, L + 1)
            states, _ = net(torch.from_numpy(dec.tokens(seq)), 0)
            n = hist.shape[1] * m
            for lvl in range(m):
                lp = torch.log_softmax(net.logits(states[:, n - 1 + lvl], lvl), -1)
                want[:, c] += lp[:, dec.codes[item, lvl]].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_scores_of_given_items_are_their_log_probabilities(model, stage):
    users = np.arange(10)
    full, exact = model.score_indices(users), model.score_indices(users, np.arange(stage.fit.n_items))
    generated = full > FLOOR
    np.testing.assert_allclose(full[generated], exact[generated], rtol=1e-5, atol=1e-5)
    probs = np.exp(np.where(exact > FLOOR, exact, -np.inf)).sum(1)
    assert (probs <= 1 + 1e-4).all()  # a distribution over the unseen items (with mass on seen items left out)


def test_temperature_samples_are_seeded_diverse_and_survive_save_load(model, stage, tmp_path):
    hot = with_settings(model, tmp_path, temperature=3.0)
    users = np.arange(stage.fit.n_users)
    cold_top, _ = model.recommend_indices(users, k=10)
    hot_top, _ = hot.recommend_indices(users, k=10)
    np.testing.assert_array_equal(hot.recommend_indices(users, k=10)[0], hot_top)  # seeded
    assert len(np.unique(hot_top)) >= len(np.unique(cold_top))
    assert (hot_top != cold_top).any(axis=1).mean() > 0.5
    again = Recommender.load(model.save(tmp_path / "m2"))
    np.testing.assert_array_equal(again.codes_, model.codes_)
    np.testing.assert_array_equal(again.score_indices(users[:20]), model.score_indices(users[:20]))


def test_sampled_lists_do_not_depend_on_the_batch(model, stage, tmp_path):
    """At temperature > 0 a user's noise is keyed by the user (or the history), not by the position in a
    batch: one user per batch and all users at once give the same lists and metrics."""
    import dataclasses

    hot = with_settings(model, tmp_path, temperature=2.0)
    users = np.arange(stage.fit.n_users)
    some = users[::6]  # one by one is slow: every 6th user
    together = hot.score_indices(users)[some]
    alone = np.concatenate([hot.score_indices([u]) for u in some])
    np.testing.assert_array_equal(np.argsort(-alone, 1, kind="stable")[:, :hot.config.beam],
                                  np.argsort(-together, 1, kind="stable")[:, :hot.config.beam])
    np.testing.assert_allclose(alone, together, rtol=1e-4)
    stage = dataclasses.replace(stage, users=stage.users[::6])
    small = evaluate(hot, stage, budget=stage.fit.n_items)  # one user per batch
    large = evaluate(hot, stage)
    assert small.metrics == large.metrics
    for name, values in large.per_user.items():
        np.testing.assert_array_equal(small.per_user[name], values)
    # a history the model never saw as a user's: the same history decodes the same in any batch
    h = [["3", "4", "5"], ["10", "11"]]
    both = hot.recommend(histories=h, k=10).items
    np.testing.assert_array_equal(hot.recommend(histories=h[1:], k=10).items[0], both[1])
    np.testing.assert_array_equal(hot.recommend(histories=[h[1], h[0]], k=10).items[::-1], both)


# ------------------------------------------------- the batched beam search against a slow reference
def reference_beam(model, history: list[int], beam: int, key: int | None = None) -> list[tuple[int, float]]:
    """The beam of one history (dense item indices, oldest first), slowly and plainly: the trie is read off the
    semantic IDs of the unseen items, every prefix is scored by a full forward pass of history + prefix (no
    cache), candidates are ranked by a stable sort (ties: the better parent, then the smaller code). At
    temperature t > 0, stochastic beam search (Kool et al. 2019) with the model's noise (keyed by ``key``):
    a child's perturbed value is -log(exp(-T) - exp(-Z) + exp(-G)), T its parent's, Z the largest G of its
    siblings. -> [(item, score)], best first."""
    import torch

    from llm4rec._random import hash64, uniform

    cfg, net, codes = model.config, model.net_, model.codes_
    m, t = codes.shape[1], cfg.temperature
    offsets = np.concatenate([[0], np.cumsum(model.sizes_)[:-1]])
    recent = history[-cfg.max_len:]
    seen = set(history) if cfg.exclude_seen else set()
    unseen = [i for i in range(len(codes)) if i not in seen]
    past = [offsets[level] + codes[i, level] for i in recent for level in range(m)]
    beams = [((), 0.0, 0.0)]  # (prefix, score, tempered log-probability)
    for depth in range(m):
        seqs = torch.tensor([past + [offsets[level] + c for level, c in enumerate(p)] for p, _, _ in beams])
        with torch.no_grad():
            states, _ = net(seqs, (cfg.max_len - len(recent)) * m)  # the next item sits at position max_len
            logits = net.logits(states[:, -1], depth).double()
        cands = []
        for (prefix, score, phi), row in zip(beams, logits):
            children = sorted({int(codes[i, depth]) for i in unseen if tuple(codes[i, :depth]) == prefix})
            if t == 0:
                lp = torch.log_softmax(row, -1).numpy()
                cands += [(prefix + (c,), score + lp[c], 0.0) for c in children]
                continue
            lp = torch.log_softmax(row / t, -1).numpy()
            u = [uniform(cfg.seed, np.uint64(key), depth, hash64(0, *prefix), c) for c in children]
            g = [phi + lp[c] - np.log(-np.log(x)) for c, x in zip(children, u)]
            z = max(g)
            cands += [(prefix + (c,), -np.log(np.exp(-score) - np.exp(-z) + np.exp(-gc)), phi + lp[c])
                      for c, gc in zip(children, g)]
        beams = sorted(cands, key=lambda x: -x[1])[:beam]  # stable
    item = {tuple(c): i for i, c in enumerate(codes.tolist())}
    return [(item[p], score) for p, score, _ in beams]


def _assert_same_ranking(got_items, got_scores, want, tol=1e-4):
    """The beams' items and scores equal the reference's, in its order, except that two beams whose scores
    are within ``tol`` may come in either order (float32 against float64 rounding on a near-tie)."""
    ref = dict(want)
    np.testing.assert_allclose(got_scores, [s for _, s in want], rtol=tol, atol=tol)  # the same score curve
    cut = want[-1][1]
    for item in set(got_items) ^ set(ref):  # only near-ties at the beam's edge may differ
        score = ref[item] if item in ref else got_scores[got_items.index(item)]
        assert abs(score - cut) <= tol, (item, score, cut)
    for position, item in enumerate(got_items):
        if item in ref:
            assert abs(ref[item] - want[position][1]) <= tol, (position, item)  # at its own rank, up to a near-tie


def assert_beams_match(model, users=None, histories=None):
    """``model.generate`` equals :func:`reference_beam` for these users or histories (dense indices)."""
    if users is not None:
        got = model.generate([str(model.user_ids[u]) for u in users])
        rows = [(model.fit_histories(np.array([u])).items.tolist(), u) for u in users]
    else:
        got = model.generate(histories=[[str(model.item_ids[i]) for i in h] for h in histories])
        rows = [(list(h), None) for h in histories]
    assert got.items.shape == (len(rows), model.config.beam)
    for (history, key), items, scores in zip(rows, got.items, got.scores):
        want = reference_beam(model, history, model.config.beam, key)
        real = items != None  # noqa: E711 (an object array)
        assert real.sum() == len(want) and real[:len(want)].all()  # real items first, then padding
        got_items = model.items_.index([str(i) for i in items[real]]).tolist()
        _assert_same_ranking(got_items, scores[real], want)
        assert np.isneginf(scores[~real]).all()
        assert not set(model.items_.index([str(i) for i in items[real]]).tolist()) & set(history)


def prefix_history(model, stage) -> list[int]:
    """A history holding every item under one first code and every item under one two-code prefix (so the
    beam must skip those whole prefixes), then a few others: longer than ``max_len``."""
    codes = model.codes_
    first = codes[:, 0] == codes[0, 0]
    other = np.flatnonzero(~first)[0]
    second = (codes[:, :2] == codes[other, :2]).all(1)
    rest = np.flatnonzero(~first & ~second)[:12]
    history = np.concatenate([np.flatnonzero(first), np.flatnonzero(second), rest]).tolist()
    assert len(history) > model.config.max_len and len(history) < stage.fit.n_items
    return history


@pytest.mark.parametrize("beam", [1, 4, 25, 70])
def test_the_beam_search_equals_a_slow_reference(beam, model, stage, tmp_path):
    """Known users, and histories whose seen items remove whole prefixes; a beam of 70 exceeds the 60 items
    (every unseen item is generated, in order of its exact log-probability)."""
    wide = with_settings(model, tmp_path, beam=beam)
    assert_beams_match(wide, users=np.arange(0, stage.fit.n_users, 60))
    history = prefix_history(model, stage)
    assert_beams_match(wide, histories=[history, history[::-1][:5]])


def test_the_stochastic_beam_equals_a_slow_reference_and_is_seeded(model, stage, tmp_path):
    hot = with_settings(model, tmp_path, temperature=2.0, beam=8)
    users = np.arange(0, stage.fit.n_users, 75)
    assert_beams_match(hot, users=users)
    names = [str(u) for u in hot.user_ids]
    first = hot.generate(names).items
    np.testing.assert_array_equal(with_settings(model, tmp_path, temperature=2.0, beam=8).generate(names).items,
                                  first)
    other = with_settings(model, tmp_path, temperature=2.0, beam=8, seed=7).generate(names).items
    assert (other != first).any(axis=1).mean() > 0.5


def test_ties_go_to_the_smaller_code(without_held, chain, tmp_path):
    """Twins added under one prefix get new collision codes whose output rows are equal: their scores tie
    exactly, and the beam lists them by code, as the reference does."""
    model = Recommender.load(without_held.save(tmp_path / "before"))
    title = chain.item_table([3]).get_column("title")[0]
    model.add_items(pl.DataFrame({"item_id": [f"twin-{i}" for i in range(4)], "title": [title] * 4}))
    model = with_settings(model, tmp_path, beam=model.n_items_)
    got = model.generate([str(model.user_ids[0])])
    twins = np.flatnonzero([str(i).startswith("twin-") for i in got.items[0]])
    assert len(twins) == 4 and len(set(got.scores[0, twins].tolist())) == 1  # an exact tie
    assert [got.items[0, i] for i in twins] == [f"twin-{i}" for i in range(4)]
    assert_beams_match(model, users=[0, 1])


def test_recommendations_stay_in_the_candidates_and_off_the_history(model, stage):
    users = [str(u) for u in model.user_ids[:50]]
    candidates = [str(i) for i in model.item_ids[::3]]
    recs = model.recommend(users, k=10, items=candidates)
    seen = stage.fit.matrix()
    for u, row in enumerate(recs.items):
        row = [i for i in row if i is not None]
        assert set(row) <= set(candidates)
        assert not seen[u, model.items_.index(row)].toarray().any()


def test_windows_cover_every_next_item_step_once():
    frame = pl.DataFrame({"user_id": ["a"] * 7 + ["b"] * 2 + ["c"], "item_id": [str(i) for i in range(10)],
                          "timestamp": np.arange(10.0)})
    ds = Dataset.from_frame(frame, name="w")
    win = windows(ds, 3)
    tok = ds.items.tokens
    named = [[str(tok[i]) if i >= 0 else "-" for i in row] for row in win]
    assert sorted(named) == sorted([["3", "4", "5", "6"], ["0", "1", "2", "3"], ["-", "-", "7", "8"]])


def test_settings_are_checked(stage):
    with pytest.raises(InputError, match="heads must divide dim"):
        create_model("generative", {**FAST, "heads": 3, "epochs": 1}).fit(stage.fit)
    with pytest.raises(InputError, match="quantizer"):
        create_model("generative", {"quantizer": "pq"})
    with pytest.raises(InputError, match="beam"):
        create_model("generative", {"beam": 0})


# ------------------------------------------------------------------ new items
@pytest.fixture(scope="module")
def chain():
    return cycle_chain()


@pytest.fixture(scope="module")
def without_held(chain):
    """Fitted (briefly) on the chain as if item HELD had never existed."""
    return create_model("generative", {**FAST, "epochs": 3, "valid": "none"}).fit(chain.without_items([HELD]))


def nearest_codes(books: np.ndarray, vector: np.ndarray) -> list[int]:
    """The reference rule, in float64: the nearest centroid per level of the residual."""
    resid, out = vector / np.linalg.norm(vector), []
    for book in books.astype(np.float64):
        out.append(int(np.argmin(((book - resid) ** 2).sum(1))))
        resid = resid - book[out[-1]]
    return out


def test_a_new_item_gets_its_nearest_codes_and_can_be_generated(without_held, chain, tmp_path):
    from llm4rec.text import item_embeddings

    model = Recommender.load(without_held.save(tmp_path / "before"))
    token = str(chain.items.token(HELD))
    model.add_items(chain.item_table([HELD]))
    new = model.n_items_ - 1
    assert model.item_ids[new] == token and model.provenance_["items_added"] == 1
    prefix = nearest_codes(model.quantizer_.books, item_embeddings(chain)[HELD])
    assert model.codes_[new, :-1].tolist() == prefix
    same = (without_held.codes_[:, :-1] == prefix).all(1)
    assert model.codes_[new, -1] == (without_held.codes_[same, -1].max() + 1 if same.any() else 0)
    np.testing.assert_array_equal(model.codes_[:new], without_held.codes_)  # the others keep theirs
    trie, node = model.decoder_.trie, 0
    for depth, code in enumerate(model.codes_[new]):
        node = trie.child[depth][node, code]
    assert node == new  # reachable in the trie
    users = [str(u) for u in model.user_ids[:20]]
    lp = model.score(users, items=[token])
    assert np.isfinite(lp).all() and (lp > FLOOR).all() and (lp < 0).all()
    wide = with_settings(model, tmp_path, beam=model.n_items_)  # a beam as wide as the catalogue
    assert all(token in set(row) for row in wide.generate(users).items)
    again = Recommender.load(model.save(tmp_path / "after"))
    np.testing.assert_array_equal(again.codes_, model.codes_)
    np.testing.assert_array_equal(again.score(users), model.score(users))


def test_a_full_collision_level_grows(without_held, chain, tmp_path):
    """Items with one item's very text share its prefix; their collision codes count up past the level's
    size, whose new token and output rows start as the mean of the level's rows."""
    model = Recommender.load(without_held.save(tmp_path / "before"))
    title = chain.item_table([3]).get_column("title")[0]
    sizes = model.sizes_.copy()
    head_rows = model.net_.head.weight.detach().clone()
    table = pl.DataFrame({"item_id": [f"twin-{i}" for i in range(sizes[-1] + 1)],
                          "title": [title] * (sizes[-1] + 1)})
    model.add_items(table)
    new = np.arange(without_held.n_items_, model.n_items_)
    codes = model.codes_[new]
    assert (codes[:, :-1] == codes[0, :-1]).all()  # one prefix
    same = (without_held.codes_[:, :-1] == codes[0, :-1]).all(1)
    np.testing.assert_array_equal(codes[:, -1], without_held.codes_[same, -1].max() + 1 + np.arange(len(new)))
    assert model.sizes_[-1] == codes[:, -1].max() + 1 > sizes[-1]
    np.testing.assert_array_equal(model.sizes_[:-1], sizes[:-1])
    net = model.net_
    assert net.head.weight.shape[0] == model.sizes_.sum() and net.tokens.weight.shape[0] == model.sizes_.sum() + 1
    lo = int(sizes[:-1].sum())
    added = net.head.weight.detach()[lo + sizes[-1]:]
    np.testing.assert_allclose(added.numpy(), head_rows[lo:].mean(0).expand_as(added).numpy(), rtol=1e-6)
    users = [str(u) for u in model.user_ids[:10]]
    ids = list(table.get_column("item_id"))
    assert (model.score(users, items=ids) > FLOOR).all()
    again = Recommender.load(model.save(tmp_path / "after"))
    np.testing.assert_array_equal(again.score(users), model.score(users))
    np.testing.assert_array_equal(again.score(users, items=ids), model.score(users, items=ids))


@pytest.mark.slow
@pytest.mark.realdata
def test_ml100k_loo_floor(ml100k):
    """Defaults, capped at 12 epochs (about 2-3 minutes), on ml-100k P-LOO (test stage) beat EASE (NDCG@10
    0.0409)."""
    stage = make_split(ml100k, "loo").stage("test")
    model = create_model("generative", {"epochs": 12}).fit(stage.fit)
    assert evaluate(model, stage).metrics["NDCG@10"] >= 0.0409
