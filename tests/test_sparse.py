"""Sparse gradients: SparseGrad itself, and SGD, Adagrad and SparseAdam fed sparse gradients.

Parity runs (``sparse_harness``) are checked against golden torch trajectories always,
and against live torch when it is importable. Errors are compared with torch's type and
message, and must leave every parameter and every piece of state untouched.
"""

import copy
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import arrayopt
import arrayopt.optimizers.adagrad
import arrayopt.optimizers.sparse_adam
import arrayopt.sparse
from arrayopt import Parameter, SparseGrad
from arrayopt.backends import get_backend

import cpu_elementwise
import harness
import sparse_harness
from make_golden import load_sparse

CASE_DTYPES = [(case, dtype) for case in sparse_harness.CASES for dtype in case.dtypes]


def to_numpy(a):
    if isinstance(a, SparseGrad):
        a = a.to_dense()
    return np.array(get_backend(a).to_numpy(a), copy=True)


@pytest.fixture
def quiet_torch(torch):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        yield torch


# -- SparseGrad ---------------------------------------------------------------------------


def test_coalesce_sums_repeats_and_sorts(xp):
    indices = np.array([[2, 0, 2, 1, 0], [1, 0, 1, 2, 0]])
    values = np.arange(1.0, 11.0).reshape(5, 2)
    g = SparseGrad(xp.asarray(indices), xp.asarray(values), (3, 4, 2))
    assert not g.is_coalesced() and g.nnz == 5 and g.sparse_dim == 2 and g.dense_dim == 1
    c = g.coalesce()
    assert c.is_coalesced() and c.coalesce() is c
    np.testing.assert_array_equal(to_numpy(c.indices), [[0, 1, 2], [0, 2, 1]])
    np.testing.assert_array_equal(to_numpy(c.values), [[3 + 9, 4 + 10], [7, 8], [1 + 5, 2 + 6]])
    expected = np.zeros((3, 4, 2))
    np.add.at(expected, tuple(indices), values)
    np.testing.assert_array_equal(to_numpy(g), expected)
    np.testing.assert_array_equal(to_numpy(c), expected)
    np.testing.assert_array_equal(to_numpy((-g).coalesce().values), -to_numpy(c.values))


@pytest.mark.ref
def test_coalesce_equals_torch(quiet_torch):
    torch = quiet_torch
    rng = np.random.default_rng(3)
    for shape, k in sparse_harness.SHAPES:
        indices = np.stack([rng.integers(0, shape[d], 40) for d in range(k)])
        values = rng.standard_normal((40, *shape[k:])).astype(np.float32)
        ours = SparseGrad(indices, values, shape).coalesce()
        theirs = torch.sparse_coo_tensor(torch.from_numpy(indices), torch.from_numpy(values), shape).coalesce()
        np.testing.assert_array_equal(ours.indices, theirs.indices().numpy())
        np.testing.assert_allclose(ours.values, theirs.values().numpy(), rtol=4 * 2.0**-23, atol=1e-6)


