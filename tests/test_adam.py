"""Adam and AdamW beyond the case table: loaded groups, and zero gradients after a real step, as torch."""

import copy

import numpy as np
import pytest

import arrayopt
from arrayopt import Parameter

from test_optimizer import params


def test_setstate_fills_missing_keys_and_adamw_forces_decoupling():
    p = params(1)[0]
    opt = arrayopt.AdamW([p])
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    for key in ("amsgrad", "maximize", "foreach", "decoupled_weight_decay"):
        del sd["param_groups"][0][key]
    sd["state"][0]["step"] = np.array(1.0, dtype=np.float32)
    opt.load_state_dict(sd)
    group = opt.param_groups[0]
    assert group["amsgrad"] is False and group["maximize"] is False and group["foreach"] is None
    assert group["decoupled_weight_decay"] is True
    assert opt.state[p]["step"] == 1.0 and isinstance(opt.state[p]["step"], float)
    assert opt.defaults["differentiable"] is False


@pytest.mark.ref
def test_zero_grads_after_a_real_step_move_adam_like_torch(torch):
    """Only from a fresh state: after one nonzero gradient, Adam's momentum keeps moving."""
    start = np.array([1.0, -2.0, 0.5])
    theirs, ours = torch.nn.Parameter(torch.from_numpy(start.copy())), Parameter(start.copy())
    t_opt, o_opt = torch.optim.Adam([theirs], lr=0.1), arrayopt.Adam([ours], lr=0.1)
    for k in range(3):
        theirs.grad = torch.full((3,), 1.0 if k == 0 else 0.0, dtype=torch.float64)
        ours.grad = np.full(3, 1.0 if k == 0 else 0.0)
        before = ours.data.copy()
        t_opt.step()
        o_opt.step()
        assert not np.array_equal(ours.data, before)
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12, atol=0)
