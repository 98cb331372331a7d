"""arrayopt.Parameter: what it accepts, what it refuses, and how it is hashed."""

import copy
import pickle

import numpy as np
import pytest

from arrayopt import Parameter
from arrayopt.backends import get_backend


def to_numpy(a):
    return np.asarray(get_backend(a).to_numpy(a))


def test_holds_the_array_and_an_optional_grad(xp):
    data = xp.asarray([1.0, 2.0, 3.0])
    p = Parameter(data, name="w")
    assert p.data is data
    assert p.grad is None
    grad = xp.asarray([0.5, 0.5, 0.5])
    p.grad = grad
    assert p.grad is grad
    p.grad = None
    assert p.grad is None
    assert p.shape == (3,)
    assert p.dtype == data.dtype


@pytest.mark.parametrize(
    "grad, error, words",
    [
        (lambda xp: xp.zeros(4), ValueError, ["'w'", "shape (4,)", "shape (3,)"]),
        (lambda xp: xp.zeros((3, 1)), ValueError, ["'w'", "shape (3, 1)"]),
        (lambda xp: xp.zeros(3, dtype=xp.float32), ValueError, ["'w'", "dtype", "float32"]),
        (lambda xp: [0.0, 0.0, 0.0], TypeError, ["'w'", "gradient must be an array", "list"]),
        (lambda xp: 1.5, TypeError, ["'w'", "float"]),
    ],
)
def test_refuses_a_grad_that_does_not_fit(xp, grad, error, words):
    p = Parameter(xp.zeros(3, dtype=xp.float64), name="w")
    with pytest.raises(error) as info:
        p.grad = grad(xp)
    for word in words:
        assert word in str(info.value)
    assert p.grad is None


def test_refuses_a_grad_from_another_library():
    strict = pytest.importorskip("array_api_strict")
    p = Parameter(np.zeros(3), name="w")
    with pytest.raises(
        ValueError, match=r"Parameter 'w': gradient is a array_api_strict array, but the data is a numpy array"
    ):
        p.grad = strict.zeros(3, dtype=strict.float64)


@pytest.mark.parametrize(
    "data, error, words",
    [
        (lambda xp: xp.asarray([1, 2, 3]), TypeError, ["floating-point", "int"]),
        (lambda xp: [1.0, 2.0], TypeError, ["data must be an array", "list"]),
        (lambda xp: None, TypeError, ["data must be an array"]),
    ],
)
def test_refuses_data_that_cannot_be_optimised(xp, data, error, words):
    with pytest.raises(error) as info:
        Parameter(data(xp), name="b")
    for word in [*words, "'b'"]:
        assert word in str(info.value)


def test_refuses_read_only_and_scalar_numpy_data():
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(TypeError, match="read-only"):
        Parameter(frozen)
    with pytest.raises(TypeError, match="ndarray") as info:
        Parameter(np.float64(1.0))
    assert "pass np.asarray(x), a 0-d array" in str(info.value)  # the fix, in the message
    with pytest.raises(TypeError, match=r"data must be an array, got float \(make one with .*np.asarray\(x\)\)"):
        Parameter(1.0)


def test_new_data_must_fit_an_existing_grad(xp):
    p = Parameter(xp.zeros(3), name="w")
    p.grad = xp.ones(3)
    with pytest.raises(ValueError, match=r"new data has shape \(2,\), but the gradient has shape \(3,\)"):
        p.data = xp.zeros(2)
    p.data = xp.ones(3)
    assert to_numpy(p.data).tolist() == [1.0, 1.0, 1.0]


def test_hashed_and_compared_by_identity(xp):
    a = Parameter(xp.zeros(2))
    b = Parameter(xp.zeros(2))
    assert a != b and a == a
    assert len({a, b, a}) == 2
    state = {a: 1}
    assert b not in state and state[a] == 1


def test_repr_names_what_matters():
    p = Parameter(np.zeros((2, 3), dtype=np.float32), name="layer.weight")
    text = repr(p)
    for word in ("'layer.weight'", "(2, 3)", "float32", "numpy", "grad=None"):
        assert word in text


def test_pickle_and_deepcopy_keep_data_grad_and_name():
    p = Parameter(np.arange(3.0), name="w")
    p.grad = np.ones(3)
    for clone in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert clone is not p and clone.name == "w"
        np.testing.assert_array_equal(clone.data, p.data)
        np.testing.assert_array_equal(clone.grad, p.grad)
        assert clone.data is not p.data


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="name"):
        Parameter(np.zeros(1), name=3)