def test_trivially_coalesced_and_empty(xp):
    one = SparseGrad(xp.asarray([[1]]), xp.asarray([2.0]), (3,))
    assert one.is_coalesced()
    trusted = SparseGrad(xp.asarray([[0, 2]]), xp.asarray([1.0, 2.0]), (3,), is_coalesced=True)
    assert trusted.coalesce() is trusted
    g = SparseGrad(xp.asarray([[0, 0]]), xp.asarray([1.0, 2.0]), (3,))
    g.zero_()
    assert g.nnz == 0 and g.is_coalesced() and g.indices.shape == (1, 0)
    np.testing.assert_array_equal(to_numpy(g), np.zeros(3))
    assert "nnz=0" in repr(g)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda xp: ([[0]], xp.asarray([1.0]), (3,)), TypeError, "SparseGrad: indices must be an array, got list"),
        (lambda xp: (xp.asarray([[0]]), [1.0], (3,)), TypeError, "SparseGrad: values must be an array, got list"),
        (
            lambda xp: (xp.asarray([[0.0]]), xp.asarray([1.0]), (3,)),
            TypeError,
            "SparseGrad: indices must be an integer array, got dtype",
        ),
        (
            lambda xp: (xp.asarray([0]), xp.asarray([1.0]), (3,)),
            ValueError,
            "SparseGrad: indices must have shape (sparse_dims, nnz), got shape (1,)",
        ),
        (
            lambda xp: (xp.asarray([[0], [0]]), xp.asarray([1.0]), (3,)),
            ValueError,
            "SparseGrad: indices has 2 rows (sparse dimensions), but a gradient of shape (3,) takes 1 to 1",
        ),
        (
            lambda xp: (xp.zeros((0, 1), dtype=xp.int64), xp.asarray([[1.0, 1.0, 1.0]]), (3,)),
            ValueError,
            "takes 1 to 1",
        ),
        (
            lambda xp: (xp.asarray([[0, 1]]), xp.asarray([1.0]), (3,)),
            ValueError,
            "SparseGrad: values must have shape (nnz, *shape[1:]) = (2,), got (1,)",
        ),
        (
            lambda xp: (xp.asarray([[0]]), xp.asarray([[1.0, 2.0]]), (3, 3)),
            ValueError,
            "SparseGrad: values must have shape (nnz, *shape[1:]) = (1, 3), got (1, 2)",
        ),
        (
            lambda xp: (xp.asarray([[0, 3]]), xp.asarray([1.0, 1.0]), (3,)),
            ValueError,
            "SparseGrad: indices[0] must lie in [0, 3) for shape (3,), got values from 0 to 3",
        ),
        (
            lambda xp: (xp.asarray([[0, 1], [-1, 0]]), xp.asarray([1.0, 1.0]), (3, 2)),
            ValueError,
            "SparseGrad: indices[1] must lie in [0, 2) for shape (3, 2), got values from -1 to 0",
        ),
        (lambda xp: (xp.asarray([[0]]), xp.asarray([1.0]), (-3,)), ValueError, "non-negative"),
        (lambda xp: (xp.asarray([[0]]), xp.asarray([1.0]), 3), TypeError, "shape must be a sequence of ints"),
    ],
)
def test_sparse_grad_refuses_bad_parts_by_name(xp, make, error, message):
    with pytest.raises(error) as info:
        SparseGrad(*make(xp))
    assert message in str(info.value)


def test_sparse_grad_refuses_mixed_libraries():
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(ValueError, match="indices is a numpy array, but values is a array_api_strict array"):
        SparseGrad(np.array([[0]]), strict.asarray([1.0]), (3,))


def test_indices_become_int64(xp):
    g = SparseGrad(xp.asarray([[2, 0]], dtype=xp.int32), xp.asarray([1.0, 2.0]), (3,))
    assert g.indices.dtype == xp.int64


# -- Parameter.grad -------------------------------------------------------------------------


def test_parameter_takes_a_matching_sparse_grad(xp):
    p = Parameter(xp.zeros((4, 2)), name="w")
    g = SparseGrad(xp.asarray([[3, 1]]), xp.ones((2, 2)), (4, 2))
    p.grad = g
    assert p.grad is g and "grad=sparse" in repr(p)
    with pytest.raises(ValueError, match=r"Parameter 'w': gradient has shape \(4, 3\), but the data has shape"):
        p.grad = SparseGrad(xp.asarray([[0]]), xp.ones((1, 3)), (4, 3))
    with pytest.raises(ValueError, match=r"Parameter 'w': gradient has dtype .*float32"):
        p.grad = SparseGrad(xp.asarray([[0]]), xp.ones((1, 2), dtype=xp.float32), (4, 2))
    assert p.grad is g
    with pytest.raises(ValueError, match=r"new data has shape \(3, 2\), but the gradient has shape \(4, 2\)"):
        p.data = xp.zeros((3, 2))


def test_parameter_refuses_a_sparse_grad_of_another_library():
    strict = pytest.importorskip("array_api_strict")
    p = Parameter(np.zeros(3), name="w")
    g = SparseGrad(strict.asarray([[0]]), strict.asarray([1.0], dtype=strict.float64), (3,))
    with pytest.raises(ValueError, match="gradient is a array_api_strict array, but the data is a numpy array"):
        p.grad = g


