"""arrayopt.functional: torch.optim.functional's functions, bit for bit the optimizer classes.

Every case of the table (tests/cases.py), on every backend: the class steps its
Parameters, the function steps plain arrays with caller-held state lists (the
parameters without a gradient left out of the call, as torch's classes leave them
out of theirs), and after every step the parameters, and at the end every state entry
and step count, are equal bit for bit. The signatures are torch's (live torch), and
the initial states the docstrings describe are the classes' fresh states.
"""

import inspect

import numpy as np
import pytest

import arrayopt
import arrayopt.functional as F
from arrayopt.backends import get_backend

from cases import CASES, Case

SHAPES = [(3, 4), (5,), (2, 1, 3), ()]
STEPS = 6
NONE_GRADS = {(0, 2), (1, 2), (4, 1)}  # (step, param index) without a gradient


def _betas(g):
    return {"beta1": g["betas"][0], "beta2": g["betas"][1]}


#: class name -> (function, its keyword arguments from the class's param group, state lists)
#: where a state list is (argument name, the class's state key).
FUNCTIONS = {
    "SGD": (
        F.sgd,
        lambda g: {k: g[k] for k in ("weight_decay", "momentum", "lr", "dampening", "nesterov", "maximize")},
        [("momentum_buffer_list", "momentum_buffer")],
    ),
    "Adam": (
        F.adam,
        lambda g: {
            **{k: g[k] for k in ("amsgrad", "lr", "weight_decay", "eps", "maximize", "decoupled_weight_decay")},
            **_betas(g),
        },
        [("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq"), ("max_exp_avg_sqs", "max_exp_avg_sq")],
    ),
    "AdamW": (
        F.adamw,
        lambda g: {**{k: g[k] for k in ("amsgrad", "lr", "weight_decay", "eps", "maximize")}, **_betas(g)},
        [("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq"), ("max_exp_avg_sqs", "max_exp_avg_sq")],
    ),
    "Adadelta": (
        F.adadelta,
        lambda g: {k: g[k] for k in ("lr", "rho", "eps", "weight_decay", "maximize")},
        [("square_avgs", "square_avg"), ("acc_deltas", "acc_delta")],
    ),
    "Adafactor": (
        F.adafactor,
        lambda g: {
            **{k: g[k] for k in ("d", "lr", "beta2_decay", "weight_decay", "maximize")},
            "eps1": g["eps"][0],
            "eps2": g["eps"][1],
        },
        [("row_vars", "row_var"), ("col_vars", "col_var"), ("variances", "variance")],
    ),
    "Adagrad": (
        F.adagrad,
        lambda g: {k: g[k] for k in ("lr", "weight_decay", "lr_decay", "eps", "maximize", "fused")},
        [("state_sums", "sum")],
    ),
    "Adamax": (
        F.adamax,
        lambda g: {**{k: g[k] for k in ("eps", "lr", "weight_decay", "maximize")}, **_betas(g)},
        [("exp_avgs", "exp_avg"), ("exp_infs", "exp_inf")],
    ),
    "ASGD": (
        F.asgd,
        lambda g: {k: g[k] for k in ("lambd", "lr", "t0", "alpha", "weight_decay", "maximize")},
        [("axs", "ax"), ("mus", "mu"), ("etas", "eta")],
    ),
    "NAdam": (
        F.nadam,
        lambda g: {
            **{k: g[k] for k in ("lr", "weight_decay", "momentum_decay", "eps", "maximize", "decoupled_weight_decay")},
            **_betas(g),
        },
        [("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq"), ("mu_products", "mu_product")],
    ),
    "RAdam": (
        F.radam,
        lambda g: {
            **{k: g[k] for k in ("lr", "weight_decay", "eps", "maximize", "decoupled_weight_decay")},
            **_betas(g),
        },
        [("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq")],
    ),
    "RMSprop": (
        F.rmsprop,
        lambda g: {k: g[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")},
        [("square_avgs", "square_avg"), ("grad_avgs", "grad_avg"), ("momentum_buffer_list", "momentum_buffer")],
    ),
    "Rprop": (
        F.rprop,
        lambda g: {
            "step_size_min": g["step_sizes"][0],
            "step_size_max": g["step_sizes"][1],
            "etaminus": g["etas"][0],
            "etaplus": g["etas"][1],
            "maximize": g["maximize"],
        },
        [("prevs", "prev"), ("step_sizes", "step_size")],
    ),
    "Muon": (
        F.muon,
        lambda g: (
            {
                k: g[k]
                for k in (
                    "lr",
                    "weight_decay",
                    "momentum",
                    "nesterov",
                    "ns_coefficients",
                    "ns_steps",
                    "eps",
                    "adjust_lr_fn",
                )
            }
            | {"has_complex": False}
        ),
        [("muon_momentum_bufs", "momentum_buffer")],
    ),
    "SparseAdam": (
        F.sparse_adam,
        lambda g: {**{k: g[k] for k in ("eps", "lr", "maximize")}, **_betas(g)},
        [("exp_avgs", "exp_avg"), ("exp_avg_sqs", "exp_avg_sq")],
    ),
}

#: Muon (2-D parameters only) and SparseAdam (sparse gradients only) are not in the shared table.
EXTRA_CASES = [
    Case("Muon", {"lr": 0.02}, dtypes=("float64", "float32")),
    Case(
        "Muon",
        {"lr": 0.05, "nesterov": False, "weight_decay": 0.0, "adjust_lr_fn": "match_rms_adamw"},
        dtypes=("float64",),
    ),
    Case("Muon", {"lr": 0.05, "momentum": 0.3, "adjust_lr_fn": "spectral_unclamped"}, dtypes=("float32",)),
    Case("SparseAdam", {"lr": 0.05}, dtypes=("float64", "float32")),
    Case("SparseAdam", {"lr": 0.05, "betas": (0.3, 0.8), "maximize": True}, dtypes=("float64",)),
]

TABLE = [(case, dtype) for case in [*CASES, *EXTRA_CASES] for dtype in case.dtypes if dtype in ("float64", "complex64")]
TABLE += [(case, "float32") for case in EXTRA_CASES if "float32" in case.dtypes]


def _shapes(case):
    if case.optimizer == "Muon":
        return [(3, 4), (5, 2), (2, 6)]
    return SHAPES[:-1] if case.optimizer == "SparseAdam" else SHAPES  # a sparse gradient has a dimension


def _inputs(case, dtype):
    rng = np.random.default_rng(5)
    shapes = _shapes(case)

    def draw(shape):
        x = rng.standard_normal(shape)
        if dtype.startswith("complex"):
            x = x + 1j * rng.standard_normal(shape)
        return np.asarray(x, dtype=dtype)

    start = [draw(s) for s in shapes]
    grads = [[None if (t, i) in NONE_GRADS else draw(s) for i, s in enumerate(shapes)] for t in range(STEPS)]
    if case.optimizer == "SparseAdam":  # rows 0 and 2 of each gradient, as a SparseGrad
        grads = [[None if g is None else _sparse_rows(g) for g in step] for step in grads]
    return start, grads


def _sparse_rows(g):
    rows = np.array([r for r in (0, 2) if r < g.shape[0]], dtype=np.int64)
    return arrayopt.SparseGrad(rows[None, :], g[rows], g.shape)


def _on(xp, value):
    if value is None:
        return None
    if isinstance(value, arrayopt.SparseGrad):
        return arrayopt.SparseGrad(xp.asarray(value.indices), xp.asarray(value.values), value.shape)
    return xp.asarray(value, copy=True)


def _hyper(case, xp):
    kwargs = dict(case.kwargs)
    for name in case.array_hyper:
        value = kwargs[name]
        make = lambda x: xp.asarray(x, dtype=xp.float64)  # noqa: E731
        kwargs[name] = tuple(make(x) for x in value) if isinstance(value, tuple) else make(value)
    return kwargs


def _numpy(a):
    return None if a is None else np.asarray(get_backend(a).to_numpy(a))


def run_class(case, dtype, xp):
    start, grads = _inputs(case, dtype)
    params = [arrayopt.Parameter(_on(xp, a)) for a in start]
    opt = getattr(arrayopt, case.optimizer)(params, **_hyper(case, xp))
    trajectory = []
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = _on(xp, g)
        opt.step()
        trajectory.append([_numpy(p.data) for p in params])
    return trajectory, [opt.state.get(p, {}) for p in params], opt


def run_functional(case, dtype, xp, opt, array_steps=False):
    """The same run through the function; states start as the class's fresh state (``_init_state``)."""
    start, grads = _inputs(case, dtype)
    function, keywords, lists = FUNCTIONS[case.optimizer]
    group = opt.param_groups[0]
    kwargs = keywords(group)
    accepted = inspect.signature(function).parameters
    for flag in ("foreach", "fused", "capturable", "differentiable"):
        if flag in accepted and flag in group and flag not in kwargs:
            kwargs[flag] = group[flag]
    arrays = [_on(xp, a) for a in start]
    states = {arg: [] for arg, _ in lists}
    steps = []
    for a, g in zip(arrays, grads[-1], strict=True):  # the last step has every gradient
        fresh = opt._init_state(arrayopt.Parameter._unchecked(a, _on(xp, g)), group) or {}
        for arg, key in lists:
            states[arg].append(fresh.get(key))
        step = fresh.get("step", 0)
        steps.append(xp.asarray(step, dtype=xp.float32) if array_steps else step)
    for arg, _ in lists:  # lists the options leave unused stay empty, as torch passes them
        if all(v is None for v in states[arg]) and not (case.optimizer == "SGD" and arg == "momentum_buffer_list"):
            states[arg] = []
    trajectory = []
    for step_grads in grads:
        have = [i for i, g in enumerate(step_grads) if g is not None]
        sub = {arg: [values[i] for i in have] if values else [] for arg, values in states.items()}
        sub_steps = [steps[i] for i in have]
        if case.optimizer == "SparseAdam":  # the caller increments these before the call
            sub_steps = [s + 1 for s in sub_steps]
        positional = [[arrays[i] for i in have], [_on(xp, step_grads[i]) for i in have], *sub.values()]
        if case.optimizer not in ("SGD", "Muon"):
            positional.append(sub_steps)
        function(*positional, **kwargs)
        for arg, values in states.items():
            if values:
                for j, i in enumerate(have):
                    values[i] = sub[arg][j]
        for j, i in enumerate(have):
            steps[i] = sub_steps[j]
        trajectory.append([_numpy(a) for a in arrays])
    return trajectory, states, steps


@pytest.mark.parametrize(("case", "dtype"), TABLE, ids=[f"{c}-{d}" for c, d in TABLE])
def test_function_equals_the_class_bit_for_bit(case, dtype, xp):
    ours_by_class, class_states, opt = run_class(case, dtype, xp)
    ours, states, steps = run_functional(case, dtype, xp, opt)
    for t, (a, b) in enumerate(zip(ours, ours_by_class, strict=True)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            np.testing.assert_array_equal(x, y, err_msg=f"step {t}, param {i}")
    _, _, lists = FUNCTIONS[case.optimizer]
    for i, state in enumerate(class_states):
        for arg, key in lists:
            if key in state and state[key] is not None:
                mine = states[arg][i]
                if isinstance(state[key], arrayopt.SparseGrad):
                    mine, theirs = mine.to_dense(), state[key].to_dense()
                else:
                    theirs = state[key]
                np.testing.assert_array_equal(_numpy(mine), _numpy(theirs), err_msg=f"{arg}[{i}]")
        if "step" in state:
            assert float(steps[i]) == float(state["step"]), i


@pytest.mark.parametrize("name", ["Adam", "NAdam", "Rprop", "ASGD", "Adafactor"])
def test_step_counts_as_arrays_are_incremented_in_place(name):
    case = next(c for c in CASES if c.optimizer == name)
    _, class_states, opt = run_class(case, "float64", np)
    trajectory, _, steps = run_functional(case, "float64", np, opt, array_steps=True)
    ours, _, _ = run_class(case, "float64", np)
    np.testing.assert_array_equal(trajectory[-1][0], ours[-1][0])
    assert all(isinstance(s, np.ndarray) and s.dtype == np.float32 for s in steps)
    assert [float(s) for s in steps] == [float(s["step"]) for s in class_states]


def test_python_int_counts_stay_ints_and_the_list_is_updated():
    w, m, v, steps = np.ones(2), np.zeros(2), np.zeros(2), [0]
    kwargs = {"amsgrad": False, "beta1": 0.9, "beta2": 0.999, "lr": 0.1, "weight_decay": 0.0, "eps": 1e-8}
    for expected in (1, 2, 3):
        F.adam([w], [np.ones(2)], [m], [v], [], steps, maximize=False, **kwargs)
        assert steps == [expected] and type(steps[0]) is int


# -- the documented initial states are the classes' fresh states ----------------------------------

#: what each docstring says the state lists start as, for a float64 parameter ``p``
DOCUMENTED = {
    "Adam": {"exp_avg": np.zeros_like, "exp_avg_sq": np.zeros_like},
    "Adadelta": {"square_avg": np.zeros_like, "acc_delta": np.zeros_like},
    "Adamax": {"exp_avg": np.zeros_like, "exp_inf": np.zeros_like},
    "RAdam": {"exp_avg": np.zeros_like, "exp_avg_sq": np.zeros_like},
    "NAdam": {
        "exp_avg": np.zeros_like,
        "exp_avg_sq": np.zeros_like,
        "mu_product": lambda p: np.asarray(1.0, dtype=np.float32),
    },
    "ASGD": {
        "ax": np.zeros_like,
        "mu": lambda p: np.asarray(1.0, dtype=np.float32),
        "eta": lambda p: np.asarray(0.01, dtype=np.float32),  # lr (the default, 0.01), in float32
    },
    "Rprop": {"prev": np.zeros_like, "step_size": lambda p: np.full_like(p, 0.01)},  # lr
    "Adagrad": {"sum": np.zeros_like},  # initial_accumulator_value (0)
    "RMSprop": {"square_avg": np.zeros_like},
    "Adafactor": {"row_var": lambda p: np.zeros((3, 1)), "col_var": lambda p: np.zeros((1, 4))},
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_initial_state_is_the_class_fresh_state(name):
    p = arrayopt.Parameter(np.ones((3, 4)))
    p.grad = np.ones((3, 4))
    opt = getattr(arrayopt, name)([p])
    fresh = opt._init_state(p, opt.param_groups[0])
    arrays = {k: v for k, v in fresh.items() if k != "step"}
    assert sorted(arrays) == sorted(DOCUMENTED[name])
    for key, make in DOCUMENTED[name].items():
        expected = make(p.data)
        assert arrays[key].dtype == expected.dtype and arrays[key].shape == expected.shape, key
        np.testing.assert_array_equal(arrays[key], expected, err_msg=key)


# -- signatures and errors ----------------------------------------------------------------------


@pytest.mark.ref
@pytest.mark.parametrize("name", F.__all__)
def test_signatures_are_torchs(name, torch):
    import importlib

    module = {"adafactor": "_adafactor", "muon": "_muon", "sparse_adam": "_functional"}.get(name, name)
    theirs = inspect.signature(getattr(importlib.import_module(f"torch.optim.{module}"), name)).parameters
    ours = inspect.signature(getattr(F, name)).parameters
    assert list(ours) == list(theirs)
    for key, parameter in theirs.items():
        assert ours[key].kind == parameter.kind, key
        assert ours[key].default == parameter.default or ours[key].default is None is parameter.default, key


@pytest.mark.ref
def test_same_numbers_as_torchs_functional_adam(torch):
    """torch's own functional adam, on tensors, against ours on arrays: its numbers (float64 within 1e-12)."""
    from torch.optim.adam import adam as torch_adam

    rng = np.random.default_rng(3)
    start = rng.standard_normal(6)
    w, m, v, steps = start.copy(), np.zeros(6), np.zeros(6), [0]
    tw, tm, tv = torch.tensor(start), torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    tsteps = [torch.tensor(0.0)]
    kwargs = {"amsgrad": False, "beta1": 0.9, "beta2": 0.99, "lr": 0.05, "weight_decay": 0.1, "eps": 1e-8}
    for _ in range(5):
        g = rng.standard_normal(6)
        F.adam([w], [g], [m], [v], [], steps, maximize=False, **kwargs)
        torch_adam([tw], [torch.tensor(g)], [tm], [tv], [], tsteps, foreach=False, maximize=False, **kwargs)
        np.testing.assert_allclose(w, tw.numpy(), rtol=1e-12, atol=0)
    assert steps == [5] and float(tsteps[0]) == 5.0


def _adam_kwargs():
    return {"amsgrad": False, "beta1": 0.9, "beta2": 0.999, "lr": 0.1, "weight_decay": 0.0, "eps": 1e-8}


BAD = [
    (
        lambda w, g: F.adam([w], [g], [np.zeros(2)], [], [], [0], maximize=False, **_adam_kwargs()),
        ValueError,
        "adam: exp_avg_sqs has 0 entries; it needs 1 entries, one per parameter",
    ),
    (
        lambda w, g: F.adam([w], [g, g], [np.zeros(2)], [np.zeros(2)], [], [0], maximize=False, **_adam_kwargs()),
        ValueError,
        "adam: grads has 2 entries for 1 params",
    ),
    (
        lambda w, g: F.adam([w], [None], [np.zeros(2)], [np.zeros(2)], [], [0], maximize=False, **_adam_kwargs()),
        TypeError,
        "adam: grads[0] is None",
    ),
    (
        lambda w, g: F.adam([w], [g], [np.zeros(3)], [np.zeros(2)], [], [0], maximize=False, **_adam_kwargs()),
        ValueError,
        "adam: params[0]: optimizer state has shape (3,)",
    ),
    (
        lambda w, g: F.adam([w], [g], [np.zeros(2)], [np.zeros(2)], [], (0,), maximize=False, **_adam_kwargs()),
        TypeError,
        "adam: state_steps must be a list",
    ),
    (
        lambda w, g: F.adam([w], [g], [np.zeros(2)], [np.zeros(2)], [], [-1], maximize=False, **_adam_kwargs()),
        ValueError,
        "adam: state_steps[0] is -1, not a finite count >= 0",
    ),
    (
        lambda w, g: F.adam(
            [w], [g], [np.zeros(2)], [np.zeros(2)], [], [0], maximize=False, capturable=True, **_adam_kwargs()
        ),
        NotImplementedError,
        "capturable",
    ),
    (
        lambda w, g: F.adam(
            [w], [g], [np.zeros(2)], [np.zeros(2)], [], [0], maximize=False, grad_scale=np.ones(()), **_adam_kwargs()
        ),
        NotImplementedError,
        "adam: grad_scale and found_inf",
    ),
    (
        lambda w, g: F.adam(
            [w], [g], [np.zeros(2)], [np.zeros(2)], [], [0], maximize=False, **{**_adam_kwargs(), "lr": -1.0}
        ),
        ValueError,
        "Invalid learning rate: -1.0",
    ),
    (
        lambda w, g: F.adam(
            [np.arange(2)], [g], [np.zeros(2)], [np.zeros(2)], [], [0], maximize=False, **_adam_kwargs()
        ),
        TypeError,
        "adam: Parameter 'params[0]': only floating-point",
    ),
    (
        lambda w, g: F.adam([w], [np.ones(3)], [np.zeros(2)], [np.zeros(2)], [], [0], maximize=False, **_adam_kwargs()),
        ValueError,
        "adam: Parameter 'params[0]': gradient has shape (3,)",
    ),
    (
        lambda w, g: F.sgd(
            [w], [g], [], weight_decay=0.0, momentum=0.9, lr=0.1, dampening=0.0, nesterov=False, maximize=False
        ),
        ValueError,
        "sgd: momentum_buffer_list has 0 entries; it needs 1 entries, one per parameter",
    ),
    (
        lambda w, g: F.sparse_adam(
            [w],
            [arrayopt.SparseGrad(np.array([[0]]), np.ones(1), (2,))],
            [np.zeros(2)],
            [np.zeros(2)],
            [0],
            eps=1e-8,
            beta1=0.9,
            beta2=0.999,
            lr=0.1,
            maximize=False,
        ),
        ValueError,
        "sparse_adam: state_steps[0] is 0; this function reads the counts without incrementing them",
    ),
    (
        lambda w, g: F.sparse_adam(
            [w], [g], [np.zeros(2)], [np.zeros(2)], [1], eps=1e-8, beta1=0.9, beta2=0.999, lr=0.1, maximize=False
        ),
        RuntimeError,
        "SparseAdam does not support dense gradients",
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD, ids=[row[2][:40] for row in BAD])
def test_bad_input_is_refused_before_anything_changes(call, error, message):
    w, g = np.ones(2), np.full(2, 0.5)
    with pytest.raises(error) as info:
        call(w, g)
    assert message in str(info.value)
    np.testing.assert_array_equal(w, np.ones(2))


def test_a_second_parameter_error_leaves_the_first_unchanged():
    w1, w2 = np.ones(2), np.ones(2)
    exp_avgs, exp_avg_sqs = [np.zeros(2), np.zeros(2)], [np.zeros(2), np.zeros(3)]
    with pytest.raises(ValueError, match=r"params\[1\]"):
        F.adam([w1, w2], [np.ones(2), np.ones(2)], exp_avgs, exp_avg_sqs, [], [0, 0], maximize=False, **_adam_kwargs())
    np.testing.assert_array_equal(w1, np.ones(2))
    np.testing.assert_array_equal(exp_avgs[0], np.zeros(2))


def test_no_parameters_is_a_no_op():
    F.adam([], [], [], [], [], [], maximize=False, **_adam_kwargs())


def test_the_functions_hold_no_math_of_their_own():
    """No arithmetic on arrays here: every function hands over to its class's rule."""
    import ast

    tree = ast.parse(inspect.getsource(F))
    operators = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.AugAssign) or (isinstance(node, ast.BinOp) and not isinstance(node.op, ast.BitOr))
    ]  # ``X | None`` in annotations is no arithmetic
    # the only arithmetic: a step count's ``step -= 1`` for sparse_adam's caller-incremented counts
    assert len(operators) == 1 and isinstance(operators[0], ast.AugAssign), [ast.dump(o) for o in operators]


def test_cupy_stand_in_runs_the_class_kernels(monkeypatch):
    """On the CuPy backend (over the CPU stand-in) the function gives the class's bits."""
    import cpu_elementwise

    cpu_elementwise.install_cupy_stand_in(monkeypatch)
    case = next(c for c in CASES if c.optimizer == "Adam" and c.kwargs.get("amsgrad"))
    reference, _, opt = run_class(case, "float32", np)
    assert type(get_backend(np.zeros(1))).__name__ == "CuPyBackend"
    ours, _, _ = run_functional(case, "float32", np, opt)
    for a, b in zip(ours[-1], reference[-1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["adam", "sgd", "nadam"])
def test_no_host_sync_with_python_step_counts(name, monkeypatch):
    """With counts kept as Python numbers, a call only queues kernels (the probe of test_no_host_sync)."""
    import test_no_host_sync as probe

    probe.install_probe(monkeypatch)
    on_device = lambda a: np.asarray(a, dtype=np.float32).view(probe.DeviceArray)  # noqa: E731
    w, m, v = on_device(np.ones((3, 4))), on_device(np.zeros((3, 4))), on_device(np.zeros((3, 4)))
    steps, buffers = [0], [None]
    probe.READS.clear()
    for _ in range(3):
        g = on_device(np.full((3, 4), 0.5))
        if name == "adam":
            F.adam([w], [g], [m], [v], [], steps, maximize=False, **_adam_kwargs())
        elif name == "sgd":
            F.sgd(
                [w], [g], buffers, weight_decay=0.01, momentum=0.9, lr=0.1, dampening=0.0, nesterov=True, maximize=False
            )
        else:
            mu_product = on_device(np.asarray(1.0))
            F.nadam(
                [w],
                [g],
                [m],
                [v],
                [mu_product],
                steps,
                beta1=0.9,
                beta2=0.999,
                lr=0.01,
                weight_decay=0.0,
                momentum_decay=4e-3,
                eps=1e-8,
            )
    assert type(w) is probe.DeviceArray
    if name == "nadam":  # a 0-d state array the caller hands over is read, as torch's .item() does
        assert probe.READS
    else:
        assert probe.READS == []
