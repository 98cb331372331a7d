"""Torch parity harness for sparse gradients (SGD, Adagrad, SparseAdam).

Like ``harness.py``, but the gradients are uncoalesced COO gradients (repeated
positions, random order) over parameters whose sparse dimensions are all of theirs or
only the leading ones (dense trailing blocks), given to arrayopt as
:class:`arrayopt.SparseGrad` and to torch as ``torch.sparse_coo_tensor``. Some steps
have no gradient, some a gradient with no entries, and a case may also give dense
gradients at chosen steps. Halfway through, the state_dict goes through a fresh
optimizer. Recorded trajectories use ``harness``'s keys, sparse state (SGD's momentum
buffer) densified, so ``harness.assert_matches`` compares them.
"""

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import arrayopt

import harness

# (shape, sparse dimensions)
SHAPES = [((6,), 1), ((5, 3), 1), ((4, 3), 2), ((3, 4, 2), 2), ((4, 2, 3), 1)]
GROUPS = [[0, 1, 2], [3, 4]]
STEPS = 16
ROUNDTRIP_AFTER = 7
NONE_GRADS = {(0, 2), (3, 1), (9, 4)}
EMPTY_GRADS = {(2, 0), (5, 3), (11, 1)}  # a sparse gradient with no entries


@dataclass(frozen=True)
class SparseCase:
    optimizer: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    dtypes: tuple[str, ...] = ("float64", "float32")
    #: (step, param index) pairs that get a dense gradient instead of a sparse one
    dense_at: frozenset[tuple[int, int]] = frozenset()
    array_hyper: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        parts = [self.optimizer]
        for key, value in self.kwargs.items():
            if isinstance(value, bool):
                parts.append(key if value else f"no_{key}")
            elif isinstance(value, tuple):
                parts.append(f"{key}={'_'.join(str(x) for x in value)}")
            else:
                parts.append(f"{key}={value}")
        if self.array_hyper:
            parts.append("arrays=" + "_".join(self.array_hyper))
        if self.dense_at:
            parts.append("mixed")
        return "-".join(parts)

    def __str__(self) -> str:
        return self.id


# Dense gradients at step 0 give SGD's momentum a dense buffer; later ones are only
# used where torch accepts a dense gradient after sparse ones.
_FIRST_DENSE = frozenset({(0, 0), (0, 3)})
_LATER_DENSE = frozenset({(6, 1), (12, 4), (13, 0)})
ALL = ("float64", "float32", "complex128", "complex64")