def test_scipy_sparse_gradients_are_converted():
    sp = pytest.importorskip("scipy.sparse")
    rows, cols = np.array([0, 2, 0, 1]), np.array([1, 3, 1, 0])
    data = np.array([1.0, 2.0, 3.0, 4.0])
    dense = np.zeros((3, 4))
    np.add.at(dense, (rows, cols), data)
    for matrix in (
        sp.coo_matrix((data, (rows, cols)), shape=(3, 4)),  # repeated (0, 1)
        sp.csr_matrix(dense),
        sp.coo_array((data, (rows, cols)), shape=(3, 4)),
        sp.csc_array(dense),
    ):
        p = Parameter(np.zeros((3, 4)), name="w")
        p.grad = matrix
        assert isinstance(p.grad, SparseGrad) and p.grad.indices.dtype == np.int64
        np.testing.assert_array_equal(p.grad.to_dense(), dense)
    p = Parameter(np.zeros((3, 4), dtype=np.float32), name="w")
    with pytest.raises(ValueError, match="Parameter 'w': gradient has dtype float64, but the data has dtype float32"):
        p.grad = sp.csr_matrix(dense)
    with pytest.raises(ValueError, match=r"Parameter 'w': gradient has shape \(4, 3\)"):
        Parameter(np.zeros((3, 4)), name="w").grad = sp.csr_matrix(dense.T)


def test_scipy_sparse_steps_like_the_same_sparse_grad():
    sp = pytest.importorskip("scipy.sparse")
    rows, cols, data = np.array([0, 2, 0]), np.array([1, 3, 1]), np.array([1.0, -2.0, 3.0])
    runs = []
    for grad in (
        sp.coo_matrix((data, (rows, cols)), shape=(3, 4)),
        SparseGrad(np.stack([rows, cols]), data, (3, 4)),
    ):
        p = Parameter(np.ones((3, 4)))
        opt = arrayopt.Adagrad([p], lr=0.1)
        p.grad = grad
        opt.step()
        runs.append(p.data)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.count_nonzero(runs[0] != 1) == 2


