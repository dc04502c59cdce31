"""Channel-score baselines against hand values and naive references."""
import numpy as np
import pytest

from onnxprune.scoring.criteria import (CRITERIA, ChipAccumulator, chip, fpgm, hrank, l1_norm, l2_norm,
                                random_scores, score_filters)
from onnxprune.errors import DataError


def test_l1_and_l2_of_a_known_matrix():
    w = np.array([[1.0, -2.0, 2.0], [0.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
    np.testing.assert_array_equal(l1_norm(w), [5.0, 0.0, 7.0])
    np.testing.assert_array_equal(l2_norm(w), [3.0, 0.0, 5.0])
    conv = np.random.default_rng(0).standard_normal((4, 3, 3, 3))      # [C_out, C_in, kh, kw]
    np.testing.assert_allclose(l1_norm(conv), [np.abs(conv[c]).sum() for c in range(4)])
    np.testing.assert_array_equal(l1_norm(np.array([-1.5, 2.0])), [1.5, 2.0])  # BN γ, 1-D


def test_fpgm_scores_the_filter_nearest_the_median_lowest():
    rng = np.random.default_rng(1)
    corners = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [-4.0, -4.0, -4.0]])
    filters = np.concatenate([corners + 0.1 * rng.standard_normal(corners.shape),
                              [corners.mean(axis=0) + 0.01]])
    scores = fpgm(filters.reshape(5, 3, 1, 1))
    assert scores.argmin() == 4
    naive = [sum(np.linalg.norm(filters[i] - filters[j]) for j in range(5)) for i in range(5)]
    np.testing.assert_allclose(scores, naive, rtol=1e-12)


def naive_chip(acts):
    """Nuclear-norm drop per channel, per image, by explicit SVDs; mean over images."""
    n, c = acts.shape[:2]
    out = np.zeros(c)
    for a in acts.reshape(n, c, -1).astype(np.float64):
        full = np.linalg.norm(a, "nuc")
        out += [full - np.linalg.norm(np.delete(a, i, axis=0), "nuc") for i in range(c)]
    return out / n


def test_chip_matches_explicit_svds_and_streams():
    acts = np.maximum(np.random.default_rng(2).standard_normal((7, 5, 6, 6)), 0)
    np.testing.assert_allclose(chip(acts), naive_chip(acts), rtol=1e-7)
    np.testing.assert_allclose(chip(iter(np.array_split(acts, 3))), chip(acts), rtol=1e-12)
    pooled = acts.transpose(1, 0, 2, 3).reshape(5, -1)
    np.testing.assert_allclose(chip(acts, per_image=False), naive_chip(pooled[None]), rtol=1e-7)
    acc = ChipAccumulator(per_image=False)
    for part in np.array_split(acts, 4):
        acc.update(part)
    np.testing.assert_allclose(acc.result(), chip(acts, per_image=False), rtol=1e-10)


def test_chip_scores_a_duplicated_channel_low():
    rng = np.random.default_rng(3)
    acts = rng.standard_normal((6, 4, 8, 8))
    acts[:, 1] = acts[:, 0]                  # channel 1 repeats channel 0
    ci = chip(acts)
    assert ci[0] == pytest.approx(ci[1], rel=1e-6)
    assert max(ci[0], ci[1]) < min(ci[2], ci[3])


def test_chip_rejects_bad_batches():
    acc = ChipAccumulator()
    acc.update(np.ones((2, 3, 4, 4)))
    with pytest.raises(DataError, match=r"C=4 \(\[2, 4, 4, 4\]\).*C=3"):
        acc.update(np.ones((2, 4, 4, 4)))
    with pytest.raises(DataError, match=r"\[3, 4, 5\]"):
        chip(np.ones((3, 4, 5)))


def test_hrank_and_random():
    r = np.array([3.0, 1.5, 7.0])
    np.testing.assert_array_equal(hrank(r), r)
    a, b = random_scores(10, seed=5), random_scores(10, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, random_scores(10, seed=6))
    assert a.shape == (10,) and np.all((a >= 0) & (a < 1))


def test_registry_common_signature():
    w = np.random.default_rng(4).standard_normal((6, 2, 3, 3))
    assert set(CRITERIA) == {"l1", "l2", "fpgm", "random"}
    for name, fn in CRITERIA.items():
        s = fn(w, 0)
        assert s.shape == (6,) and s.dtype == np.float64, name
    np.testing.assert_array_equal(score_filters("l1", w), l1_norm(w))
    np.testing.assert_array_equal(score_filters("random", w, seed=9), random_scores(6, 9))
    with pytest.raises(ValueError, match="known"):
        score_filters("taylor", w)


def test_bad_filters_raise_data_error_naming_shape():
    w = np.ones((3, 2, 1, 1))
    w[1, 0, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"\[3, 2, 1, 1\]"):
        l2_norm(w)
    with pytest.raises(DataError, match=r"\[0, 4\]"):
        fpgm(np.ones((0, 4)))
