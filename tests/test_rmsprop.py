"""RMSprop beyond the case table: its optional buffers turned on or off between steps, as torch."""

import copy

import numpy as np
import pytest

import arrayopt

from harness import assert_close, draws, run_pair


@pytest.mark.parametrize(
    ("option", "value", "key"), [("momentum", 0.9, "momentum_buffer"), ("centered", True, "grad_avg")]
)
def test_rmsprop_option_turned_on_later_raises_keyerror_before_any_change(option, value, key):
    ps = [arrayopt.Parameter(np.ones(2)), arrayopt.Parameter(np.ones(3))]
    opt = arrayopt.RMSprop(ps)
    for p in ps:
        p.grad = np.full(p.shape, 0.5)
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    data = [p.data.copy() for p in ps]
    opt.param_groups[0][option] = value
    with pytest.raises(KeyError, match=key):
        opt.step()
    for p, d in zip(ps, data, strict=True):
        np.testing.assert_array_equal(p.data, d)
    after = opt.state_dict()
    for index, entries in before["state"].items():
        assert after["state"][index]["step"] == entries["step"]
        np.testing.assert_array_equal(after["state"][index]["square_avg"], entries["square_avg"])


@pytest.mark.ref
@pytest.mark.parametrize(("option", "value"), [("momentum", 0.9), ("centered", True)])
def test_rmsprop_option_turned_on_later_fails_in_torch_too(option, value, torch):
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.RMSprop([p])
    p.grad = torch.full((2,), 0.5)
    opt.step()
    opt.param_groups[0][option] = value
    with pytest.raises(KeyError):
        opt.step()


@pytest.mark.ref
def test_rmsprop_options_turned_off_later_keep_their_unused_buffers_like_torch(torch):
    start, grads = draws(2, [(3,), (2, 2)], 6)

    def switch_off(k, opt):
        if k == 3:
            opt.param_groups[0]["momentum"] = 0
            opt.param_groups[0]["centered"] = False

    ours, theirs, ours_p, theirs_p = run_pair(
        torch, "RMSprop", {"momentum": 0.9, "centered": True}, start, grads, switch_off
    )
    assert_close(ours_p, theirs_p)
    assert list(ours.state_dict()["state"][0]) == list(theirs.state_dict()["state"][0])