def test_importing_arrayopt_imports_no_scipy():
    code = "import sys, arrayopt; print('scipy' in sys.modules or 'scipy.sparse' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pickle_and_deepcopy_keep_a_sparse_grad():
    p = Parameter(np.zeros((3, 2)), name="w")
    p.grad = SparseGrad(np.array([[2, 0, 2]]), np.arange(6.0).reshape(3, 2), (3, 2))
    for clone in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert isinstance(clone.grad, SparseGrad) and not clone.grad.is_coalesced()
        np.testing.assert_array_equal(clone.grad.to_dense(), p.grad.to_dense())


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "SparseAdam"])
def test_zero_grad_in_place_empties_a_sparse_grad(name, xp):
    p = Parameter(xp.ones((4, 2)))
    g = SparseGrad(xp.asarray([[1, 1]]), xp.ones((2, 2)), (4, 2))
    p.grad = g
    opt = getattr(arrayopt, name)([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and g.nnz == 0
    opt.step()  # nothing to apply
    np.testing.assert_array_equal(to_numpy(p.data), np.ones((4, 2)))
    if name == "SparseAdam":
        assert opt.state[p]["step"] == 1  # counted, as in torch, though nothing moved
    opt.zero_grad()
    assert p.grad is None


# -- parity with torch ------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "dtype"), CASE_DTYPES, ids=str)
def test_matches_golden_torch_trajectory(case, dtype, xp):
    golden = load_sparse(case.id, dtype)
    ours = sparse_harness.run_arrayopt(case, xp, golden)
    sparse_harness.assert_matches(ours, golden, dtype)


@pytest.mark.ref
@pytest.mark.parametrize(("case", "dtype"), CASE_DTYPES, ids=str)
def test_matches_live_torch(case, dtype, xp, quiet_torch):
    inputs = sparse_harness.make_inputs(case, dtype)
    theirs = sparse_harness.run_torch(case, inputs)
    sparse_harness.assert_matches(sparse_harness.run_arrayopt(case, xp, inputs), theirs, dtype)


@pytest.mark.ref
@pytest.mark.parametrize("case", sparse_harness.CASES, ids=str)
def test_golden_file_is_current(case, quiet_torch):
    for dtype in case.dtypes:
        stored = load_sparse(case.id, dtype)
        inputs = sparse_harness.make_inputs(case, dtype)
        assert sorted(k for k in stored if k.startswith("input/")) == sorted(inputs), (
            "run python tests/make_golden.py sparse"
        )
        for key, value in inputs.items():
            np.testing.assert_array_equal(stored[key], value, err_msg=f"{key}: run python tests/make_golden.py sparse")
        trajectory = {k: v for k, v in stored.items() if not k.startswith("input/")}
        harness.assert_matches(trajectory, sparse_harness.run_torch(case, inputs), dtype)


@pytest.mark.parametrize("case", sparse_harness.CASES, ids=str)
def test_state_dict_round_trip_continues_exactly(case, xp):
    dtype = case.dtypes[-1]
    inputs = sparse_harness.make_inputs(case, dtype)
    with_round_trip = sparse_harness.run_arrayopt(case, xp, inputs, roundtrip=True)
    uninterrupted = sparse_harness.run_arrayopt(case, xp, inputs, roundtrip=False)
    assert with_round_trip.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        np.testing.assert_array_equal(with_round_trip[key], value, err_msg=key)


@pytest.mark.parametrize("case", sparse_harness.CASES, ids=str)
def test_untouched_entries_never_change(case):
    """Where no gradient ever named an entry, parameter and state keep their first values."""
    inputs = sparse_harness.make_inputs(case, "float64")
    if case.dense_at:
        pytest.skip("dense gradients touch every entry")
    ours = sparse_harness.run_arrayopt(case, np, inputs)
    for i, (shape, k) in enumerate(sparse_harness.SHAPES):
        touched = np.zeros(shape[:k], dtype=bool)
        start = {key.split("/", 1)[1]: value for key, value in ours.items() if key.startswith("step0/")}
        for step in range(sparse_harness.STEPS):
            if f"input/indices{step}_{i}" in inputs:
                touched[tuple(inputs[f"input/indices{step}_{i}"])] = True
            initial = inputs[f"input/param{i}"][~touched]
            np.testing.assert_array_equal(ours[f"step{step}/param{i}"][~touched], initial)
            for key, value in ours.items():
                if key.startswith(f"step{step}/state{i}/") and not key.endswith("/step"):
                    first = start.get(key.split("/", 1)[1], value)
                    if step > 0:
                        np.testing.assert_array_equal(value[~touched], first[~touched], err_msg=key)


@pytest.mark.parametrize("case", sparse_harness.CASES, ids=str)
def test_sparse_paths_stay_in_the_cupy_fuse_dialect(case, monkeypatch):
    """The rules run on the gathered entries are compiled like the dense ones: same dialect, same bits."""
    import arrayopt.backends.numpy as numpy_backend

    import fuse_dialect

    for dtype in {"float64", "complex64"} & set(case.dtypes):
        inputs = sparse_harness.make_inputs(case, dtype)
        plain = sparse_harness.run_arrayopt(case, np, inputs)
        with monkeypatch.context() as patch:
            patch.setattr(numpy_backend, "_apply", fuse_dialect.apply_traced)
            traced = sparse_harness.run_arrayopt(case, np, inputs)
        for key, value in plain.items():
            np.testing.assert_array_equal(traced[key], value, err_msg=key)


# -- the CuPy backend's scatter and gather, on a stand-in without a GPU -----------------------


@pytest.fixture(params=["cupy.add.at", "cupyx.scatter_add"])
def stand_in_cupy_backend(request, monkeypatch):
    """The CuPy backend on the stand-in, scattering with ``cupy.add.at`` (CuPy 13+) or, where the
    stand-in has no ``cupy.add``, with ``cupyx.scatter_add``."""
    import types

    cupyx = types.ModuleType("cupyx")
    calls = []

    def scatter_add(a, where, values):
        assert a.dtype.kind != "c", "complex arrays go through their real and imaginary views"
        calls.append(a.dtype)
        np.add.at(a, where, values)

    if request.param == "cupyx.scatter_add":
        cupyx.scatter_add = scatter_add
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    backend = cpu_elementwise.install_cupy_stand_in(monkeypatch)
    if request.param == "cupy.add.at":
        monkeypatch.setattr(sys.modules["cupy"], "add", types.SimpleNamespace(at=scatter_add), raising=False)
    backend.scatter_calls = calls
    return backend


@pytest.mark.parametrize("case", sparse_harness.CASES[::2], ids=str)
def test_stand_in_cupy_backend_equals_numpy_backend(case, stand_in_cupy_backend):
    dtype = case.dtypes[-1]
    inputs = sparse_harness.make_inputs(case, dtype)
    fused = sparse_harness.run_arrayopt(case, np, inputs)
    assert stand_in_cupy_backend.scatter_calls, "the CuPy backend's scatter was not used"
    del arrayopt.backends._BY_TYPE[np.ndarray]
    plain = sparse_harness.run_arrayopt(case, np, inputs)
    for key, value in plain.items():
        np.testing.assert_array_equal(fused[key], value, err_msg=key)


@pytest.mark.cuda
@pytest.mark.parametrize("case", sparse_harness.CASES, ids=str)
def test_gpu_equals_numpy(case):
    from conftest import load_namespace

    cupy = load_namespace("cupy")
    for dtype in case.dtypes:
        inputs = sparse_harness.make_inputs(case, dtype)
        # Repeated positions are summed with atomics on the GPU, in no fixed order.
        harness.assert_matches(
            sparse_harness.run_arrayopt(case, cupy, inputs), sparse_harness.run_arrayopt(case, np, inputs), dtype
        )


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "SparseAdam"])
def test_strided_parameters_are_updated_through_the_view(name):
    base = np.arange(24.0).reshape(4, 6)
    view = base[:, ::2]  # not contiguous
    contiguous = np.ascontiguousarray(view)
    runs = []
    for data in (view, contiguous):
        p = Parameter(data)
        opt = getattr(arrayopt, name)([p], lr=0.1)
        for _ in range(3):
            p.grad = SparseGrad(np.array([[3, 0, 3], [1, 2, 1]]), np.array([1.0, -2.0, 0.5]), (4, 3))
            opt.step()
        runs.append(np.array(p.data))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.count_nonzero(runs[0] != np.arange(24.0).reshape(4, 6)[:, ::2]) == 2
    np.testing.assert_array_equal(base[:, 1::2], np.arange(24.0).reshape(4, 6)[:, 1::2])


