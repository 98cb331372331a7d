"""Adafactor beyond the case table: what it refuses (as torch), empty and factored parameters, its eps1."""

import numpy as np
import pytest

import arrayopt


def _run(opt, params, grads):
    for g in grads:
        for p, gp in zip(params, g, strict=True):
            p.grad = gp.copy()
        opt.step()


def test_adafactor_refuses_complex_parameters_before_changing_anything():
    real = arrayopt.Parameter(np.ones((2, 3)))
    cplx = arrayopt.Parameter(np.ones(3, dtype=np.complex128))
    real.grad, cplx.grad = np.ones((2, 3)), np.ones(3, dtype=np.complex128)
    opt = arrayopt.Adafactor([{"params": [real]}, {"params": [cplx]}])
    with pytest.raises(RuntimeError, match=r"^Adafactor does not support complex parameters$"):
        opt.step()
    np.testing.assert_array_equal(real.data, np.ones((2, 3)))
    assert not opt.state


@pytest.mark.ref
def test_adafactor_complex_error_matches_torch(torch):
    tp = torch.nn.Parameter(torch.ones(3, dtype=torch.complex128))
    tp.grad = torch.ones(3, dtype=torch.complex128)
    with pytest.raises(RuntimeError, match=r"^Adafactor does not support complex parameters$"):
        torch.optim.Adafactor([tp]).step()


def test_adafactor_leaves_an_empty_parameter_alone(xp):
    p = arrayopt.Parameter(xp.zeros((2, 0)))
    q = arrayopt.Parameter(xp.asarray(np.array([1.0, -1.0])))
    opt = arrayopt.Adafactor([p, q])
    for _ in range(2):
        p.grad, q.grad = xp.zeros((2, 0)), xp.asarray(np.array([0.5, 0.5]))
        opt.step()
    assert opt.state[p]["step"] == 2.0
    row_var = opt.state[p]["row_var"]
    np.testing.assert_array_equal(arrayopt.backends.get_backend(row_var).to_numpy(row_var), np.zeros((2, 1)))
    assert tuple(opt.state[p]["col_var"].shape) == (1, 0)
    assert opt.state[q]["step"] == 2.0


@pytest.mark.ref
def test_torch_adafactor_fails_on_an_empty_parameter(torch):
    """The deviation documented in Adafactor's docstring: torch computes the RMS as 0/0."""
    tp = torch.nn.Parameter(torch.zeros(2, 0))
    tp.grad = torch.zeros(2, 0)
    with pytest.raises(ZeroDivisionError):
        torch.optim.Adafactor([tp]).step()


@pytest.mark.ref
@pytest.mark.parametrize("first", ["float32", "float64"])
def test_adafactor_eps1_none_comes_from_the_first_parameter(first, torch):
    """eps=(None, ...): the first updated parameter's dtype sets eps1 for the whole group."""
    second = "float64" if first == "float32" else "float32"
    rng = np.random.default_rng(2)
    # tiny gradients, so that the second moment is clamped by eps1**2 with float32's eps
    # but not with float64's: the result depends on which eps1 is used
    datas = [rng.standard_normal((3, 4)).astype(first), rng.standard_normal((3, 4)).astype(second)]
    grads = [[(1e-9 * rng.standard_normal((3, 4))).astype(d.dtype) for d in datas] for _ in range(3)]
    params = [arrayopt.Parameter(d.copy()) for d in datas]
    tparams = [torch.nn.Parameter(torch.from_numpy(d.copy())) for d in datas]
    mine = arrayopt.Adafactor(params, lr=0.1)
    reference = torch.optim.Adafactor(tparams, lr=0.1)
    for g in grads:
        for p, tp, gp in zip(params, tparams, g, strict=True):
            p.grad, tp.grad = gp.copy(), torch.from_numpy(gp.copy())
        mine.step()
        reference.step()
    for p, tp, d in zip(params, tparams, datas, strict=True):
        ulp = np.finfo(d.dtype).eps
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=8 * ulp, atol=8 * ulp)
    # the other choice of eps1 gives visibly different numbers
    other = [arrayopt.Parameter(d.copy()) for d in datas]
    eps1 = float(np.finfo(second).eps)
    alternative = arrayopt.Adafactor(other, lr=0.1, eps=(eps1, 1e-3))
    _run(alternative, other, grads)
    assert not np.allclose(other[0].data, params[0].data, rtol=1e-4)


def test_adafactor_factors_the_last_two_dimensions():
    p = arrayopt.Parameter(np.ones((2, 3, 4)))
    p.grad = np.ones((2, 3, 4))
    opt = arrayopt.Adafactor([p])
    opt.step()
    assert opt.state[p]["row_var"].shape == (2, 3, 1)
    assert opt.state[p]["col_var"].shape == (2, 1, 4)
    assert "variance" not in opt.state[p]


def test_adafactor_refuses_state_of_the_wrong_shape_before_changing_anything():
    p = arrayopt.Parameter(np.ones((2, 3)))
    p.grad = np.ones((2, 3))
    opt = arrayopt.Adafactor([p])
    opt.step()
    saved = p.data.copy()
    opt.state[p]["col_var"] = np.zeros((1, 4))
    with pytest.raises(ValueError, match=r"col_var has shape \(1, 4\) .* needs shape \(1, 3\)"):
        opt.step()
    np.testing.assert_array_equal(p.data, saved)
    assert opt.state[p]["step"] == 1.0