CASES = [
    SparseCase("SGD", {"lr": 0.1}, ALL),
    SparseCase("SGD", {"lr": 0.1, "maximize": True, "dampening": 0.3}, dense_at=_FIRST_DENSE | _LATER_DENSE),
    SparseCase("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}, ALL),
    SparseCase("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True}),
    SparseCase("SGD", {"lr": 0.05, "momentum": 0.5}, dense_at=_FIRST_DENSE),
    SparseCase("Adagrad", {"lr": 0.1}, ALL),
    SparseCase("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.3, "eps": 1e-3}),
    SparseCase("Adagrad", {"lr": 0.1, "maximize": True, "initial_accumulator_value": 0.1}, ALL),
    SparseCase("Adagrad", {"lr": 0.1, "lr_decay": 0.01}, dense_at=_FIRST_DENSE | _LATER_DENSE, array_hyper=("lr",)),
    SparseCase("SparseAdam", {"lr": 0.05}),
    SparseCase("SparseAdam", {"lr": 0.05, "maximize": True}),
    SparseCase("SparseAdam", {"lr": 0.05, "betas": (0.5, 0.8), "eps": 1e-3}, array_hyper=("lr",)),
]

Trajectory = dict[str, Any]


def make_inputs(case: SparseCase, dtype: str, seed: int = 4321) -> Trajectory:
    """Initial parameters and, per step and parameter, a dense or COO gradient (or none)."""
    rng = np.random.default_rng(seed)
    complex_ = dtype.startswith("complex")

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        x = np.asarray(rng.standard_normal(shape))
        if complex_:
            x = x + 1j * rng.standard_normal(shape)
        return np.asarray(x, dtype=dtype)

    inputs: Trajectory = {}
    for i, (shape, _) in enumerate(SHAPES):
        inputs[f"input/param{i}"] = draw(shape)
    for step in range(STEPS):
        scale = 1.0 + 0.5 * np.cos(step)
        for i, (shape, k) in enumerate(SHAPES):
            if (step, i) in NONE_GRADS:
                continue
            if (step, i) in case.dense_at:
                inputs[f"input/dense{step}_{i}"] = np.asarray(draw(shape) * scale, dtype=dtype)
                continue
            nnz = 0 if (step, i) in EMPTY_GRADS else int(rng.integers(1, 2 * shape[0] + 2))
            # few distinct positions, drawn with replacement: repeats in random order
            indices = np.stack([rng.integers(0, shape[d], size=nnz) for d in range(k)]).astype(np.int64)
            inputs[f"input/indices{step}_{i}"] = indices.reshape(k, nnz)
            inputs[f"input/values{step}_{i}"] = np.asarray(draw((nnz, *shape[k:])) * scale, dtype=dtype)
    return inputs


def _grad(inputs: Trajectory, step: int, i: int, sparse: Any, dense: Any) -> Any:
    if f"input/dense{step}_{i}" in inputs:
        return dense(inputs[f"input/dense{step}_{i}"].copy())
    if f"input/indices{step}_{i}" in inputs:
        return sparse(inputs[f"input/indices{step}_{i}"].copy(), inputs[f"input/values{step}_{i}"].copy(), SHAPES[i][0])
    return None


def _hyper(case: SparseCase, make_scalar: Any) -> dict[str, Any]:
    kwargs = dict(case.kwargs)
    for name in case.array_hyper:
        kwargs[name] = make_scalar(kwargs[name])
    return kwargs


def run_arrayopt(case: SparseCase, xp: Any, inputs: Trajectory, roundtrip: bool = True) -> Trajectory:
    def sparse(indices: np.ndarray, values: np.ndarray, shape: tuple[int, ...]) -> Any:
        return arrayopt.SparseGrad(xp.asarray(indices), xp.asarray(values), shape)

    def to_numpy(a: Any) -> np.ndarray:
        if isinstance(a, arrayopt.SparseGrad):
            a = a.to_dense()
        return np.array(arrayopt.backends.get_backend(a).to_numpy(a), copy=True)

    return _run(
        getattr(arrayopt, case.optimizer),
        _hyper(case, lambda x: xp.asarray(x, dtype=xp.float64)),
        lambda a, i: arrayopt.Parameter(xp.asarray(a), name=f"p{i}"),
        sparse,
        xp.asarray,
        to_numpy,
        case,
        inputs,
        roundtrip,
    )


def run_torch(case: SparseCase, inputs: Trajectory, roundtrip: bool = True) -> Trajectory:
    import torch

    def sparse(indices: np.ndarray, values: np.ndarray, shape: tuple[int, ...]) -> Any:
        return torch.sparse_coo_tensor(torch.from_numpy(indices), torch.from_numpy(values), shape)

    def to_numpy(t: Any) -> np.ndarray:
        t = t.detach()
        if t.is_sparse:
            t = t.to_dense()
        return t.numpy().copy()

    return _run(
        getattr(torch.optim, case.optimizer),
        _hyper(case, lambda x: torch.tensor(x, dtype=torch.float64)),
        lambda a, i: torch.nn.Parameter(torch.from_numpy(a)),
        sparse,
        torch.from_numpy,
        to_numpy,
        case,
        inputs,
        roundtrip,
    )


def _run(
    cls: Any,
    kwargs: dict[str, Any],
    make_param: Any,
    sparse: Any,
    dense: Any,
    to_numpy: Any,
    case: SparseCase,
    inputs: Trajectory,
    roundtrip: bool,
) -> Trajectory:
    lr2 = 0.5 * float(case.kwargs["lr"])

    def build(arrays: list[np.ndarray]) -> tuple[list[Any], Any]:
        params = [make_param(a, i) for i, a in enumerate(arrays)]
        groups = [{"params": [params[i] for i in GROUPS[0]]}, {"params": [params[i] for i in GROUPS[1]], "lr": lr2}]
        return params, cls(groups, **kwargs)

    params, opt = build([inputs[f"input/param{i}"].copy() for i in range(len(SHAPES))])
    out: Trajectory = {}
    for step in range(STEPS):
        for i, p in enumerate(params):
            p.grad = _grad(inputs, step, i, sparse, dense)
        opt.step()
        _record(out, step, [p.data for p in params], opt.state_dict()["state"], to_numpy)
        if roundtrip and step == ROUNDTRIP_AFTER:
            saved = copy.deepcopy(opt.state_dict())
            params, opt = build([to_numpy(p.data) for p in params])
            opt.load_state_dict(saved)
    return out


def _record(out: Trajectory, step: int, datas: list[Any], state: dict[int, dict[str, Any]], to_numpy: Any) -> None:
    for i, data in enumerate(datas):
        out[f"step{step}/param{i}"] = to_numpy(data)
    for index, entries in state.items():
        for key, value in entries.items():
            name = f"step{step}/state{index}/{key}"
            out[name] = np.float64(float(value)) if key == "step" else to_numpy(value)


assert_matches = harness.assert_matches
max_relative_error = harness.max_relative_error