# -- errors, compared with torch -----------------------------------------------------------


def _sparse(lib, indices, values, shape):
    if lib == "torch":
        import torch

        return torch.sparse_coo_tensor(torch.tensor(indices), torch.tensor(values, dtype=torch.float64), shape)
    return SparseGrad(np.array(indices), np.array(values, dtype=np.float64), shape)


def _dense(lib, values):
    if lib == "torch":
        import torch

        return torch.tensor(values, dtype=torch.float64)
    return np.array(values, dtype=np.float64)


def _param(lib, values):
    if lib == "torch":
        import torch

        return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))
    return Parameter(np.array(values, dtype=np.float64))


# Each scenario: optimizer, keywords, and the gradients of successive steps (the error
# comes at the last one): "sparse" or "dense".
STEP_ERRORS = [
    ("Adagrad", {"weight_decay": 0.1}, ["sparse"], "weight_decay option is not compatible with sparse gradients"),
    ("Adagrad", {"fused": True}, ["sparse"], "`fused` does not support sparse grad or complex param"),
    ("SparseAdam", {}, ["dense"], "SparseAdam does not support dense gradients, please consider Adam instead"),
    (
        "SparseAdam",
        {},
        ["sparse", "dense"],
        "SparseAdam does not support dense gradients, please consider Adam instead",
    ),
    ("SGD", {"weight_decay": 0.1}, ["sparse"], "add(sparse, dense) is not supported. Use add(dense, sparse) instead."),
    (
        "SGD",
        {"momentum": 0.9},
        ["sparse", "dense"],
        "add(sparse, dense) is not supported. Use add(dense, sparse) instead.",
    ),
    (
        "SGD",
        {"momentum": 0.9, "nesterov": True},
        ["dense", "sparse"],
        "add(sparse, dense) is not supported. Use add(dense, sparse) instead.",
    ),
    ("Adam", {}, ["sparse"], "Adam does not support sparse gradients, please consider SparseAdam instead"),
    ("AdamW", {}, ["sparse"], "Adam does not support sparse gradients, please consider SparseAdam instead"),
    ("SGD", {"fused": True}, ["sparse"], "`_fused_sgd` does not support sparse gradients"),
    # a momentum buffer and a gradient with different sparse dims (torch adds them only if one is empty)
    (
        "SGD",
        {"momentum": 0.9},
        ["sparse", "sparse2"],
        "add: expected 'self' and 'other' to have same density, but 'self' has 1 sparse dimensions while 'other' "
        "has 2 sparse dimensions",
    ),
    (
        "SGD",
        {"momentum": 0.9},
        ["sparse2", "sparse"],
        "add: expected 'self' and 'other' to have same density, but 'self' has 2 sparse dimensions while 'other' "
        "has 1 sparse dimensions",
    ),
]

SPARSE_GRADS = {
    "sparse": ([[2, 0, 2]], [[1.0, -1.0], [0.5, 2.0], [3.0, 1.0]]),
    "sparse2": ([[0, 2], [1, 0]], [1.5, -2.0]),
    "empty": (np.zeros((1, 0), np.int64), np.zeros((0, 2))),
    "empty2": (np.zeros((2, 0), np.int64), np.zeros(0)),
}


