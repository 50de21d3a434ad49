"""chunked_topn / cosine_topn against a brute-force float64 reference written here."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from alignkit.labelers.functional import chunked_topn, cosine_topn, drop_below, naive_topn


def reference(dense, bank, k, negate=False, min_score=None):
    """Full float64 cosine matrix, stable descending sort, tail emptied."""
    d = torch.nn.functional.normalize(dense.double(), dim=-1)
    b = torch.nn.functional.normalize(bank.double(), dim=-1)
    sims = d @ b.t()
    if negate:
        sims = -sims
    s, i = torch.sort(sims, dim=1, descending=True, stable=True)
    s, i = s[:, :k], i[:, :k]
    if min_score is not None:
        keep = s > min_score
        s, i = torch.where(keep, s, 0.0), torch.where(keep, i, -1)
    return s, i, sims


def unit(gen, *shape):
    return torch.nn.functional.normalize(torch.randn(*shape, generator=gen), dim=-1)


@given(
    m=st.integers(0, 40), v=st.integers(1, 60), c=st.integers(1, 16), data=st.data(),
    chunk=st.integers(1, 50), negate=st.booleans(), seed=st.integers(0, 2**31 - 1),
)
def test_chunked_equals_brute_force(m, v, c, data, chunk, negate, seed):
    k = data.draw(st.integers(1, v))
    gen = torch.Generator().manual_seed(seed)
    dense, bank = unit(gen, m, c), unit(gen, v, c)
    scores, ids = chunked_topn(dense, bank, k, chunk_size=chunk, negate=negate)
    ref_s, _, sims = reference(dense, bank, k, negate)
    assert scores.dtype == torch.float32 and ids.dtype == torch.long and scores.shape == ids.shape == (m, k)
    torch.testing.assert_close(scores.double(), ref_s, atol=1e-5, rtol=0)
    # ids are right up to ties: each chosen id's true score is the reference score at that rank
    torch.testing.assert_close(sims.gather(1, ids), ref_s, atol=1e-5, rtol=0)
    assert all(len(set(row)) == k for row in ids.tolist())  # no word twice in a row
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())


@given(m=st.integers(1, 30), v=st.integers(2, 50), seed=st.integers(0, 2**31 - 1))
def test_chunk_size_does_not_change_the_result(m, v, seed):
    gen = torch.Generator().manual_seed(seed)
    dense, bank = unit(gen, m, 8), unit(gen, v, 8)
    k = min(3, v)
    whole = chunked_topn(dense, bank, k, chunk_size=m)
    for chunk in (1, 2, 7):
        part = chunked_topn(dense, bank, k, chunk_size=chunk)
        torch.testing.assert_close(part[0], whole[0], atol=1e-6, rtol=0)
        assert torch.equal(part[1], whole[1])


@given(m=st.integers(1, 30), v=st.integers(1, 50), seed=st.integers(0, 2**31 - 1),
       min_score=st.floats(-0.5, 0.5), negate=st.booleans())
def test_cosine_topn_min_score_and_negation(m, v, seed, min_score, negate):
    gen = torch.Generator().manual_seed(seed)
    dense = torch.randn(2, m, 6, generator=gen) * 3  # unnormalised: cosine_topn normalises
    bank = unit(gen, v, 6)
    k = min(4, v)
    scores, ids = cosine_topn(dense, bank, k, min_score=min_score, negate=negate, chunk_size=5)
    ref_s, _, _ = reference(dense.reshape(-1, 6), bank, k, negate)  # before dropping
    assert scores.shape == ids.shape == (2, m, k)
    flat_s, flat_i = scores.reshape(-1, k), ids.reshape(-1, k)
    empty = flat_i == -1
    near = (ref_s - min_score).abs() < 1e-5  # fp32 may land on either side of the threshold
    assert torch.equal(empty[~near], (ref_s <= min_score)[~near])
    assert bool((flat_s[empty] == 0).all()) and bool((flat_s[~empty] > min_score).all())
    torch.testing.assert_close(flat_s[~empty].double(), ref_s[~empty], atol=1e-5, rtol=0)


def test_negation_ranks_the_least_similar_first():
    # Three words on the unit circle; the patch points at word 0, away from word 2.
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    dense = torch.tensor([[2.0, 0.1]])
    s, i = cosine_topn(dense, bank, 3, min_score=float("-inf"), negate=False)
    assert i.tolist() == [[0, 1, 2]]
    s, i = cosine_topn(dense, bank, 3, min_score=0.0, negate=True)
    # -cos: word 2 scores ~ +1 (kept), word 1 ~ -0.05 and word 0 ~ -1 (dropped: <= 0)
    assert i.tolist() == [[2, -1, -1]]
    assert s[0, 0].item() == pytest.approx(2.0 / (4.01 ** 0.5), abs=1e-6) and s[0, 1:].tolist() == [0.0, 0.0]


def test_min_score_drops_equal_scores():
    scores = torch.tensor([[0.5, 0.0, -0.1]])
    ids = torch.tensor([[3, 4, 5]])
    s, i = drop_below(scores, ids, 0.0)
    assert i.tolist() == [[3, -1, -1]] and s.tolist() == [[0.5, 0.0, 0.0]]
    assert ids.tolist() == [[3, 4, 5]]  # inputs untouched


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_candidates_are_rescored_in_fp32(dtype):
    gen = torch.Generator().manual_seed(0)
    dense, bank = unit(gen, 64, 32), unit(gen, 500, 32)
    scores, ids = chunked_topn(dense, bank, 10, chunk_size=16, compute_dtype=dtype)
    ref_s, ref_i, sims = reference(dense, bank, 10)
    assert scores.dtype == torch.float32
    # returned scores are the fp32 dot products of the returned ids, sorted
    torch.testing.assert_close(scores.double(), sims.gather(1, ids), atol=1e-5, rtol=0)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    # and the ids are the fp32 top-10 except where half precision blurred a near-tie
    agree = (ids == ref_i).double().mean().item()
    assert agree > 0.95, agree


def test_naive_matches_chunked():
    gen = torch.Generator().manual_seed(1)
    dense, bank = unit(gen, 20, 8), unit(gen, 30, 8)
    a, b = naive_topn(dense, bank, 5, negate=True), chunked_topn(dense, bank, 5, chunk_size=3, negate=True)
    torch.testing.assert_close(a[0], b[0])
    assert torch.equal(a[1], b[1])


@pytest.mark.parametrize("k", [0, 4, -1, 2.0, True])
def test_bad_k(k):
    with pytest.raises(ValueError, match=r"top_n must be an int in \[1, 3\]"):
        chunked_topn(torch.zeros(2, 4), torch.zeros(3, 4), k)


def test_bad_shapes_and_chunk():
    with pytest.raises(ValueError, match=r"dense width C=4 does not match the text bank width C=5"):
        chunked_topn(torch.zeros(2, 4), torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match=r"chunk_size must be an int >= 1, got 0"):
        chunked_topn(torch.zeros(2, 4), torch.zeros(3, 4), 1, chunk_size=0)
