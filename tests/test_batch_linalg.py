"""The batched small linear algebra and the per-problem boxes of ``arrayopt.batch``, against NumPy's ``linalg``.

Each function works on B problems at once with the problem axis last; the reference is
``numpy.linalg`` (or a closed form) applied to each problem.
"""

import numpy as np
import pytest

from arrayopt.batch._bounds import Box
from arrayopt.batch._linalg import cholesky_solve, gram, jacobi_svd, jt_dot, packed_quadratic, r_factor, tri

from batch_problems import to_numpy


@pytest.fixture
def xp(xp):
    """The namespace the batch code itself works in: the backend's (NumPy itself, array-api-compat's
    wrapper of CuPy, whose ``asarray`` takes ``device=``), not always the raw library module."""
    from arrayopt.backends import get_backend

    return get_backend(xp.asarray([0.0])).xp


def dense(A_packed, n):
    """(B, n, n) matrices from the packed lower triangles (n(n+1)/2, B)."""
    A = to_numpy(A_packed)
    out = np.zeros((A.shape[1], n, n))
    for i in range(n):
        for j in range(i + 1):
            out[:, i, j] = out[:, j, i] = A[tri(i, j)]
    return out


def stack_last(xp, a):
    """A (B, ...) NumPy array as an xp array with the problem axis last."""
    return xp.asarray(np.ascontiguousarray(np.moveaxis(a, 0, -1)))


@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_gram_jt_dot_and_quadratic(n, xp):
    rng = np.random.default_rng(n)
    J = rng.standard_normal((9, 6, n))  # B=9 problems, m=6
    r = rng.standard_normal((9, 6))
    w = rng.uniform(0.5, 2.0, (9, 6))
    s = rng.standard_normal((9, n))
    Jx = xp.asarray(np.ascontiguousarray(J.transpose(2, 1, 0)))
    np.testing.assert_allclose(dense(gram(xp, Jx), n), np.einsum("bmi,bmj->bij", J, J), rtol=1e-13)
    weighted = gram(xp, Jx, stack_last(xp, w))
    np.testing.assert_allclose(dense(weighted, n), np.einsum("bmi,bm,bmj->bij", J, w, J), rtol=1e-13)
    np.testing.assert_allclose(to_numpy(jt_dot(xp, Jx, stack_last(xp, r))).T, np.einsum("bmi,bm->bi", J, r), rtol=1e-13)
    A = gram(xp, Jx)
    quadratic = np.einsum("bi,bij,bj->b", s, dense(A, n), s)
    np.testing.assert_allclose(to_numpy(packed_quadratic(xp, A, stack_last(xp, s))), quadratic, rtol=1e-12)


@pytest.mark.parametrize("n", [1, 3, 5, 8])
def test_cholesky_solve_with_damping_and_fixed_variables(n, xp):
    rng = np.random.default_rng(10 + n)
    J = rng.standard_normal((12, 2 * n, n))
    A = np.einsum("bmi,bmj->bij", J, J)
    b = rng.standard_normal((12, n))
    damping = rng.uniform(0.0, 1.0, (12, n))
    free = (rng.uniform(size=(12, n)) > 0.3).astype(float)
    packed = xp.stack([xp.asarray(A[:, i, j]) for i in range(n) for j in range(i + 1)])
    x, ok = cholesky_solve(xp, packed, stack_last(xp, damping), stack_last(xp, b))
    expected = np.linalg.solve(A + damping[:, :, None] * np.eye(n), b[..., None])[..., 0]
    np.testing.assert_allclose(to_numpy(x).T, expected, rtol=1e-9, atol=1e-12)
    assert to_numpy(ok).all()
    x, ok = cholesky_solve(xp, packed, stack_last(xp, damping), stack_last(xp, b), stack_last(xp, free))
    x = to_numpy(x).T
    for k in range(12):
        F = free[k] > 0
        reduced = np.linalg.solve((A[k] + np.diag(damping[k]))[np.ix_(F, F)], b[k][F])
        np.testing.assert_allclose(x[k][F], reduced, rtol=1e-9, atol=1e-12)
        assert (x[k][~F] == 0).all()


def test_cholesky_solve_reports_indefinite_and_non_finite_problems(xp):
    matrices = np.array([[[2.0, 1.0], [1.0, 2.0]], [[1.0, 2.0], [2.0, 1.0]], [[np.nan, 0.0], [0.0, 1.0]]])
    packed = xp.stack([xp.asarray(matrices[:, i, j]) for i in range(2) for j in range(i + 1)])
    x, ok = cholesky_solve(xp, packed, xp.zeros((2, 3)), xp.ones((2, 3)))
    assert to_numpy(ok).tolist() == [True, False, False]
    np.testing.assert_allclose(to_numpy(x)[:, 0], [1 / 3, 1 / 3])


