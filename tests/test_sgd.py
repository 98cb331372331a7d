"""SGD beyond the case table: no state without momentum, as torch."""

import arrayopt

from test_optimizer import params


def test_sgd_without_momentum_keeps_no_state():
    opt = arrayopt.SGD(params(), lr=0.1)
    opt.step()
    assert opt.state_dict()["state"] == {} and len(opt.state) == 0
