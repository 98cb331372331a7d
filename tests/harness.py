"""Torch parity harness: the same parameters and gradients through two libraries.

``make_inputs`` draws initial parameters and a gradient sequence (with None grads at
fixed steps); ``run_arrayopt`` and ``run_torch`` feed them to an optimizer built from a
:class:`cases.Case` (parameters listed in its ``without_grad`` never get one) and
record every parameter and every state entry after every step. The optimizer has
two param groups (the second with half the learning rate), and halfway through its
state_dict is saved, a fresh optimizer over fresh Parameters loads it, and the run
continues with the new one.

Trajectories are plain dicts of NumPy arrays and floats keyed by strings such as
``"step3/param0"`` and ``"step3/state2/exp_avg"``, so they can be compared directly
and stored in the golden files (``tests/make_golden.py optimizers``).
"""

import copy
from typing import Any

import numpy as np

import arrayopt

from cases import ALL_DTYPES, Case

SHAPES = [(3, 4), (5,), (2, 1, 3), (), (2, 0)]  # a 0-d and an empty parameter too
GROUPS = [[0, 1, 3], [2, 4]]  # parameter indices per param group
STEPS = 12
ROUNDTRIP_AFTER = 5  # state_dict round trip after this step (0-based)
NONE_GRADS = {(0, 2), (1, 2), (7, 1)}  # (step, param index) pairs with grad None
DTYPES = list(ALL_DTYPES)

# Largest error allowed against torch, relative to the magnitude of the entry (see
# _scales): float64 "within 1e-12 relative", float32 "within a few ulp".
TOLERANCE = {"float64": 1e-12, "complex128": 1e-12, "float32": 4 * 2.0**-23, "complex64": 4 * 2.0**-23}

Trajectory = dict[str, Any]


def make_inputs(dtype: str, seed: int = 1234) -> Trajectory:
    rng = np.random.default_rng(seed)
    complex_ = dtype.startswith("complex")

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        x = np.asarray(rng.standard_normal(shape))
        if complex_:
            x = x + 1j * rng.standard_normal(shape)
        return np.asarray(x, dtype=dtype)

    inputs: Trajectory = {}
    for i, shape in enumerate(SHAPES):
        inputs[f"input/param{i}"] = draw(shape)
    for step in range(STEPS):
        for i, shape in enumerate(SHAPES):
            if (step, i) not in NONE_GRADS:
                # grads shrink over the run, so float32 state stays well scaled
                inputs[f"input/grad{step}_{i}"] = np.asarray(draw(shape) * (1.0 + 0.5 * np.cos(step)), dtype=dtype)
    return inputs


def _group_lr(case: Case, optimizer_cls: Any) -> float:
    import inspect

    lr = case.kwargs.get("lr", inspect.signature(optimizer_cls).parameters["lr"].default)
    return 0.5 * float(lr)


def _hyper(case: Case, make_scalar: Any) -> dict[str, Any]:
    kwargs = dict(case.kwargs)
    for name in case.array_hyper:
        value = kwargs[name]
        kwargs[name] = tuple(make_scalar(x) for x in value) if isinstance(value, tuple) else make_scalar(value)
    return kwargs


def run_arrayopt(case: Case, xp: Any, inputs: Trajectory, roundtrip: bool = True) -> Trajectory:
    """Run ``case`` on arrays of namespace ``xp``; return the recorded trajectory."""
    cls = getattr(arrayopt, case.optimizer)
    return _run(
        cls,
        _hyper(case, lambda x: xp.asarray(x, dtype=xp.float64)),
        _group_lr(case, cls),
        lambda a, i: arrayopt.Parameter(xp.asarray(a), name=f"p{i}"),
        xp.asarray,
        _to_numpy,
        inputs,
        roundtrip,
        case.without_grad,
    )


def run_torch(case: Case, inputs: Trajectory, roundtrip: bool = True) -> Trajectory:
    """The same run with torch.optim (torch must be importable)."""
    import torch

    return _run(
        getattr(torch.optim, case.optimizer),
        _hyper(case, lambda x: torch.tensor(x, dtype=torch.float64)),
        _group_lr(case, getattr(arrayopt, case.optimizer)),
        lambda a, i: torch.nn.Parameter(torch.from_numpy(a)),
        torch.from_numpy,
        lambda t: t.detach().numpy().copy(),
        inputs,
        roundtrip,
        case.without_grad,
    )


def _run(
    cls: Any,
    kwargs: dict[str, Any],
    lr2: float,
    make_param: Any,
    make_grad: Any,
    to_numpy: Any,
    inputs: Trajectory,
    roundtrip: bool,
    without_grad: tuple[int, ...] = (),
) -> Trajectory:
    """The run itself, for any library: ``make_param(array, i)``, ``make_grad(array)``."""

    def build(arrays: list[np.ndarray]) -> tuple[list[Any], Any]:
        params = [make_param(a, i) for i, a in enumerate(arrays)]
        groups = [{"params": [params[i] for i in GROUPS[0]]}, {"params": [params[i] for i in GROUPS[1]], "lr": lr2}]
        return params, cls(groups, **kwargs)

    params, opt = build([inputs[f"input/param{i}"].copy() for i in range(len(SHAPES))])
    out: Trajectory = {}
    for step in range(STEPS):
        for i, p in enumerate(params):
            grad = None if i in without_grad else inputs.get(f"input/grad{step}_{i}")
            p.grad = None if grad is None else make_grad(grad.copy())
        opt.step()
        _record(out, step, [p.data for p in params], opt.state_dict()["state"], to_numpy)
        if roundtrip and step == ROUNDTRIP_AFTER:
            saved = copy.deepcopy(opt.state_dict())
            params, opt = build([to_numpy(p.data) for p in params])
            opt.load_state_dict(saved)
    return out


