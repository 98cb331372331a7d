"""ASGD, NAdam, RAdam and Adafactor: argument errors, step-time errors, and state edge cases.

Error rows give torch 2.13's type and message (from its source) and are checked
against torch itself when it is importable; the rest compares behaviour with torch
where torch is the reference.
"""

import copy

import numpy as np
import pytest

import arrayopt


@pytest.mark.parametrize("name", ["ASGD", "NAdam", "RAdam", "Adafactor"])
def test_array_lr_must_have_one_element(name):
    with pytest.raises(ValueError, match=r"^Tensor lr must be 1-element$"):
        getattr(arrayopt, name)(None, lr=np.array([0.1, 0.2]))


@pytest.mark.ref
@pytest.mark.parametrize("name", ["ASGD", "NAdam", "RAdam", "Adafactor"])
def test_array_lr_error_matches_torch(name, torch):
    with pytest.raises(ValueError, match=r"^Tensor lr must be 1-element$"):
        getattr(torch.optim, name)(None, lr=torch.tensor([0.1, 0.2]))


# -- defaults, group keys and load-time defaults ------------------------------------------


@pytest.mark.ref
@pytest.mark.parametrize("name", ["ASGD", "NAdam", "RAdam", "Adafactor"])
def test_signature_defaults_and_group_keys_match_torch(name, torch):
    import inspect

    ours, theirs = inspect.signature(getattr(arrayopt, name)), inspect.signature(getattr(torch.optim, name))
    assert list(ours.parameters) == list(theirs.parameters)
    for key, parameter in theirs.parameters.items():
        assert ours.parameters[key].kind == parameter.kind, key
        assert ours.parameters[key].default == parameter.default, key
    mine = getattr(arrayopt, name)([arrayopt.Parameter(np.zeros(2))])
    reference = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))])
    assert list(mine.param_groups[0]) == list(reference.param_groups[0])
    assert mine.defaults == reference.defaults


@pytest.mark.ref
@pytest.mark.parametrize("name", ["ASGD", "NAdam", "RAdam", "Adafactor"])
def test_load_fills_the_same_missing_group_keys_as_torch(name, torch):
    mine = getattr(arrayopt, name)([arrayopt.Parameter(np.zeros(2))])
    reference = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))])
    keys = ("maximize", "foreach", "capturable", "differentiable", "decoupled_weight_decay")
    saved = reference.state_dict()
    for key in keys:
        saved["param_groups"][0].pop(key, None)
    reference.load_state_dict(saved)
    # A key torch does not fill back would fail torch's next step (KeyError); arrayopt
    # refuses such a state dict when it is loaded, and changes nothing.
    unfilled = [key for key in keys if key in mine.param_groups[0] and key not in reference.param_groups[0]]
    for key in unfilled:
        broken = mine.state_dict()
        broken["param_groups"][0].pop(key)
        with pytest.raises(ValueError, match=f"has no '{key}', which {name} needs"):
            mine.load_state_dict(broken)
        assert key in mine.param_groups[0]
    saved = mine.state_dict()
    for key in keys:
        if key not in unfilled:
            saved["param_groups"][0].pop(key, None)
    mine.load_state_dict(saved)
    assert mine.param_groups[0].keys() - {"params"} == reference.param_groups[0].keys() - {"params"} | set(unfilled)
    for key, value in reference.param_groups[0].items():
        if key != "params":
            assert mine.param_groups[0][key] == value, key


def test_nadam_and_radam_accept_mixed_int_betas():
    """Unlike Adam, torch's NAdam and RAdam do not require both betas to be floats."""
    for name in ("NAdam", "RAdam"):
        opt = getattr(arrayopt, name)([arrayopt.Parameter(np.zeros(2))], betas=[0, 0.99])
        assert opt.param_groups[0]["betas"] == [0, 0.99]  # kept as given, as torch


# -- scalar state (ASGD's eta and mu, NAdam's mu_product) -----------------------------------


def _run(opt, params, grads):
    for g in grads:
        for p, gp in zip(params, g, strict=True):
            p.grad = gp.copy()
        opt.step()


def test_asgd_scalars_are_float32_arrays_of_the_parameters_library(xp):
    p = arrayopt.Parameter(xp.asarray(np.array([1.0, 2.0])))
    opt = arrayopt.ASGD([p], lr=0.1, t0=1.0)
    for _ in range(3):
        p.grad = xp.asarray(np.array([0.5, -0.5]))
        opt.step()
    state = opt.state_dict()["state"][0]
    for key in ("eta", "mu"):
        assert state[key].dtype == xp.float32 and state[key].shape == ()
        assert type(state[key]) is type(p.data)
    assert float(state["mu"]) == 0.5  # 1 / max(1, 3 - t0)
    assert float(state["eta"]) == float(np.float32(0.1 / (1 + 1e-4 * 0.1 * 3) ** 0.75))


@pytest.mark.ref
@pytest.mark.parametrize("name", ["ASGD", "NAdam"])
def test_state_replaced_by_hand_is_read_as_torch_reads_it(name, torch):
    """A scalar entry the optimizer did not write (here: replaced between steps) is used."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal(4)
    grads = [rng.standard_normal(4) for _ in range(4)]
    key, value = ("eta", 0.25) if name == "ASGD" else ("mu_product", 0.5)
    p = arrayopt.Parameter(data.copy())
    mine = getattr(arrayopt, name)([p], lr=0.1)
    tp = torch.nn.Parameter(torch.from_numpy(data.copy()))
    reference = getattr(torch.optim, name)([tp], lr=0.1)
    for i, g in enumerate(grads):
        p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
        mine.step()
        reference.step()
        if i == 1:
            mine.state[p][key] = np.asarray(value, dtype=np.float32)
            reference.state[tp][key] = torch.tensor(value)
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-14, atol=0)


@pytest.mark.ref
@pytest.mark.parametrize("name", ["ASGD", "NAdam"])
def test_state_with_python_numbers_is_loaded_as_torch_loads_it(name, torch):
    """Old pickles may hold Python numbers for the scalars: both turn them into 0-d arrays."""
    rng = np.random.default_rng(1)
    data = rng.standard_normal(3)
    grads = [rng.standard_normal(3) for _ in range(3)]
    p = arrayopt.Parameter(data.copy())
    mine = getattr(arrayopt, name)([p], lr=0.1, **({"t0": 0.0} if name == "ASGD" else {}))
    tp = torch.nn.Parameter(torch.from_numpy(data.copy()))
    reference = getattr(torch.optim, name)([tp], lr=0.1, **({"t0": 0.0} if name == "ASGD" else {}))
    p.grad, tp.grad = grads[0].copy(), torch.from_numpy(grads[0].copy())
    mine.step()
    reference.step()
    for opt in (mine, reference):
        saved = copy.deepcopy(opt.state_dict())
        for key, value in saved["state"][0].items():
            if key in ("step", "eta", "mu", "mu_product"):
                saved["state"][0][key] = float(value)
        opt.load_state_dict(saved)
    for key in ("eta", "mu", "mu_product"):
        if key in reference.state[tp]:
            assert mine.state[p][key].dtype == np.float32 and mine.state[p][key].shape == ()
            assert float(mine.state[p][key]) == reference.state[tp][key].item()
    for g in grads[1:]:
        p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
        mine.step()
        reference.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-14, atol=0)


# -- Adafactor specifics -----------------------------------------------------------------------


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
