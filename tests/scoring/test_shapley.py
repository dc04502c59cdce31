"""Shapley values: efficiency, symmetry, null player, sampling vs brute force, closed form."""
import json

import numpy as np
import pytest

from onnxprune.errors import DataError
from onnxprune.scoring.shapley import (ShapleyEstimate, exact_shapley, permutation_shapley,
                               pointwise_reconstruction_gram, quadratic_game_shapley,
                               reconstruction_game, reconstruction_gram)


def network_game(n: int, seed: int, dead: int | None = None, twins: tuple | None = None):
    """A small nonlinear 'network' game: v(m) = −‖relu(B (m ⊙ x)) − relu(B x)‖² over 16 samples.

    ``dead``: a channel whose activation is 0 (a null player); ``twins``: two channels with the
    same activations and the same outgoing weights (symmetric players).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, n)) + 0.5
    b = rng.standard_normal((5, n))
    if dead is not None:
        x[:, dead] = 0.0
    if twins is not None:
        i, j = twins
        x[:, j], b[:, j] = x[:, i], b[:, i]
    full = np.maximum(x @ b.T, 0)

    def batch_value(masks: np.ndarray) -> np.ndarray:
        m = np.asarray(masks, dtype=np.float64)
        out = np.maximum(np.einsum("sn,bn,on->bso", x, m, b), 0)
        return -np.square(out - full).sum(axis=(1, 2))

    return batch_value


def single(batch_value):
    """The one-coalition value function exact_shapley expects."""
    return lambda mask: float(batch_value(mask[None])[0])


def ends(batch_value, n):
    """(v(∅), v(all))."""
    v = batch_value(np.array([[False] * n, [True] * n]))
    return v[0], v[1]


def test_exact_efficiency():
    game = network_game(7, seed=0)
    phi = exact_shapley(single(game), 7)
    v0, v1 = ends(game, 7)
    assert phi.sum() == pytest.approx(v1 - v0, rel=1e-12)


def test_exact_on_additive_game_gives_the_weights():
    w = np.array([3.0, -1.0, 0.5, 2.0])
    phi = exact_shapley(lambda m: float(w @ m), 4)
    np.testing.assert_allclose(phi, w, atol=1e-12)


def test_symmetry_and_null_player_exact():
    game = network_game(7, seed=1, dead=6, twins=(1, 4))
    phi = exact_shapley(single(game), 7)
    assert phi[1] == pytest.approx(phi[4], rel=1e-12)
    assert abs(phi[6]) < 1e-12 * np.abs(phi).max()


def test_permutation_efficiency_holds_for_each_permutation():
    game = network_game(9, seed=2)
    v0, v1 = ends(game, 9)
    for seed in range(5):
        est = permutation_shapley(game, 9, num_permutations=1, seed=seed)
        assert est.values.sum() == pytest.approx(v1 - v0, rel=1e-12)
        assert np.all(np.isnan(est.stderr))
    est = permutation_shapley(game, 9, num_permutations=40, seed=0)
    assert est.values.sum() == pytest.approx(v1 - v0, rel=1e-12)
    assert est.num_evaluations == 2 + 40 * 8


def test_permutation_matches_exact_within_stderr():
    n = 8
    game = network_game(n, seed=3)
    exact = exact_shapley(single(game), n)
    est = permutation_shapley(game, n, num_permutations=3000, seed=7, batch_size=512)
    assert np.all(est.stderr > 0)
    z = np.abs(est.values - exact) / est.stderr
    assert z.max() < 4.0, z
    # the standard error shrinks like 1/sqrt(P)
    small = permutation_shapley(game, n, num_permutations=300, seed=7)
    ratio = small.stderr / est.stderr
    assert np.all((ratio > np.sqrt(10) * 0.7) & (ratio < np.sqrt(10) * 1.3)), ratio


def test_permutation_symmetry_and_null_player():
    n = 8
    game = network_game(n, seed=4, dead=0, twins=(2, 5))
    est = permutation_shapley(game, n, num_permutations=2000, seed=3)
    assert np.all(est.values[0] == 0.0) and est.stderr[0] == 0.0
    diff_se = np.hypot(est.stderr[2], est.stderr[5])
    assert abs(est.values[2] - est.values[5]) < 4 * diff_se


def test_permutation_is_reproducible_and_independent_of_batch_size():
    game = network_game(6, seed=5)
    seen = []

    def spy(masks):
        seen.append(masks.shape[0])
        return game(masks)

    a = permutation_shapley(spy, 6, num_permutations=50, seed=11, batch_size=7)
    assert max(seen) <= 7
    b = permutation_shapley(game, 6, num_permutations=50, seed=11, batch_size=1000)
    np.testing.assert_array_equal(a.values, b.values)
    c = permutation_shapley(game, 6, num_permutations=50, seed=12)
    assert not np.array_equal(a.values, c.values)


def saturating_game(n: int):
    """v(S) = 1 − exp(−Σ_{i∈S} w_i): the first few big players already reach ~v(all)."""
    w = np.linspace(4.0, 0.5, n)
    return lambda masks: 1.0 - np.exp(-(np.asarray(masks, float) @ w))


def test_truncation_saves_evaluations_and_keeps_efficiency_within_tolerance():
    n, tol = 10, 0.02
    game = saturating_game(n)
    full = permutation_shapley(game, n, num_permutations=200, seed=0)
    trunc = permutation_shapley(game, n, num_permutations=200, seed=0, truncation_tol=tol)
    assert trunc.num_evaluations < 0.6 * full.num_evaluations
    v0, v1 = ends(game, n)
    assert abs(trunc.values.sum() - (v1 - v0)) <= tol * abs(v1 - v0)
    assert abs(full.values.sum() - (v1 - v0)) <= 1e-12
    # the game is monotone (marginals >= 0), so a permutation's dropped marginals are each at
    # most what remained, < tol·range: no value moves by more, and the bias is bounded by it
    bias = tol * abs(v1 - v0)
    assert np.all(np.abs(trunc.values - full.values) <= bias)
    exact = exact_shapley(single(game), n)
    assert np.all(np.abs(trunc.values - exact) <= 4 * full.stderr + bias)


def test_truncation_result_independent_of_batch_size():
    game = saturating_game(8)
    a = permutation_shapley(game, 8, 60, seed=3, truncation_tol=0.05, batch_size=1)
    b = permutation_shapley(game, 8, 60, seed=3, truncation_tol=0.05, batch_size=4096)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.num_evaluations <= b.num_evaluations


def contributions(c: int, seed: int) -> np.ndarray:
    """Per-channel contributions A_i [C, 3, 4, 5] with a dead channel and two twins."""
    a = np.random.default_rng(seed).standard_normal((c, 3, 4, 5))
    a[0] = 0.0
    a[2] = a[1]
    return a


def test_closed_form_equals_brute_force():
    a = contributions(8, seed=0)
    g = reconstruction_gram(a)
    phi = quadratic_game_shapley(g)
    exact = exact_shapley(single(reconstruction_game(g)), 8)
    np.testing.assert_allclose(phi, exact, rtol=1e-10, atol=1e-10)
    total = a.reshape(8, -1).sum(axis=0)
    np.testing.assert_allclose(phi, a.reshape(8, -1) @ total, rtol=1e-12)
    assert phi.sum() == pytest.approx(np.square(total).sum(), rel=1e-12)  # = v(all) − v(∅)
    assert phi[0] == 0.0 and phi[1] == pytest.approx(phi[2], rel=1e-12)


def test_closed_form_against_permutation_sampling():
    g = reconstruction_gram(contributions(10, seed=1))
    est = permutation_shapley(reconstruction_game(g), 10, num_permutations=2000, seed=0)
    z = np.abs(est.values - quadratic_game_shapley(g)) / np.maximum(est.stderr, 1e-300)
    assert z[1:].max() < 4.0 and est.values[0] == 0.0


def test_reconstruction_gram_is_additive_over_batches():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 6, 7))
    g = reconstruction_gram(a)
    np.testing.assert_allclose(g, reconstruction_gram(a[:, :2]) + reconstruction_gram(a[:, 2:]),
                               rtol=1e-12)
    naive = np.array([[np.sum(a[i] * a[j]) for j in range(5)] for i in range(5)])
    np.testing.assert_allclose(g, naive, rtol=1e-12)


def test_pointwise_gram_equals_explicit_contributions():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 5, 5))      # [N, C, H, W]
    w = rng.standard_normal((3, 6, 1, 1))      # 1×1 Conv [O, C, 1, 1]
    contrib = np.einsum("oc,nchw->cnohw", w[:, :, 0, 0], x)
    np.testing.assert_allclose(pointwise_reconstruction_gram(x, w), reconstruction_gram(contrib),
                               rtol=1e-10)
    with pytest.raises(DataError, match=r"\[4, 6, 5, 5\]"):
        pointwise_reconstruction_gram(x, w[:, :5])


def test_bad_value_functions_raise_data_error():
    with pytest.raises(DataError, match=r"shape \[2, 1\]"):
        permutation_shapley(lambda m: np.zeros((m.shape[0], 1)), 3, 4, seed=0)
    with pytest.raises(DataError, match="NaN"):
        permutation_shapley(lambda m: np.full(m.shape[0], np.nan), 3, 4, seed=0)
    with pytest.raises(DataError, match=r"\[3, 4\]"):
        quadratic_game_shapley(np.zeros((3, 4)))


def test_estimate_round_trips_through_json():
    est = permutation_shapley(saturating_game(4), 4, 10, seed=0)
    back = ShapleyEstimate.from_dict(json.loads(json.dumps(est.to_dict())))
    np.testing.assert_array_equal(back.values, est.values)
    np.testing.assert_array_equal(back.stderr, est.stderr)
    assert (back.num_permutations, back.num_evaluations) == (10, est.num_evaluations)
    one = permutation_shapley(saturating_game(4), 4, 1, seed=0)
    assert np.all(np.isnan(ShapleyEstimate.from_dict(json.loads(json.dumps(one.to_dict()))).stderr))
    with pytest.raises(ValueError):
        est.values[0] = 1.0
