"""The sampled-softmax loss, part by part, against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from encoders.loss import SampledSoftmaxLoss
from encoders.sketch import CountMinSketch, keys_of


def ce(logits: list[float], target: int = 0) -> float:
    """-log softmax(logits)[target], skipping -inf entries."""
    finite = [x for x in logits if x != float("-inf")]
    return -(logits[target] - math.log(sum(math.exp(x) for x in finite)))


def loss_fn(**kw: object) -> SampledSoftmaxLoss:
    args: dict[str, object] = {"prefix_dims": (2,), "prefix_weights": (1.0,), "temperature": 1.0, "logq": False}
    args.update(kw)
    return SampledSoftmaxLoss(**args)  # type: ignore[arg-type]


Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
P = torch.tensor([[0.6, 0.8], [0.0, 1.0]])


def test_in_batch_softmax_matches_hand_value() -> None:
    out = loss_fn()(Q, P, keys_of(["q1", "q2"]), keys_of(["a", "b"]))
    # row 0: logits [<q0,p0>, <q0,p1>] = [0.6, 0.0]; row 1: [0.8, 1.0]
    expected = (ce([0.6, 0.0], 0) + ce([0.8, 1.0], 1)) / 2
    assert out.total.item() == pytest.approx(expected, abs=1e-6)
    assert out.random == 0.0


def test_temperature_scales_logits_and_is_capped() -> None:
    loss = loss_fn(temperature=0.5)
    out = loss(Q, P, keys_of(["q1", "q2"]), keys_of(["a", "b"]))
    assert out.scale == pytest.approx(2.0)
    expected = (ce([1.2, 0.0], 0) + ce([1.6, 2.0], 1)) / 2
    assert out.total.item() == pytest.approx(expected, abs=1e-6)
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1000.0))
    assert loss(Q, P, keys_of(["q1", "q2"]), keys_of(["a", "b"])).scale == pytest.approx(100.0)


def test_accidental_positive_and_same_query_columns_are_masked() -> None:
    same_item = loss_fn()(Q, P, keys_of(["q1", "q2"]), keys_of(["a", "a"]))
    assert same_item.total.item() == pytest.approx(0.0, abs=1e-6)  # each row keeps only its own column
    same_query = loss_fn()(Q, P, keys_of(["q", "q"]), keys_of(["a", "b"]))
    assert same_query.total.item() == pytest.approx(0.0, abs=1e-6)


def test_query_targets_mask_the_rows_own_query() -> None:
    # query->query: row 0's query is row 1's positive; that column must not count as a negative of row 0
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    out = loss_fn()(q, p, keys_of(["x", "y"]), keys_of(["y", "x"]), q_item_keys=keys_of(["x", "y"]))
    assert out.total.item() == pytest.approx(0.0, abs=1e-6)


def test_known_positive_masks_drop_exactly_the_marked_columns() -> None:
    keys = (keys_of(["q1", "q2"]), keys_of(["a", "b"]))
    known = torch.tensor([[False, True], [False, False]])  # column 1 is a known positive of row 0 only
    out = loss_fn()(Q, P, *keys, known=known)
    assert out.total.item() == pytest.approx((0.0 + ce([0.8, 1.0], 1)) / 2, abs=1e-6)
    diag = loss_fn()(Q, P, *keys, known=torch.eye(2, dtype=torch.bool))  # the positive itself is never masked
    assert diag.total.item() == pytest.approx(loss_fn()(Q, P, *keys).total.item(), abs=1e-6)
    neg = torch.tensor([[1.0, 0.0]])
    plain = loss_fn()(Q, P, *keys, neg=neg, neg_keys=keys_of(["n"]))
    masked = loss_fn()(Q, P, *keys, neg=neg, neg_keys=keys_of(["n"]), neg_known=torch.tensor([[True], [True]]))
    assert masked.random == pytest.approx(0.0, abs=1e-6) and plain.random > 0.1


def test_logq_correction_subtracts_log_frequency_per_column() -> None:
    loss = loss_fn(logq=True)
    loss.sketch.add(keys_of(["a", "a", "a"]))  # item a was seen 3 times before this batch
    out = loss(Q, P, keys_of(["q1", "q2"]), keys_of(["a", "b"]))
    # after the batch: a 4, b 1, total 5 -> subtract log(4/5) from column a and log(1/5) from column b
    la, lb = math.log(4 / 5), math.log(1 / 5)
    expected = (ce([0.6 - la, 0.0 - lb], 0) + ce([0.8 - la, 1.0 - lb], 1)) / 2
    assert out.total.item() == pytest.approx(expected, abs=1e-5)


def test_random_negatives_term_with_logq_and_mask() -> None:
    loss = loss_fn(logq=True)
    neg = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    out = loss(Q, P, keys_of(["q1", "q2"]), keys_of(["a", "b"]), neg, keys_of(["n", "b"]), num_candidates=10)
    lq = math.log(2 / 10)  # 2 uniform draws out of 10 candidates
    rand0 = ce([0.6, 0.0 - lq, 0.6 - lq], 0)
    rand1 = ce([1.0, 1.0 - lq], 0)  # negative "b" is row 1's own positive: masked
    assert out.random == pytest.approx((rand0 + rand1) / 2, abs=1e-5)
    in_batch = (ce([0.6, 0.0], 0) + ce([0.8, 1.0], 1)) / 2  # equal counts: logQ cancels within each row
    assert out.total.item() == pytest.approx(in_batch + (rand0 + rand1) / 2, abs=1e-5)


def test_fixed_offsets_add_to_the_cosines_before_scaling() -> None:
    loss = loss_fn(temperature=0.5)  # scale 2
    offset = torch.tensor([[0.1, 0.3], [-0.2, 0.05]])
    neg = torch.tensor([[0.0, 1.0]])
    neg_offset = torch.tensor([[0.4], [0.0]])
    out = loss(Q, P, keys_of(["q1", "q2"]), keys_of(["a", "b"]), neg, keys_of(["n"]), offset=offset,
               neg_offset=neg_offset)
    in0 = ce([2 * (0.6 + 0.1), 2 * (0.0 + 0.3)], 0)
    in1 = ce([2 * (0.8 - 0.2), 2 * (1.0 + 0.05)], 1)
    rand0 = ce([2 * (0.6 + 0.1), 2 * (0.0 + 0.4)], 0)  # positive keeps its diagonal offset
    rand1 = ce([2 * (1.0 + 0.05), 2 * (1.0 + 0.0)], 0)
    assert out.random == pytest.approx((rand0 + rand1) / 2, abs=1e-5)
    assert out.total.item() == pytest.approx((in0 + in1) / 2 + (rand0 + rand1) / 2, abs=1e-5)


def test_nested_prefixes_are_renormalised_and_weighted() -> None:
    q = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    loss = loss_fn(prefix_dims=(2, 4), prefix_weights=(0.5, 1.0))
    out = loss(q, p, keys_of(["q1", "q2"]), keys_of(["a", "b"]))

    def cos(u: list[float], v: list[float]) -> float:
        return sum(a * b for a, b in zip(u, v, strict=True)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))

    def part(d: int) -> float:
        qs, ps = q[:, :d].tolist(), p[:, :d].tolist()
        rows = [[cos(qs[i], ps[j]) for j in range(2)] for i in range(2)]
        return (ce(rows[0], 0) + ce(rows[1], 1)) / 2

    assert out.total.item() == pytest.approx(0.5 * part(2) + 1.0 * part(4), abs=1e-5)


def test_gradient_reaches_queries_items_and_temperature() -> None:
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    p = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    loss = SampledSoftmaxLoss(prefix_dims=(4, 8), prefix_weights=(0.05, 1.0))
    loss(q, p, keys_of("abcd"), keys_of("wxyz")).total.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert loss.log_scale.grad is not None and loss.log_scale.grad.abs() > 0


def test_count_min_sketch_never_underestimates() -> None:
    sketch = CountMinSketch(width=64, depth=3, seed=1)
    stream = [f"item{i % 50}" for i in range(500)] + ["hot"] * 200
    sketch.add(keys_of(stream))
    est = sketch.estimate(keys_of(["hot", "item0", "item49"]))
    assert est[0] >= 200 and est[1] >= 10 and est[2] >= 10
    assert float(sketch.total) == len(stream)
    exact = CountMinSketch(width=1 << 16, depth=4)
    exact.add(keys_of(["a", "a", "b"]))
    assert exact.estimate(keys_of(["a", "b", "c"])).tolist() == [2.0, 1.0, 0.0]
    assert exact.log_prob(keys_of(["a"])).item() == pytest.approx(math.log(2 / 3))
