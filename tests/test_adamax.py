"""Adamax beyond the case table: where its eps sits."""

import numpy as np

import arrayopt


def test_adamax_eps_is_inside_the_maximum():
    p = arrayopt.Parameter(np.array([1.0, 1.0]))
    opt = arrayopt.Adamax([p], lr=0.1, betas=(0.5, 0.5), eps=0.25)
    p.grad = np.array([0.0, 1.0])
    opt.step()
    np.testing.assert_array_equal(opt.state[p]["exp_inf"], [0.25, 1.25])
    p.grad = np.array([0.0, 0.0])
    opt.step()  # max(0.5 u, 0 + eps): the old norm decays until eps takes over
    np.testing.assert_array_equal(opt.state[p]["exp_inf"], [0.25, 0.625])