@pytest.mark.parametrize("rank", ["full", "deficient", "zero column"])
def test_r_factor_and_jacobi_svd_give_the_singular_values(rank, xp):
    rng = np.random.default_rng(20)
    J = rng.standard_normal((10, 8, 4)) * np.array([1.0, 1e3, 1e-2, 1.0])  # badly scaled columns
    if rank == "deficient":
        J[:, :, 3] = J[:, :, 0] - 2 * J[:, :, 1]
    elif rank == "zero column":
        J[:, :, 2] = 0.0
    Jx = xp.asarray(np.ascontiguousarray(J.transpose(2, 1, 0)))
    R = r_factor(xp, Jx)
    Rn = to_numpy(R).transpose(2, 1, 0)  # (B, n_rows, n_cols)
    assert np.allclose(np.tril(Rn, -1), 0.0)
    np.testing.assert_allclose(Rn.transpose(0, 2, 1) @ Rn, J.transpose(0, 2, 1) @ J, rtol=1e-10, atol=1e-8)
    s, V = jacobi_svd(xp, R)
    s, V = to_numpy(s).T, to_numpy(V).transpose(2, 1, 0)  # V[b][:, j]: vector j
    expected = np.linalg.svd(J, compute_uv=False)
    np.testing.assert_allclose(np.sort(s, axis=1)[:, ::-1], expected, rtol=1e-10, atol=1e-12 * expected.max())
    np.testing.assert_allclose(V.transpose(0, 2, 1) @ V, np.broadcast_to(np.eye(4), V.shape), atol=1e-12)
    # J V = U S: the columns of J V are orthogonal with norms s
    JV = J @ V
    gram_JV = JV.transpose(0, 2, 1) @ JV
    np.testing.assert_allclose(gram_JV, np.einsum("bi,ij->bij", s**2, np.eye(4)), atol=1e-9 * expected.max())


# -- boxes -------------------------------------------------------------------------------


def test_box_parse_shapes_and_errors(xp):
    box = Box.parse(xp, (0.0, xp.asarray([1.0, 2.0, 3.0])), n=3, count=4, dtype=xp.float64)
    assert box.lower.shape == (3, 1) and box.upper.shape == (3, 1)
    per_problem = Box.parse(xp, (xp.zeros((4, 3)), 1.0), n=3, count=4, dtype=xp.float64)
    assert per_problem.lower.shape == (3, 4)
    assert Box.parse(xp, (-np.inf, np.inf), n=3, count=4, dtype=xp.float64) is None
    with pytest.raises(ValueError, match=r"problem 2, variable 1 has lb=5\.0 > ub=1\.0"):
        lb = np.zeros((4, 3))
        lb[2, 1] = 5.0
        Box.parse(xp, (xp.asarray(lb), 1.0), n=3, count=4, dtype=xp.float64)
    with pytest.raises(ValueError, match=r"does not broadcast to \(4, 3\)"):
        Box.parse(xp, (xp.zeros((2, 3)), 1.0), n=3, count=4, dtype=xp.float64)
    with pytest.raises(ValueError, match="x0 is infeasible: problem 3, variable 0"):
        box.check_inside(xp, xp.asarray([[0.5, 0.5, 0.5, -0.1], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    box.check_inside(xp, xp.asarray([[np.nan], [1.0], [3.0]]))  # NaN is not "outside"


def test_box_binding_scaled_gradient_and_active(xp):
    lower = np.array([[0.0], [-np.inf], [0.0]])
    upper = np.array([[1.0], [np.inf], [np.inf]])
    box = Box(xp.asarray(lower), xp.asarray(upper))
    x = np.array([[0.0, 1.0, 0.5, 0.0], [3.0, -3.0, 0.0, 1.0], [0.0, 2.0, 5.0, 0.0]])
    g = np.array([[1.0, -1.0, 2.0, -1.0], [1.0, 1.0, -1.0, 0.0], [-1.0, 3.0, 4.0, 2.0]])
    binding = to_numpy(box.binding(xp.asarray(x), xp.asarray(g)))
    expected = ((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0))
    np.testing.assert_array_equal(binding, expected)
    # Coleman-Li: v = u - x where g < 0 and u finite, x - l where g > 0 and l finite, else 1
    v = np.where((g < 0) & np.isfinite(upper), upper - x, np.where((g > 0) & np.isfinite(lower), x - lower, 1.0))
    np.testing.assert_allclose(to_numpy(box.scaled_gradient(xp.asarray(x), xp.asarray(g))), g * v)
    active = to_numpy(box.active(xp, xp.asarray(x), xp.asarray(g)))
    np.testing.assert_array_equal(active, np.where(expected & (g > 0), -1, np.where(expected, 1, 0)))
    projected = to_numpy(box.project(xp.asarray(np.array([[-1.0, 2.0], [5.0, -5.0], [-2.0, 7.0]]))))
    np.testing.assert_array_equal(projected, [[0.0, 1.0], [5.0, -5.0], [0.0, 7.0]])


def test_difference_steps_stay_inside(xp):
    box = Box(xp.asarray([[0.0]]), xp.asarray([[1.0]]))
    x = xp.asarray([0.5, 1.0, 0.0, 0.99, 0.5])
    h = xp.asarray([0.1, 0.1, -0.1, 0.1, 0.8])
    step = to_numpy(box.difference_step(xp, x, h, 0))
    np.testing.assert_allclose(step, [0.1, -0.1, 0.1, -0.1, 0.5])
    assert ((to_numpy(x) + step >= 0) & (to_numpy(x) + step <= 1)).all()
    fixed = Box(xp.asarray([[0.3]]), xp.asarray([[0.3]]))
    assert to_numpy(fixed.difference_step(xp, xp.asarray([0.3]), xp.asarray([0.01]), 0)).tolist() == [0.0]
