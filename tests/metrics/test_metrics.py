"""Layer metrics: rank, entropy, CKA / nHSIC, projection, fusion, records."""
import json

import numpy as np
import pytest
from scipy.stats import ortho_group

from onnxprune.errors import DataError
from onnxprune.metrics import (ChannelSummary, EntropyAccumulator, LayerMetrics, NHSICImportance,
                               ProjectedFeatures, RankAccumulator, center_gram,
                               information_concentration, linear_cka, linear_gram, nhsic_importance,
                               nhsic_matrix, normalize_across_layers, normalize_entropy, rbf_gram)


def low_rank_maps(n, c, h, w, rank, seed, dtype=np.float32):
    """Activations [N, C, H, W] whose every map has exactly ``rank`` (generic factors)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, c, h, rank))
    v = rng.standard_normal((n, c, rank, w))
    return np.einsum("ncir,ncrj->ncij", u, v).astype(dtype)


# --------------------------------------------------------------------------- rank

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_of_maps_built_with_rank_3(dtype):
    acts = low_rank_maps(6, 5, 14, 10, rank=3, seed=0, dtype=dtype)
    acc = RankAccumulator()
    acc.update(acts[:2])
    acc.update(acts[2:])
    res = acc.result()
    np.testing.assert_array_equal(res.channel, np.full(5, 3.0))
    assert res.layer == 3.0 and res.layer_norm == pytest.approx(3 / 10) and res.count == 6
    back = ChannelSummary.from_dict(json.loads(json.dumps(res.to_dict())))
    np.testing.assert_array_equal(back.channel, res.channel)
    assert (back.layer, back.layer_norm, back.count) == (res.layer, res.layer_norm, res.count)


def test_rank_equals_numpy_matrix_rank_per_map():
    rng = np.random.default_rng(1)
    acts = low_rank_maps(4, 3, 8, 8, rank=5, seed=1) + np.float32(1e-4) * rng.standard_normal(
        (4, 3, 8, 8)).astype(np.float32)
    acts[0, 0] = 0.0                                  # dead map: rank 0
    for rtol in (None, 1e-3):
        acc = RankAccumulator(rtol=rtol)
        acc.update(acts)
        kw = {} if rtol is None else {"rtol": rtol}
        naive = np.array([[np.linalg.matrix_rank(acts[n, c], **kw) for c in range(3)]
                          for n in range(4)]).mean(axis=0)
        np.testing.assert_array_equal(acc.result().channel, naive)
    loose, tight = RankAccumulator(rtol=1e-2), RankAccumulator()
    loose.update(acts[1:])
    tight.update(acts[1:])
    # a loose tolerance sees the rank-5 signal; the default float32 one also counts the noise
    assert np.all(loose.result().channel == 5) and np.all(tight.result().channel > 7)


def test_effective_rank_of_equal_singular_values_is_exact():
    rng = np.random.default_rng(2)
    maps = np.empty((3, 2, 12, 9))
    for n in range(3):
        for c in range(2):
            q1 = np.linalg.qr(rng.standard_normal((12, 12)))[0][:, :3]
            q2 = np.linalg.qr(rng.standard_normal((9, 9)))[0][:, :3]
            maps[n, c] = 7.0 * q1 @ q2.T           # singular values 7, 7, 7
    maps[0, 1] = 0.0
    acc = RankAccumulator(mode="effective")
    acc.update(maps)
    np.testing.assert_allclose(acc.result().channel, [3.0, 2.0], rtol=1e-9)


def test_rank_rejects_bad_batches_naming_shapes():
    acc = RankAccumulator()
    acc.update(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"\[3, 5, 4\].*\[3, 4, 4\]"):
        acc.update(np.zeros((2, 3, 5, 4), np.float32))
    bad = np.zeros((2, 3, 4, 4))
    bad[1, 2, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"\[2, 3, 4, 4\].*1 NaN"):
        acc.update(bad)
    with pytest.raises(DataError, match=r"\[3, 4\]"):
        RankAccumulator().update(np.zeros((3, 4)))
    with pytest.raises(DataError, match="before any batch"):
        RankAccumulator().result()


# --------------------------------------------------------------------------- entropy

def test_gaussian_entropy_matches_analytic_value():
    rng = np.random.default_rng(3)
    sigma = np.array([0.1, 1.0, 3.0])
    mu = np.array([-2.0, 0.0, 5.0])
    acc = EntropyAccumulator("gaussian")
    n_per_batch = 10 * 64 * 64
    for _ in range(5):
        acc.update(mu[None, :, None, None] + sigma[None, :, None, None]
                   * rng.standard_normal((10, 3, 64, 64)))
    res = acc.result()
    analytic = 0.5 * np.log(2 * np.pi * np.e * sigma ** 2)
    # sd of ½·log(sample variance) is sqrt(1 / (2n)); allow 5 sd
    tol = 5 * np.sqrt(1 / (2 * 5 * n_per_batch))
    np.testing.assert_allclose(res.channel, analytic, atol=tol)
    assert res.layer == pytest.approx(res.channel.mean()) and res.layer_norm is None


def test_gaussian_entropy_streaming_equals_one_shot():
    rng = np.random.default_rng(4)
    acts = np.maximum(rng.standard_normal((23, 4, 7, 5)) * [[[[1]], [[2]], [[3]], [[1e3]]]] + 1e3,
                      0).astype(np.float32)
    one = EntropyAccumulator("gaussian")
    one.update(acts)
    many = EntropyAccumulator("gaussian")
    for start in (0, 1, 8, 15):
        many.update(acts[start:start + {0: 1, 1: 7, 8: 7, 15: 8}[start]])
    exact = acts.astype(np.float64).transpose(1, 0, 2, 3).reshape(4, -1).var(axis=1)
    np.testing.assert_allclose(many.variance(), exact, rtol=1e-10)
    np.testing.assert_allclose(many.result().channel, one.result().channel, rtol=1e-12)


def test_gaussian_entropy_of_dead_channel_is_finite_and_lowest():
    acts = np.random.default_rng(5).standard_normal((4, 3, 5, 5))
    acts[:, 1] = 0.0
    acc = EntropyAccumulator("gaussian", var_floor=1e-12)
    acc.update(acts)
    h = acc.result().channel
    assert np.isfinite(h[1]) and h[1] == pytest.approx(0.5 * np.log(2 * np.pi * np.e * 1e-12))
    assert h.argmin() == 1


def test_histogram_streaming_equals_one_shot_for_the_same_range():
    rng = np.random.default_rng(6)
    acts = rng.standard_normal((20, 3, 6, 6))
    rng_lo, rng_hi = np.array([-3.0, -2.0, -4.0]), np.array([3.0, 2.0, 4.0])
    one = EntropyAccumulator("histogram", bins=17, value_range=(rng_lo, rng_hi))
    one.update(acts)
    many = EntropyAccumulator("histogram", bins=17, value_range=(rng_lo, rng_hi))
    for part in np.array_split(acts, 6):
        many.update(part)
    np.testing.assert_array_equal(many.counts(), one.counts())
    np.testing.assert_array_equal(many.result().channel, one.result().channel)
    # equals np.histogram with values outside the range clipped into the edge bins
    for c in range(3):
        vals = np.clip(acts[:, c].ravel(), rng_lo[c], rng_hi[c])
        ref = np.histogram(vals, bins=17, range=(rng_lo[c], rng_hi[c]))[0]
        np.testing.assert_array_equal(one.counts()[c], ref)
        p = ref[ref > 0] / ref.sum()
        assert one.result().channel[c] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)


def test_histogram_range_from_first_batch_and_clipping():
    acc = EntropyAccumulator("histogram", bins=4, margin=0.0)
    acc.update(np.linspace(0, 1, 8).reshape(1, 1, 2, 4))       # range fixed to [0, 1]
    acc.update(np.array([-5.0, 9.0]).reshape(1, 1, 1, 2))      # clipped into the edge bins
    np.testing.assert_array_equal(acc.counts()[0], [3, 2, 2, 3])


def test_histogram_entropy_bounds_and_normalisation():
    rng = np.random.default_rng(7)
    acts = rng.random((50, 2, 20, 20))
    acts[:, 1] = 0.25                                         # constant channel: entropy 0
    acc = EntropyAccumulator("histogram", bins=16, value_range=(0.0, 1.0))
    acc.update(acts)
    res = acc.result()
    assert res.channel[1] == 0.0
    # uniform data: entropy of 16 equal bins up to sampling error (KL ~ (bins − 1) / 2n)
    assert np.log(16) - 1e-3 < res.channel[0] <= np.log(16)
    assert res.layer_norm == pytest.approx(res.channel.mean() / np.log(16))
    assert 0 <= res.layer_norm <= 1


def test_normalize_entropy():
    h = np.array([-1.3, 0.2, 0.7])
    g = normalize_entropy(h, "gaussian")
    np.testing.assert_allclose(g, np.exp(h - 0.7))
    np.testing.assert_allclose(normalize_entropy(h + 5.0, "gaussian"), g)  # shift invariant
    np.testing.assert_allclose(normalize_entropy([0.0, np.log(8)], "histogram", bins=8), [0, 1])
    with pytest.raises(DataError, match=r"\[2, 2\]"):
        normalize_entropy(np.zeros((2, 2)), "gaussian")


# --------------------------------------------------------------------------- CKA / nHSIC

def naive_cka(x, y):
    """Textbook linear CKA with an explicit centring matrix, O(n²) memory."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    kx, ky = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return np.trace(kx @ ky) / np.sqrt(np.trace(kx @ kx) * np.trace(ky @ ky))


