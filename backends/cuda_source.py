"""A traced rule as the parts of a ``cupy.ElementwiseKernel`` (CUDA C++), without CuPy.

:func:`elementwise_parts` prints a :class:`~arrayopt.backends.trace.Program` as the
parameter lists and the per-element body of an elementwise kernel, plus the Python
source of a launcher that computes the host scalars and calls the kernel. The body
uses only operations IEEE 754 rounds exactly (``+ - * /``, ``sqrtf``/``sqrt``,
``fabsf``/``fabs``, comparisons and selections); compiled with ``--fmad=false`` (no
contraction of ``a * b + c`` into an FMA) and NVRTC's defaults ``--prec-div=true``,
``--prec-sqrt=true``, ``--ftz=false``, it gives NumPy's bits. The same text compiles
as C++ for the CPU, which is how the tests check it without a GPU.
"""

import math
from typing import Any

from arrayopt.backends.trace import ARRAY, OPERATIONS, NotCompilable, Program, element_code, host_code

__all__ = ["NVRTC_OPTIONS", "ElementwiseParts", "elementwise_parts"]

#: options for NVRTC: keep every multiply and add rounded on its own, as NumPy does
NVRTC_OPTIONS = ("--fmad=false",)

#: Printed after the loads: an empty asm statement that clobbers memory, so the compiler
#: issues every load before the arithmetic instead of sinking one (the parameter, in
#: Adam) past the square root and the division, where its latency is no longer hidden.
#: It orders instructions only; the arithmetic, and so every bit, is unchanged.
LOAD_BARRIER = 'asm volatile("" ::: "memory");'


_CTYPES = {"float32": "float", "float64": "double"}


class ElementwiseParts:
    """What ``cupy.ElementwiseKernel`` needs, and how to call it.

    Attributes:
        in_params, out_params, operation: the kernel's declaration and body.
        launcher_source: ``def launch(v0, v1, ...)`` calling ``_kernel(*inputs, *outputs)``
            with the rule's positional arguments (arrays as the kernel takes them).
        inputs, outputs: positions of the array arguments read only / written.
    """

    def __init__(
        self,
        in_params: str,
        out_params: str,
        operation: str,
        launcher_source: str,
        inputs: list[int],
        outputs: list[int],
    ) -> None:
        self.in_params = in_params
        self.out_params = out_params
        self.operation = operation
        self.launcher_source = launcher_source
        self.inputs = inputs
        self.outputs = outputs


def elementwise_parts(program: Program, dtype: Any) -> ElementwiseParts:
    """The kernel for ``program`` on arrays of the real ``dtype`` (float32 or float64).

    Raises:
        NotCompilable: for other dtypes and for non-finite literals.
    """
    name = getattr(dtype, "name", str(dtype))
    if name not in _CTYPES:
        raise NotCompilable(f"no CUDA kernel for dtype {name}")
    ctype = _CTYPES[name]
    suffix = "f" if ctype == "float" else ""
    nodes = program.nodes
    outputs = sorted(program.stores)
    inputs = [p for p in program.loaded() if p not in program.stores]
    hosts = program.host_inputs()
    statements, host_values = host_code(program)

    def constant(index: int, value: Any) -> str:
        if not math.isfinite(float(value)):
            raise NotCompilable(f"the literal {value!r}")
        return f"(({ctype}){float(value)!r})"

    names, computed = element_code(program, constant)
    spelling = {"f": suffix, "zero": f"({ctype})0", "one": f"({ctype})1"}
    body = [f"const {ctype} x{p} = a{p};" for p in program.loaded()]
    body.append(LOAD_BARRIER)
    body += [f"const {ctype} c{h} = ({ctype})h{h};" for h in hosts]
    for index in computed:
        node = nodes[index]
        kind = "bool" if node.kind != "value" else ctype
        expression = OPERATIONS[node.op].cpp.format(*(names[a] for a in node.args), **spelling)
        body.append(f"const {kind} t{index} = {expression};")
    body += [f"a{p} = {names[index]};" for p, index in sorted(program.stores.items())]

    real = "float32" if ctype == "float" else "float64"
    in_params = ", ".join([f"{real} a{p}" for p in inputs] + [f"float64 h{h}" for h in hosts])
    out_params = ", ".join(f"{real} a{p}" for p in outputs)
    params = ", ".join(f"v{i}" for i in range(len(program.kinds)))
    call = ", ".join([f"v{p}" for p in inputs] + host_values + [f"v{p}" for p in outputs])
    launcher = [f"def launch({params}):", *[f"    {line}" for line in statements], f"    _kernel({call})"]
    assert all(program.kinds[p] == ARRAY for p in inputs + outputs)
    return ElementwiseParts(in_params, out_params, "\n".join(body), "\n".join(launcher) + "\n", inputs, outputs)
