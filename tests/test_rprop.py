"""Rprop beyond the case table: step sizes fixed at creation, sign flips, clamping, NaN and complex entries."""

import numpy as np
import pytest

import arrayopt

from harness import assert_close, draws, run_pair


@pytest.mark.ref
def test_rprop_step_sizes_come_from_lr_once(torch):
    start, grads = draws(3, [(4,), (3,)], 6)

    def change_lr(k, opt):
        if k == 2:
            for group in opt.param_groups:
                group["lr"] = 10.0  # no effect: the step sizes live in the state

    ours, _, ours_p, theirs_p = run_pair(torch, "Rprop", {"lr": 0.05}, start, grads, change_lr)
    assert_close(ours_p, theirs_p)
    assert np.all(ours.state[ours_p[0]]["step_size"] <= 0.05 * 1.2**6)


def test_rprop_sign_flip_shrinks_the_step_and_skips_the_entry():
    p = arrayopt.Parameter(np.array([1.0, 1.0, 1.0]))
    opt = arrayopt.Rprop([p], lr=0.25, etas=(0.5, 1.5), step_sizes=(1 / 64, 4.0))
    p.grad = np.array([1.0, 1.0, 0.0])
    opt.step()  # no history: the step sizes stay lr; a zero gradient does not move
    np.testing.assert_array_equal(p.data, [0.75, 0.75, 1.0])
    state = opt.state[p]
    p.grad = np.array([2.0, -3.0, 1.0])
    opt.step()  # same sign: grow; flipped: shrink, no move, prev = 0; no history: keep
    np.testing.assert_array_equal(state["step_size"], [0.375, 0.125, 0.25])
    np.testing.assert_array_equal(p.data, [0.375, 0.75, 0.75])
    np.testing.assert_array_equal(state["prev"], [2.0, 0.0, 1.0])
    assert not np.signbit(state["prev"][1])
    p.grad = np.array([1.0, -1.0, 1.0])
    opt.step()  # after a flip the entry has no history: it moves by its unchanged step size
    np.testing.assert_array_equal(state["step_size"], [0.5625, 0.125, 0.375])
    np.testing.assert_array_equal(p.data, [-0.1875, 0.875, 0.375])
    np.testing.assert_array_equal(state["prev"], [1.0, -1.0, 1.0])


def test_rprop_step_sizes_are_clamped():
    p = arrayopt.Parameter(np.array([0.0, 0.0]))
    opt = arrayopt.Rprop([p], lr=0.1, etas=(0.1, 10.0), step_sizes=(0.05, 0.5))
    for g in ([1.0, 1.0], [1.0, -1.0], [1.0, 1.0], [1.0, -1.0]):
        p.grad = np.array(g)
        opt.step()
    np.testing.assert_array_equal(opt.state[p]["step_size"], [0.5, 0.05])


@pytest.mark.ref
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rprop_nan_and_zero_gradients_like_torch(torch, dtype):
    start = [np.array([1.0, -1.0, 2.0, 0.5, 0.0], dtype=dtype)]
    grads = [
        [np.array([1.0, np.nan, 0.0, -0.0, 1.0], dtype=dtype)],
        [np.array([1.0, 1.0, 1.0, -2.0, np.nan], dtype=dtype)],
        [np.array([-1.0, 1.0, 0.0, 1.0, 1.0], dtype=dtype)],
    ]
    ours, theirs, ours_p, theirs_p = run_pair(torch, "Rprop", {"lr": 0.1}, start, grads)
    np.testing.assert_array_equal(ours_p[0].data, theirs_p[0].detach().numpy())
    for key in ("prev", "step_size"):
        np.testing.assert_array_equal(ours.state[ours_p[0]][key], theirs.state[theirs_p[0]][key].numpy())


def test_rprop_complex_step_sizes_start_at_lr_in_both_parts():
    p = arrayopt.Parameter(np.zeros(2, dtype=np.complex64))
    opt = arrayopt.Rprop([p], lr=np.array(0.25))
    p.grad = np.array([1 + 1j, -1j], dtype=np.complex64)
    opt.step()
    np.testing.assert_array_equal(opt.state[p]["step_size"], np.full(2, 0.25 + 0.25j, dtype=np.complex64))
    np.testing.assert_array_equal(p.data, np.array([-0.25 - 0.25j, 0.25j], dtype=np.complex64))