def feature_cka(x, y):
    """Kornblith et al. (2019), eq. 5: ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F) on centred features."""
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def pair(seed, n=30, d1=20, d2=15):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d1))
    y = np.tanh(x @ rng.standard_normal((d1, d2))) + 0.3 * rng.standard_normal((n, d2))
    return x, y


def test_linear_cka_equals_naive_implementations():
    for seed in range(3):
        x, y = pair(seed)
        val = linear_cka(linear_gram(x), linear_gram(y))
        assert val == pytest.approx(naive_cka(x, y), rel=1e-10)
        assert val == pytest.approx(feature_cka(x, y), rel=1e-10)
        assert 0 < val < 1


def test_linear_cka_of_x_with_itself_is_one_and_symmetric():
    x, y = pair(10)
    assert linear_cka(linear_gram(x), linear_gram(x)) == pytest.approx(1.0, abs=1e-12)
    kx, ky = linear_gram(x), linear_gram(y)
    assert linear_cka(kx, ky) == pytest.approx(linear_cka(ky, kx), rel=1e-14)


def test_linear_cka_invariant_to_orthogonal_transform_and_isotropic_scaling():
    x, y = pair(11)
    q = ortho_group.rvs(x.shape[1], random_state=0)
    base = linear_cka(linear_gram(x), linear_gram(y))
    assert linear_cka(linear_gram(3.7 * x @ q), linear_gram(y)) == pytest.approx(base, rel=1e-10)
    assert linear_cka(linear_gram(x), linear_gram(1e-3 * y)) == pytest.approx(base, rel=1e-10)
    # ... but not to an anisotropic scaling (the test can fail)
    scale = np.linspace(0.1, 10, x.shape[1])
    assert abs(linear_cka(linear_gram(x * scale), linear_gram(y)) - base) > 1e-3


