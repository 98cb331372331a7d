"""Hyper-parameter checks shared by the optimizers, with torch.optim's messages."""

import math
import reprlib
from typing import Any

from arrayopt.backends import get_backend, is_array


def require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)


def to_float(value: Any) -> float:
    """A hyper-parameter (Python number or 1-element array) as a Python float.

    Arrays are read on the host (for a CuPy array this waits for the device), so the
    update rules only ever see Python floats: float32 parameters stay float32.
    """
    if type(value) is float:
        return value
    if is_array(value):
        return float(get_backend(value).to_numpy(value).reshape(()))
    if isinstance(value, (str, bytes)):  # float("0.1") would parse it; torch raises TypeError at step
        raise TypeError(f"a hyper-parameter must be a real number or a 1-element array, got {value!r}")
    return float(value)


def scalar_like(value: Any) -> Any:
    """A hyper-parameter as a host number that rounds as torch's does with it.

    A Python number or a float64 array gives a Python float (as :func:`to_float`). A
    float32 or float16 array gives a NumPy scalar of that dtype: host arithmetic with
    Python floats then rounds to that dtype, as torch's with a 0-d tensor
    (``lr / bias_correction`` is a float32 number for a float32 ``lr``). Pass what is
    computed from it to a kernel as ``float(...)``.
    """
    if is_array(value):
        host = get_backend(value).to_numpy(value).reshape(())[()]
        if host.dtype.kind == "f" and host.dtype.itemsize < 8:
            return host
    return to_float(value)


def check_lr(lr: Any) -> None:
    """torch's learning-rate checks, plus: a non-finite lr is refused."""
    check_nonnegative(lr, "lr", f"Invalid learning rate: {lr}")


def check_nonnegative(value: Any, name: str, message: str) -> None:
    """``0 <= value < inf``, else ``ValueError(message)``; NaN fails too."""
    require(0.0 <= number(value, name) < math.inf, message)


def check_finite(value: Any, name: str, message: str) -> None:
    """``value`` is a finite real number, else ``ValueError(message)``."""
    require(math.isfinite(number(value, name)), message)


def check_pair(value: Any, name: str, parts: str) -> None:
    """``value`` has two entries, else ``ValueError("<name> must be a pair (<parts>), got ...")``."""
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair ({parts}), got {value!r}")


def check_betas(betas: Any) -> None:
    """torch's checks on ``betas`` (``0 <= beta < 1``, kept as given), plus: it must be a pair."""
    check_pair(betas, "betas", "beta1, beta2")
    for i in range(2):
        require(0.0 <= number(betas[i], f"betas[{i}]") < 1.0, f"Invalid beta parameter at index {i}: {betas[i]}")


def check_flag_conflicts(fused: Any, foreach: Any, differentiable: Any, capturable: Any = False) -> None:
    """torch's implementation-flag errors, then ours for the flags we cannot honour.

    ``foreach`` and ``fused`` only choose among torch's implementations of the same
    rule; arrayopt has a single implementation per backend, so they are accepted,
    kept in the param groups, and have no effect.
    """
    if fused and differentiable:
        raise RuntimeError("`fused` does not support `differentiable`")
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if differentiable:
        raise NotImplementedError(
            "differentiable=True is not supported: arrayopt has no autograd, its update "
            "rules write into plain arrays in place"
        )
    if capturable:
        raise NotImplementedError(
            "capturable=True is not supported: arrayopt keeps step counters and "
            "per-step scalars on the host and never synchronises with the device "
            "inside step(), so there is no separate capturable mode"
        )


def check_fused(group: Any, sparse_error: str | None = None) -> None:
    """torch's step-time refusals for a group with ``fused=True``, before anything changes.

    Every parameter with a gradient must be real floating point (torch:
    ``_device_dtype_check_for_fused``); with ``sparse_error`` (SGD), no gradient may be
    sparse. Raises RuntimeError, as torch does.
    """
    if not group.get("fused"):
        return
    from arrayopt.sparse import SparseGrad  # (arrayopt.sparse imports this module)

    with_grad = [p for p in group["params"] if p.grad is not None]
    for p in with_grad:
        if get_backend(p.data).is_complex(p.data):
            raise RuntimeError(
                "`fused=True` requires all the params to be floating point Parameters (torch: Tensors), "
                f"but {p._label()} has dtype {p.dtype}"
            )
    if sparse_error is not None and any(isinstance(p.grad, SparseGrad) for p in with_grad):
        raise RuntimeError(sparse_error)


def number(value: Any, name: str) -> float:
    """``value`` as a float; a TypeError naming ``name`` if it is not a real number.

    torch accepts 1-element tensors for hyper-parameters; arrayopt accepts 1-element
    arrays, and refuses larger ones with torch's message.
    """
    if is_array(value) and math.prod(value.shape) != 1:
        raise ValueError(f"Tensor {name} must be 1-element")
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        return to_float(value)
    except OverflowError:
        raise ValueError(f"{name} is {reprlib.repr(value)}, which does not fit a float") from None
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None


def typename(obj: Any) -> str:
    """``module.Class`` of ``obj`` (just ``Class`` for builtins), like ``torch.typename``."""
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def loss_value(loss: Any) -> float:
    """A closure's return value as a finite Python float, for optimizers that compute with it.

    Elementwise optimizers only return the closure's value (as torch does), so they
    never call this; an optimizer that reads the loss (LBFGS compares losses) should,
    so that a bad closure fails with a clear message instead of a confusing one later.

    Raises:
        TypeError: the closure returned None, a bool, a string, a complex number, a
            non-numeric array or anything else that is not a real number.
        ValueError: it returned an array with other than one element, or NaN or an
            infinity (a diverged loss).
    """
    hint = "the closure must return the loss: a real number or a 1-element array"
    if is_array(loss):
        shape = tuple(loss.shape)
        if math.prod(shape) != 1:
            raise ValueError(f"the closure returned an array of shape {shape}; {hint}")
        backend = get_backend(loss)
        if not backend.xp.isdtype(loss.dtype, ("real floating", "integral")):
            raise TypeError(f"the closure returned an array of dtype {loss.dtype}; {hint}")
        value = float(backend.to_numpy(loss).reshape(()))
    elif loss is None or isinstance(loss, (bool, str, bytes, complex)):
        raise TypeError(f"the closure returned {loss!r}; {hint}")
    else:
        try:
            value = float(loss)
        except (TypeError, ValueError):
            raise TypeError(f"the closure returned a value of type {typename(loss)}; {hint}") from None
    if not math.isfinite(value):
        raise ValueError(f"the closure returned a non-finite loss ({value})")
    return value
