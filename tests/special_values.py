"""Shared by the tests of the compiled paths (numba, ufunc plans): rules over values where libraries differ."""

import numpy as np


def assert_same_bits(a, b):
    assert a.keys() == b.keys()
    for key, value in b.items():
        np.testing.assert_array_equal(a[key], value, err_msg=key)
        # assert_array_equal takes 0.0 == -0.0; the bits must agree too (these runs have no NaN)
        assert np.asarray(a[key]).tobytes() == np.asarray(value).tobytes(), key


SPECIAL = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 3.0e38, 0.1, -2.5]


def special_pairs(dtype):
    values = np.array(SPECIAL, dtype=dtype)
    a, b = np.meshgrid(values, values)
    return np.ascontiguousarray(a.ravel()), np.ascontiguousarray(b.ravel())


def every_function(xp, out, a, b, s, *, which):
    if which == "arithmetic":
        out[...] = (a + b) * s - a / b
    elif which == "maximum":
        out[...] = xp.maximum(a, b)
    elif which == "minimum":
        out[...] = xp.minimum(a, b)
    elif which == "sign":
        out[...] = xp.sign(a) + 0 * b
    elif which == "abs":
        out[...] = xp.abs(a) - xp.absolute(b)
    elif which == "sqrt":
        out[...] = xp.sqrt(a) + xp.square(b)
    elif which == "where":
        out[...] = xp.where(a < b, a, s) + xp.where(a >= b, 1.5, b) + xp.where(a == b, a, -b)
    elif which == "compare":
        out[...] = xp.where(a <= b, a, b) - xp.where(a != b, a, 2.0) * xp.where(a > b, s, b)
    elif which == "power":
        out[...] = a**2 - -b
    elif which == "host":
        out += (1 - s) * a + s / 3 - (-s)
    elif which == "literal_store":
        out[...] = 0.5
        out *= a


WHICH = [
    "arithmetic",
    "maximum",
    "minimum",
    "sign",
    "abs",
    "sqrt",
    "where",
    "compare",
    "power",
    "host",
    "literal_store",
]