def _to_numpy(array: Any) -> np.ndarray:
    return np.array(arrayopt.backends.get_backend(array).to_numpy(array), copy=True)


def _record(out: Trajectory, step: int, datas: list[Any], state: dict[int, dict[str, Any]], to_numpy: Any) -> None:
    for i, data in enumerate(datas):
        out[f"step{step}/param{i}"] = to_numpy(data)
    for index, entries in state.items():
        for key, value in entries.items():
            name = f"step{step}/state{index}/{key}"
            if key == "step":
                out[name] = np.float64(float(value))
            else:
                out[name] = to_numpy(value)


def _scales(ref: Trajectory) -> dict[str, float]:
    """The magnitude each entry's error is measured against.

    The largest magnitude of that entry, or of the same entry of any parameter at
    the same step if larger: a 0-d or nearly cancelled entry is judged by the size of
    the numbers it was computed from, not by its own smallness.
    """
    family: dict[str, float] = {}
    for key, b in ref.items():
        if not key.startswith("input/") and np.size(b):
            kind = _family(key)
            family[kind] = max(family.get(kind, 0.0), float(np.max(np.abs(b))))
    return {key: family.get(_family(key), 0.0) for key in ref if not key.startswith("input/")}


def _family(key: str) -> str:
    """``step3/state2/exp_avg`` -> ``step3/state/exp_avg``; ``step3/param1`` -> ``step3/param``."""
    step, rest = key.split("/", 1)
    head, _, tail = rest.partition("/")
    return "/".join([step, head.rstrip("0123456789"), tail])


def max_relative_error(ours: Trajectory, ref: Trajectory) -> float:
    """Largest ``|a - b| / scale`` over the entries of ``ref`` (see ``_scales``)."""
    worst = 0.0
    for key, scale in _scales(ref).items():
        b = ref[key]
        if key.endswith("/step") or np.size(b) == 0:
            continue
        diff = float(np.max(np.abs(np.asarray(ours[key]) - np.asarray(b))))
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def assert_same_keys(ours: Trajectory, ref: Trajectory) -> None:
    """Both runs created the same state entries at the same steps."""
    mine = {k for k in ours if not k.startswith("input/")}
    theirs = {k for k in ref if not k.startswith("input/")}
    assert mine == theirs, f"only arrayopt: {sorted(mine - theirs)[:5]}; only reference: {sorted(theirs - mine)[:5]}"


def assert_matches(ours: Trajectory, ref: Trajectory, dtype: str, ulps: float = 4.0) -> None:
    """Parameters and every state entry match the reference at every step.

    ``ulps`` replaces the float32 tolerance of 4 ulps (``Case.ulps``).
    """
    assert_same_keys(ours, ref)
    scales = _scales(ref)
    tolerance = ulps * 2.0**-23 if dtype in ("float32", "complex64") else TOLERANCE[dtype]
    for key, b in ref.items():
        if key.startswith("input/"):
            continue
        a = ours[key]
        assert np.asarray(a).dtype == np.asarray(b).dtype, (
            f"{key}: dtype {np.asarray(a).dtype} != {np.asarray(b).dtype}"
        )
        if key.endswith("/step"):
            assert float(a) == float(b), f"{key}: step {a} != {b}"
            continue
        assert np.shape(a) == np.shape(b), f"{key}: shape {np.shape(a)} != {np.shape(b)}"
        if np.size(b) == 0:
            continue
        err = float(np.max(np.abs(a - b)))
        assert err <= tolerance * scales[key], f"{key}: max|diff| {err:.3e} > {tolerance:.1e} x scale {scales[key]:.3e}"


# -- side by side: a scenario through arrayopt and torch at once --------------------------------


def draws(seed, shapes, steps, dtype="float64"):
    """Starting arrays of ``shapes`` and ``steps`` lists of gradients, drawn from ``seed``."""
    rng = np.random.default_rng(seed)

    def draw(shape):
        x = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.standard_normal(shape)
        return x.astype(dtype)

    return [draw(s) for s in shapes], [[draw(s) for s in shapes] for _ in range(steps)]


def run_pair(torch, name, kwargs, start, grads, between=None):
    """Run arrayopt and torch side by side; ``between(k, opt)`` may change either optimizer."""
    ours_p = [arrayopt.Parameter(a.copy()) for a in start]
    theirs_p = [torch.nn.Parameter(torch.tensor(a.copy())) for a in start]
    ours = getattr(arrayopt, name)(ours_p, **kwargs)
    theirs = getattr(torch.optim, name)(theirs_p, **kwargs)
    for k, step_grads in enumerate(grads):
        for p, tp, g in zip(ours_p, theirs_p, step_grads, strict=True):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g.copy())
        if between is not None:
            between(k, ours)
            between(k, theirs)
        ours.step()
        theirs.step()
    return ours, theirs, ours_p, theirs_p


def assert_close(ours_p, theirs_p):
    """arrayopt's Parameters equal torch's to float64 rounding."""
    for p, tp in zip(ours_p, theirs_p, strict=True):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-13, atol=1e-15)