def _scenario(lib, name, kwargs, grads):
    """Run all but the last step; return (optimizer, param, last step's gradient)."""
    import importlib

    module = importlib.import_module("torch.optim" if lib == "torch" else "arrayopt")
    p = _param(lib, [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    opt = getattr(module, name)([p], lr=0.1, **kwargs)
    make = {kind: (lambda kind=kind: _sparse(lib, *SPARSE_GRADS[kind], (3, 2))) for kind in SPARSE_GRADS}
    make["dense"] = lambda: _dense(lib, [[1.0, 1.0], [-1.0, 2.0], [0.5, 0.5]])
    for kind in grads[:-1]:
        p.grad = make[kind]()
        opt.step()
    return opt, p, make[grads[-1]]()


@pytest.mark.parametrize("row", STEP_ERRORS, ids=lambda r: f"{r[0]}-{'-'.join(r[2])}-{r[1]}")
def test_step_errors_change_nothing(row):
    name, kwargs, grads, message = row
    opt, p, grad = _scenario("arrayopt", name, kwargs, grads)
    before = (p.data.copy(), copy.deepcopy(opt.state_dict()))
    p.grad = grad
    with pytest.raises(RuntimeError) as info:
        opt.step()
    assert str(info.value) == message
    np.testing.assert_array_equal(p.data, before[0])
    after = opt.state_dict()
    assert after["state"].keys() == before[1]["state"].keys()
    for index, entries in before[1]["state"].items():
        for key, value in entries.items():
            if key == "step":
                assert after["state"][index][key] == value
            else:
                np.testing.assert_array_equal(to_numpy(after["state"][index][key]), to_numpy(value), err_msg=key)


@pytest.mark.ref
@pytest.mark.parametrize("row", STEP_ERRORS, ids=lambda r: f"{r[0]}-{'-'.join(r[2])}-{r[1]}")
def test_step_errors_are_torchs(row, quiet_torch):
    name, kwargs, grads, message = row
    opt, p, grad = _scenario("torch", name, kwargs, grads)
    p.grad = grad
    with pytest.raises(RuntimeError) as info:
        opt.step()
    assert str(info.value) == message


SPARSE_DIMS_MIXED = [["empty", "sparse2"], ["sparse2", "empty"], ["empty2", "sparse"], ["sparse", "empty2", "sparse"]]


@pytest.mark.parametrize("grads", SPARSE_DIMS_MIXED, ids="-".join)
def test_momentum_across_sparse_dims_steps_when_one_side_is_empty(grads):
    """An empty sparse gradient or buffer adds nothing whatever its sparse dims: the run
    equals SGD on the same gradients made dense, bit for bit (torch steps there too)."""
    opt, p, last = _scenario("arrayopt", "SGD", {"momentum": 0.9}, grads)
    p.grad = last
    opt.step()
    dense = Parameter(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    reference = arrayopt.SGD([dense], lr=0.1, momentum=0.9)
    for kind in grads:
        dense.grad = SparseGrad(np.array(SPARSE_GRADS[kind][0]), np.array(SPARSE_GRADS[kind][1]), (3, 2)).to_dense()
        reference.step()
    assert p.data.tobytes() == dense.data.tobytes()


@pytest.mark.ref
@pytest.mark.parametrize("grads", SPARSE_DIMS_MIXED, ids="-".join)
def test_momentum_across_sparse_dims_is_torchs(grads, quiet_torch):
    results = []
    for lib in ("torch", "arrayopt"):
        opt, p, last = _scenario(lib, "SGD", {"momentum": 0.9}, grads)
        p.grad = last
        opt.step()
        results.append(p.detach().numpy() if lib == "torch" else p.data)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-12, atol=0)  # torch's sparse sums round their own way


def test_other_optimizers_name_themselves():
    class Plain(arrayopt.optimizer.ElementwiseOptimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 0.1})

        def _hyper(self, group):
            return {}

        def _init_state(self, p, group):
            return None

    p = Parameter(np.zeros(3))
    p.grad = SparseGrad(np.array([[0]]), np.array([1.0]), (3,))
    with pytest.raises(RuntimeError, match=r"^Plain does not support sparse gradients$"):
        Plain([p]).step()


# -- Adagrad specifics ----------------------------------------------------------------------


@pytest.mark.parametrize("module", [arrayopt.sparse, arrayopt.optimizers.adagrad, arrayopt.optimizers.sparse_adam])
def test_docstring_examples(module):
    import doctest

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
