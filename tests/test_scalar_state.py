"""0-d scalar state (ASGD's eta and mu, NAdam's mu_product): dtype, library, and read or loaded as torch does."""

import copy

import numpy as np
import pytest

import arrayopt


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
