"""The opt-in non-finite guard: skip a step whose gradients hold NaN or infinity.

Enabled per optimizer with ``optimizer.skip_nonfinite = True`` (see
:class:`arrayopt.Optimizer`); the step wrapper calls :func:`guarded_step`.
"""

from collections.abc import Callable
from typing import Any

from arrayopt.backends import get_backend

__all__ = ["grads_are_finite", "guarded_step"]


def guarded_step(
    step: Callable[..., Any], optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bool, Any]:
    """Run ``step(*args, **kwargs)`` unless a gradient is not finite: ``(stepped, result)``.

    A closure is called here first, so the check sees the gradients it computes; the
    step then gets a closure whose first call returns that same value (later calls,
    such as LBFGS's re-evaluations, call the user's closure again). A skipped step
    returns the closure's value, or None without a closure.
    """
    closure = args[1] if len(args) > 1 else kwargs.get("closure")
    loss = None
    if closure is not None:
        loss = closure()
        first = [True]

        def replay() -> Any:
            if first[0]:
                first[0] = False
                return loss
            return closure()

        if len(args) > 1:
            args = (args[0], replay, *args[2:])
        else:
            kwargs = {**kwargs, "closure": replay}
    if not grads_are_finite(optimizer):
        optimizer.skipped_steps += 1
        return False, loss
    return True, step(*args, **kwargs)


def grads_are_finite(optimizer: Any) -> bool:
    """True if every gradient of ``optimizer``'s parameters is free of NaN and infinity.

    NumPy gradients are checked one by one (stopping at the first bad one); on other
    libraries the per-gradient results are combined on the device and read once per
    library and device, so the host waits once rather than once per gradient.
    """
    pending: dict[tuple[str, str], Any] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            backend = get_backend(grad)
            xp = backend.xp
            finite = xp.all(xp.isfinite(grad))
            if backend.name == "numpy":
                if not finite:
                    return False
                continue
            key = (backend.name, str(backend.device(grad)))
            seen = pending.get(key)
            pending[key] = finite if seen is None else xp.logical_and(seen, finite)
    return all(bool(finite) for finite in pending.values())
