"""Every registered ANN backend against exact search: recall, save/load, bad input, padding, parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from indexer_fixtures import DIM, N, data

from indexer.backends import REGISTRY, AnnBackend, get_backend, load_backend
from indexer.backends.base import PAD_SCORE
from indexer.errors import DimensionMismatch, IndexNotReady, InvalidParameter, InvalidVector
from indexer.synthetic import clustered, clustered_with_queries, recall_at_k

BACKENDS = sorted(REGISTRY)
# Per-call parameters that change how much work a search does, for the backends that have one.
EFFORT = {
    "hnswlib": ("ef", 1, 32),
    "faiss-hnsw": ("efSearch", 1, 64),
    "faiss-ivf-flat": ("nprobe", 1, 16),
    "faiss-ivfpq": ("nprobe", 1, 16),
    "faiss-factory": ("efSearch", 1, 64),
}

_built: dict[tuple[str, str], AnnBackend] = {}


def built(name: str, metric: str = "ip") -> AnnBackend:
    """One index per backend and metric for the whole module (building is the slow part)."""
    key = (name, metric)
    if key not in _built:
        xb, _ = data()
        backend = get_backend(name, DIM, metric)
        backend.build(xb)
        _built[key] = backend
    return _built[key]


@pytest.fixture(scope="module")
def exact() -> dict[str, np.ndarray]:
    xb, xq = data()
    out = {}
    for metric in ("ip", "l2"):
        flat = get_backend("flat", DIM, metric)
        flat.build(xb)
        out[metric] = flat.search(xq, 10)[1]
    return out


@pytest.mark.parametrize("name", BACKENDS)
def test_registry_entries_follow_the_protocol(name: str) -> None:
    backend = get_backend(name, DIM, "ip")
    assert isinstance(backend, AnnBackend)
    assert backend.name == name
    assert len(backend) == 0


@pytest.mark.parametrize("name", BACKENDS)
def test_default_parameters_reach_recall_095(name: str, exact: dict[str, np.ndarray]) -> None:
    _, xq = data()
    backend = built(name)
    D, L = backend.search(xq, 10)
    assert D.dtype == np.float32 and L.dtype == np.int64 and L.shape == (len(xq), 10)
    recall = recall_at_k(L, exact["ip"])
    assert recall >= 0.95, f"{name}: recall@10 {recall:.3f}"
    # best first: inner products descend along each row
    assert (np.diff(D, axis=1) <= 1e-5).all()


@pytest.mark.parametrize("name", ["flat", "hnswlib", "faiss-hnsw", "faiss-ivf-flat"])
def test_l2_metric_reaches_recall_095(name: str, exact: dict[str, np.ndarray]) -> None:
    _, xq = data()
    D, L = built(name, "l2").search(xq, 10)
    assert recall_at_k(L, exact["l2"]) >= 0.95
    assert (np.diff(D, axis=1) >= -1e-5).all()  # squared distances ascend


@pytest.mark.parametrize("name", BACKENDS)
def test_save_then_load_gives_identical_results(name: str, tmp_path: Any) -> None:
    _, xq = data()
    backend = built(name)
    backend.save(tmp_path)
    loaded = load_backend(tmp_path)
    assert type(loaded) is type(backend)
    assert len(loaded) == len(backend) == N
    assert loaded.params == backend.params
    D0, L0 = backend.search(xq, 10)
    D1, L1 = loaded.search(xq, 10)
    np.testing.assert_array_equal(L0, L1)
    np.testing.assert_allclose(D0, D1, rtol=1e-6, atol=1e-6)
    assert loaded.memory_bytes() > 0


@pytest.mark.parametrize("name", BACKENDS)
def test_wrong_dimension_and_nan_raise(name: str) -> None:
    backend = get_backend(name, 8, "ip")
    good = clustered(300, 8, seed=1)
    with pytest.raises(DimensionMismatch):
        backend.build(np.ones((10, 9), np.float32))
    bad = good.copy()
    bad[17, 3] = np.nan
    with pytest.raises(InvalidVector, match="row 17"):
        backend.build(bad)
    bad[17, 3] = np.inf
    with pytest.raises(InvalidVector):
        backend.build(bad)
    with pytest.raises(IndexNotReady):
        backend.search(good[:2], 5)
    backend.build(good)
    with pytest.raises(DimensionMismatch):
        backend.search(np.ones((2, 7), np.float32), 5)
    q = good[:2].copy()
    q[1, 0] = np.nan
    with pytest.raises(InvalidVector):
        backend.search(q, 5)
    with pytest.raises(InvalidParameter):
        backend.search(good[:2], 0)


@pytest.mark.parametrize("name", BACKENDS)
def test_fewer_vectors_than_k_pads_with_minus_one(name: str) -> None:
    x = clustered(40, 8, seed=2)
    for metric in ("ip", "l2"):
        backend = get_backend(name, 8, metric)
        backend.build(x)
        D, L = backend.search(x[:3], 50)
        assert L.shape == D.shape == (3, 50)
        found = (L >= 0).sum(axis=1)
        assert (found <= 40).all() and (found >= 10).all()
        # padding only at the end of a row, with the documented score
        for row_l, row_d in zip(L, D, strict=True):
            n_ok = int((row_l >= 0).sum())
            assert (row_l[n_ok:] == -1).all()
            assert (row_d[n_ok:] == PAD_SCORE[metric]).all()
            assert len(set(row_l[:n_ok].tolist())) == n_ok


@pytest.mark.parametrize("name", BACKENDS)
def test_labels_are_returned_not_positions(name: str) -> None:
    x = clustered(300, 8, seed=4)
    labels = np.arange(300, dtype=np.int64) * 7 + 1000
    backend = get_backend(name, 8, "ip")
    backend.build(x, labels)
    _, L = backend.search(x[:20], 1)
    # each vector finds itself: its own label
    assert (L[:, 0] == labels[:20]).mean() >= 0.9
    assert set(L.ravel().tolist()) <= set(labels.tolist())


@pytest.mark.parametrize("name", sorted(EFFORT))
def test_search_parameters_per_call_and_as_default(name: str, exact: dict[str, np.ndarray]) -> None:
    _, xq = data()
    backend = built(name)
    key, low, default = EFFORT[name]
    low_recall = recall_at_k(backend.search(xq, 10, **{key: low})[1], exact["ip"])
    again = recall_at_k(backend.search(xq, 10)[1], exact["ip"])
    assert low_recall < again, f"{key}={low} should cost recall ({low_recall:.3f} vs {again:.3f})"
    assert backend.params[key] == default  # a per-call value does not stick
    backend.set_search_params(**{key: low})
    try:
        assert recall_at_k(backend.search(xq, 10)[1], exact["ip"]) == pytest.approx(low_recall)
    finally:
        backend.set_search_params(**{key: default})
    with pytest.raises(InvalidParameter):
        backend.search(xq, 10, no_such_param=3)


def test_unknown_parameter_and_backend_are_rejected() -> None:
    from indexer.errors import UnknownBackend

    with pytest.raises(InvalidParameter, match="no parameter"):
        get_backend("hnswlib", 8, "ip", nprobe=3)
    with pytest.raises(UnknownBackend):
        get_backend("annoy", 8, "ip")
    with pytest.raises(InvalidParameter):
        get_backend("flat", 8, "cosine")
    with pytest.raises(InvalidParameter, match="divide"):
        get_backend("faiss-ivfpq", 10, "ip", m=4).build(clustered(500, 10, seed=1))


def test_ivfpq_variants_and_factory_strings() -> None:
    xb, xq = data(n=3000, nq=100, dim=DIM)
    flat = get_backend("flat", DIM)
    flat.build(xb)
    truth = flat.search(xq, 10)[1]
    refined = get_backend("faiss-ivfpq", DIM, "ip")
    refined.build(xb)
    raw_codes = get_backend("faiss-ivfpq", DIM, "ip", refine=False)
    raw_codes.build(xb)
    r_refined = recall_at_k(refined.search(xq, 10)[1], truth)
    r_codes = recall_at_k(raw_codes.search(xq, 10)[1], truth)
    assert r_refined > r_codes  # exact re-ranking is what the raw vectors are kept for
    assert raw_codes.memory_bytes() < refined.memory_bytes()
    assert recall_at_k(refined.search(xq, 10, k_factor=1)[1], truth) < r_refined
    eight_bit = get_backend("faiss-ivfpq", DIM, "ip", nbits=5, m=8, nlist=16)  # classic IVF-PQ (no fast-scan)
    eight_bit.build(xb)
    assert eight_bit.params["fast_scan"] is False
    assert recall_at_k(eight_bit.search(xq, 10)[1], truth) >= 0.9
    ivf = get_backend("faiss-factory", DIM, "ip", factory="IVF32,Flat", nprobe=32)
    ivf.build(xb)
    assert recall_at_k(ivf.search(xq, 10)[1], truth) == pytest.approx(1.0)
    with pytest.raises(InvalidParameter, match="cannot build"):
        get_backend("faiss-factory", DIM, "ip", factory="NoSuchThing").build(xb)


@pytest.mark.parametrize("name", ["faiss-ivf-flat", "faiss-ivfpq"])
def test_spawned_shards_share_the_trained_quantizer(name: str) -> None:
    import faiss

    xb, _ = data(n=3000)
    template = get_backend(name, DIM, "ip")
    template.train(xb)
    a, b = template.spawn(), template.spawn()
    a.build(xb[:1500])
    b.build(xb[1500:])
    qa = faiss.extract_index_ivf(a.index).quantizer  # type: ignore[attr-defined]
    qb = faiss.extract_index_ivf(b.index).quantizer  # type: ignore[attr-defined]
    ca = faiss.rev_swig_ptr(faiss.downcast_index(qa).get_xb(), qa.ntotal * DIM)
    cb = faiss.rev_swig_ptr(faiss.downcast_index(qb).get_xb(), qb.ntotal * DIM)
    np.testing.assert_array_equal(ca, cb)
    assert len(a) == len(b) == 1500


def test_non_contiguous_and_float64_input_is_accepted() -> None:
    xb, xq = data(n=1000, nq=10)
    wide = np.zeros((1000, DIM * 2), np.float64)
    wide[:, ::2] = xb
    strided = wide[:, ::2]  # float64, not contiguous
    backend = get_backend("flat", DIM, "ip")
    backend.build(strided)
    flat = get_backend("flat", DIM, "ip")
    flat.build(xb)
    np.testing.assert_array_equal(backend.search(xq, 5)[1], flat.search(xq, 5)[1])
    # a single 1-D query vector works too
    assert backend.search(xq[0], 3)[1].shape == (1, 3)


def test_hnswlib_default_ef_keeps_recall_on_256d_clustered_vectors() -> None:
    """The default beam (ef 32) against exact search on data shaped like the server benchmark's (256-d blobs of
    ~50 vectors), and ef acting as a floor: a k above it searches with a beam of k."""
    xb, xq = clustered_with_queries(8000, 200, 256, seed=5)
    hnsw = get_backend("hnswlib", 256, "ip", threads=2)
    hnsw.build(xb)
    flat = get_backend("flat", 256, "ip")
    flat.build(xb)
    default = hnsw.params["ef"]
    assert default == 32
    truth10, truth64 = flat.search(xq, 10)[1], flat.search(xq, 64)[1]
    assert recall_at_k(hnsw.search(xq, 10)[1], truth10) >= 0.95
    assert recall_at_k(hnsw.search(xq, 10, ef=8)[1], truth10) < recall_at_k(hnsw.search(xq, 10)[1], truth10)
    wide = hnsw.search(xq, 64)[1]  # k = 64 > ef = 32
    np.testing.assert_array_equal(wide, hnsw.search(xq, 64, ef=64)[1])
    assert recall_at_k(wide, truth64, k=64) >= 0.95
