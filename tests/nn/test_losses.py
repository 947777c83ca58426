"""Losses and the APR perturbation against hand computations."""

import math

import pytest
import torch

from llm4rec.nn import (
    apr_loss,
    bce_loss,
    bpr_loss,
    fgsm_delta,
    full_softmax_loss,
    mse_loss,
    sampled_softmax_loss,
)


def sp(x: float) -> float:  # softplus
    return math.log1p(math.exp(x))


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_bce_is_positive_term_plus_mean_negative_term():
    pos, neg = t(2.0, 0.5), t([1.0, -1.0], [0.0, 3.0])
    expected = ((sp(-2.0) + (sp(1.0) + sp(-1.0)) / 2) + (sp(-0.5) + (sp(0.0) + sp(3.0)) / 2)) / 2
    assert bce_loss(pos, neg).item() == pytest.approx(expected, rel=1e-12)


def test_bce_mask_drops_a_negative():
    pos, neg = t(2.0), t([1.0, -1.0])
    mask = torch.tensor([[True, False]])
    assert bce_loss(pos, neg, mask).item() == pytest.approx(sp(-2.0) + sp(1.0), rel=1e-12)


def test_bpr_is_mean_pairwise_log_sigmoid():
    pos, neg = t(1.0), t([0.0, 2.0])
    # -log σ(1 - 0) = log(1 + e^-1); -log σ(1 - 2) = log(1 + e^1)
    assert bpr_loss(pos, neg).item() == pytest.approx((sp(-1.0) + sp(1.0)) / 2, rel=1e-12)
    mask = torch.tensor([[False, True]])
    assert bpr_loss(pos, neg, mask).item() == pytest.approx(sp(1.0), rel=1e-12)


def test_sampled_softmax_plain_temperature_and_logq():
    pos, neg = t(1.0), t([0.0, 2.0])
    plain = math.log(math.e ** 1 + math.e ** 0 + math.e ** 2) - 1.0
    assert sampled_softmax_loss(pos, neg).item() == pytest.approx(plain, rel=1e-12)
    hot = math.log(math.exp(0.5) + 1 + math.exp(1.0)) - 0.5
    assert sampled_softmax_loss(pos, neg, temperature=2.0).item() == pytest.approx(hot, rel=1e-12)
    # logQ: every logit loses log q of its item: [1 - log .5, 0 - log .25, 2 - log .25]
    lq_pos, lq_neg = torch.log(t(0.5)), torch.log(t([0.25, 0.25]))
    logits = [1 - math.log(0.5), -math.log(0.25), 2 - math.log(0.25)]
    corrected = math.log(sum(math.exp(x) for x in logits)) - logits[0]
    got = sampled_softmax_loss(pos, neg, log_q_pos=lq_pos, log_q_neg=lq_neg).item()
    assert got == pytest.approx(corrected, rel=1e-12)
    masked = sampled_softmax_loss(pos, neg, torch.tensor([[True, False]])).item()
    assert masked == pytest.approx(math.log(math.e + 1) - 1.0, rel=1e-12)


def test_mse():
    assert mse_loss(t(1.0, 3.0), t(2.0, 5.0)).item() == pytest.approx((1 + 4) / 2)


def test_fgsm_delta_has_norm_eps_along_the_gradient():
    d = fgsm_delta(t([3.0, 4.0], [0.0, 0.0]), eps=0.5)
    assert torch.allclose(d, t([0.3, 0.4], [0.0, 0.0]))


def test_apr_loss_adds_the_loss_at_the_worst_perturbation():
    x = t(3.0, 4.0).requires_grad_()
    emb = x * 1.0  # a non-leaf embedding of the graph

    def loss_fn(e):
        return (e[0] ** 2).sum()

    eps, w = 0.5, 0.25
    total = apr_loss(loss_fn, [emb], eps, w)
    # grad of |e|^2 at (3, 4) is (6, 8): delta = 0.5 * (0.6, 0.8) = (0.3, 0.4)
    assert total.item() == pytest.approx(25.0 + w * (3.3 ** 2 + 4.4 ** 2), rel=1e-12)
    total.backward()  # delta is a constant: d/dx = 2x + w * 2 (x + delta)
    assert torch.allclose(x.grad, t(6.0 + w * 6.6, 8.0 + w * 8.8))


def test_full_softmax_loss_is_cross_entropy_over_the_whole_table():
    states, table = t([1.0, 0.0], [0.0, 2.0]), t([1.0, 0.0], [0.0, 1.0], [1.0, 1.0])
    target = torch.tensor([0, 2])
    # logits: (1, 0, 1) and (0, 2, 2)
    expected = ((math.log(2 * math.e + 1) - 1) + (math.log(1 + 2 * math.e ** 2) - 2)) / 2
    assert full_softmax_loss(states, table, target).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("block", [1, 7, 1 << 20])  # elements per block: one row each, a few rows, all rows
def test_full_softmax_loss_matches_cross_entropy_value_and_gradients_in_blocks(monkeypatch, block):
    import llm4rec.nn.losses as losses

    monkeypatch.setattr(losses, "_BLOCK_ELEMENTS", block)
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(23, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    table = torch.randn(11, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(11, (23,), generator=gen)
    reference = torch.nn.functional.cross_entropy(states @ table.T, target)
    ref_grads = torch.autograd.grad(3.0 * reference, (states, table))
    ours = full_softmax_loss(states, table, target)
    grads = torch.autograd.grad(3.0 * ours, (states, table))
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-12)


def test_full_softmax_loss_gives_gradients_only_where_asked_and_runs_backward_once():
    states, table = t([1.0, 2.0]), t([1.0, 0.0], [0.0, 1.0]).requires_grad_()  # states without grad
    loss = full_softmax_loss(states, table, torch.tensor([1]))
    loss.backward(retain_graph=True)
    # d/de_i = (softmax_i - onehot_i) h, softmax of the logits (1, 2) = (p, 1 - p) with p = e / (e + e^2)
    p = math.e / (math.e + math.e ** 2)
    assert torch.allclose(table.grad, t([p, 2 * p], [-p, -2 * p]))
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()