def test_rbf_gram_median_bandwidth_and_invariances():
    x, y = pair(12)
    d2 = np.square(x[:, None, :] - x[None, :, :]).sum(-1)
    med = np.median(d2[np.triu_indices(len(x), 1)])
    np.testing.assert_allclose(rbf_gram(x), np.exp(-d2 / (2 * med)), rtol=1e-10)
    np.testing.assert_allclose(rbf_gram(x, bandwidth=2.0), np.exp(-d2 / 8), rtol=1e-10)
    q = ortho_group.rvs(x.shape[1], random_state=1)
    base = linear_cka(rbf_gram(x), rbf_gram(y))
    assert linear_cka(rbf_gram(5 * x @ q), rbf_gram(y)) == pytest.approx(base, rel=1e-8)


def test_cka_of_constant_features_is_zero_and_bad_grams_raise():
    x, _ = pair(13)
    assert linear_cka(linear_gram(x), linear_gram(np.ones((30, 4)))) == 0.0
    with pytest.raises(DataError, match=r"\[30, 30\] and \[20, 20\]"):
        linear_cka(linear_gram(x), linear_gram(x[:20]))
    with pytest.raises(DataError, match=r"\[3, 4\]"):
        center_gram(np.zeros((3, 4)))


def structured(n, d, rank, seed):
    """ReLU of a rank-``rank`` latent plus noise: like activations, a small effective rank."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, rank))
    return np.maximum(latent @ rng.standard_normal((rank, d)) + 0.3 * rng.standard_normal((n, d)),
                      0), latent


def test_projection_is_exact_below_dim_and_streams():
    x, _ = structured(20, 300, 4, seed=0)
    pf = ProjectedFeatures(dim=512)
    pf.update(x[:7])
    pf.update(x[7:])
    np.testing.assert_allclose(pf.gram(), x @ x.T, rtol=1e-5)   # features stored as float32
    big, _ = structured(20, 3000, 4, seed=1)
    for kind in ("sketch", "gaussian"):
        a, b = ProjectedFeatures(256, seed=3, kind=kind), ProjectedFeatures(256, seed=3, kind=kind)
        a.update(big)
        for part in np.array_split(big, 4):
            b.update(part.reshape(-1, 30, 10, 10))            # any [N, ...] shape flattens
        assert a.features().shape == (20, 256) and b.num_images == 20
        np.testing.assert_allclose(a.features(), b.features(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", ["sketch", "gaussian"])
def test_projection_preserves_cka_approximately(kind):
    n, dim = 48, 1024
    x, latent = structured(n, 6000, 8, seed=2)
    rng = np.random.default_rng(3)
    y = np.maximum(np.square(latent[:, :4]) @ rng.standard_normal((4, 4000))
                   + 0.3 * rng.standard_normal((n, 4000)), 0)
    exact = linear_cka(linear_gram(x), linear_gram(y))
    kc = center_gram(linear_gram(x))
    # E‖K̃_proj − K̃‖²_F / ‖K̃‖²_F = ((tr K̃)² / ‖K̃‖²_F + 1) / dim, exactly for a Gaussian map
    predicted = (np.trace(kc) ** 2 / np.sum(kc ** 2) + 1) / dim
    rel2, errs = [], []
    for seed in range(6):
        px, py = ProjectedFeatures(dim, seed, kind), ProjectedFeatures(dim, seed + 50, kind)
        px.update(x)
        py.update(y)
        rel2.append(np.sum((center_gram(px.gram()) - kc) ** 2) / np.sum(kc ** 2))
        errs.append(linear_cka(px.gram(), py.gram()) - exact)
    assert 0.5 < np.mean(rel2) / predicted < 1.5, (np.mean(rel2), predicted)
    assert np.max(np.abs(errs)) < 0.03, errs


def test_nhsic_matrix_and_importance_favour_redundant_layers():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((40, 30))
    layers = [a, a @ ortho_group.rvs(30, random_state=2) * 2.0,   # a copy of a, rotated, scaled
              rng.standard_normal((40, 25)), rng.standard_normal((40, 12))]
    grams = [linear_gram(l) for l in layers]
    m = nhsic_matrix(grams)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-12)
    np.testing.assert_allclose(m, m.T)
    assert m[0, 1] == pytest.approx(1.0, abs=1e-10)
    assert m[0, 2] == pytest.approx(linear_cka(grams[0], grams[2]), rel=1e-12)
    imp = nhsic_importance(grams, beta=10.0)
    assert imp.s[0] > imp.s[2] and imp.s[1] > imp.s[3]
    np.testing.assert_allclose(imp.s, m.sum(1) - 1.0, rtol=1e-12)
    assert imp.s_norm.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(imp.alpha, np.exp(-10.0 * imp.s_norm))
    assert imp.alpha[0] < imp.alpha[2]                       # redundant ⇒ pruned more
    back = NHSICImportance.from_dict(json.loads(json.dumps(imp.to_dict())))
    np.testing.assert_array_equal(back.alpha, imp.alpha)
    with pytest.raises(DataError, match="shapes"):
        nhsic_matrix([grams[0], linear_gram(a[:20])])


# --------------------------------------------------------------------------- fusion

def test_information_concentration_formulas():
    r, e = np.array([0.2, 0.4, 0.8]), np.array([1.0, 0.5, 2.0])
    rn, en = r / 0.8, e / 2.0
    np.testing.assert_allclose(information_concentration(r, e), np.sqrt(rn * en))
    np.testing.assert_allclose(information_concentration(r, e, "geometric", lam=0.3),
                               rn ** 0.3 * en ** 0.7)
    np.testing.assert_allclose(information_concentration(r, e, "harmonic", lam=0.5),
                               2 * rn * en / (rn + en))
    np.testing.assert_allclose(information_concentration(r, e, "convex", lam=0.25),
                               0.25 * rn + 0.75 * en)
    for fusion in ("geometric", "harmonic", "convex"):
        out = information_concentration(r, e, fusion)
        assert np.all((out > 0) & (out <= 1))
        assert information_concentration(r, e, fusion, lam=1.0) == pytest.approx(rn)
    assert information_concentration([0.0, 1.0], [1.0, 1.0])[0] == pytest.approx(1e-3)


def test_information_concentration_rejects_bad_input():
    with pytest.raises(DataError, match="need all >= 0"):
        information_concentration([0.5, 1.0], [-0.2, 0.3])
    with pytest.raises(DataError, match=r"\[2\].*\[3\]"):
        information_concentration([0.5, 1.0], [0.2, 0.3, 0.4])
    with pytest.raises(ValueError):
        information_concentration([0.5], [0.5], fusion="arithmetic")
    np.testing.assert_allclose(normalize_across_layers([2.0, 4.0, 0.0]), [0.5, 1.0, 1e-6])


def test_layer_metrics_round_trip_and_read_only():
    lm = LayerMetrics(group_id=3, rank=0.4, entropy=1.2, concentration=0.7, nhsic=None,
                      channel_rank=np.array([1.0, 2.0]), channel_entropy=[0.5, 0.25])
    d = json.loads(json.dumps(lm.to_dict()))
    assert d["channel_entropy"] == [0.5, 0.25] and d["nhsic"] is None
    back = LayerMetrics.from_dict(d)
    assert (back.group_id, back.rank, back.entropy, back.concentration, back.nhsic) == \
        (3, 0.4, 1.2, 0.7, None)
    np.testing.assert_array_equal(back.channel_rank, [1.0, 2.0])
    with pytest.raises(ValueError):
        back.channel_rank[0] = 9.0
    bare = LayerMetrics.from_dict(LayerMetrics(0, 0.1, 0.2).to_dict())
    assert bare.channel_rank is None and bare.concentration is None
