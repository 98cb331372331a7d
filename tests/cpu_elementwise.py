"""``cupy.ElementwiseKernel`` on the CPU: the same CUDA C++ body compiled by the host C++ compiler.

The CuPy backend prints traced rules as elementwise kernels. Without a GPU, this
stand-in compiles the very same parameter lists and body as C++ (``-ffp-contract=off``,
the CPU counterpart of ``--fmad=false``) and runs it on NumPy arrays, with
ElementwiseKernel's conventions: inputs then outputs, array parameters bound per
element (``const T &x`` for inputs, ``T &x`` for outputs), scalars by value.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Any, ClassVar

import numpy as np

COMPILER = shutil.which("g++") or shutil.which("c++")
_FOLDER = tempfile.mkdtemp(prefix="arrayopt-cxx-")
_CTYPES = {"float32": "float", "float64": "double"}


class CpuElementwiseKernel:
    """What the tests need of ``cupy.ElementwiseKernel``: construction and a call."""

    instances: ClassVar[list["CpuElementwiseKernel"]] = []

    def __init__(self, in_params: str, out_params: str, operation: str, name: str = "kernel", **kwargs: Any) -> None:
        self.in_params = _parse(in_params)
        self.out_params = _parse(out_params)
        self.operation = operation
        self.name = name
        self.options = tuple(kwargs.get("options", ()))
        self.no_return = kwargs.get("no_return", False)
        self._function: Any = None
        CpuElementwiseKernel.instances.append(self)

    @property
    def source(self) -> str:
        params = ["long long _n"]
        binds = []
        for (dtype, name), is_output in [(p, False) for p in self.in_params] + [(p, True) for p in self.out_params]:
            ctype = _CTYPES[dtype]
            if name.startswith("a"):  # arrays (the backend's naming: a<position>, h<node> for scalars)
                params.append(f"{'' if is_output else 'const '}{ctype} *_raw_{name}")
                binds.append(f"{'' if is_output else 'const '}{ctype} &{name} = _raw_{name}[_i];")
            else:
                params.append(f"{ctype} {name}")
        lines = [
            "#include <math.h>",
            f'extern "C" void {self.name}({", ".join(params)}) {{',
            "    for (long long _i = 0; _i < _n; ++_i) {",
            *[f"        {b}" for b in binds],
            *[f"        {line}" for line in self.operation.splitlines()],
            "    }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    def _compiled(self) -> Any:
        if self._function is None:
            source = self.source
            digest = hashlib.sha256(source.encode()).hexdigest()[:20]
            library = os.path.join(_FOLDER, f"{self.name}_{digest}.so")
            if not os.path.exists(library):
                path = library[:-3] + ".cpp"
                with open(path, "w") as f:
                    f.write(source)
                command = [COMPILER, "-O1", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", path]
                subprocess.run([*command, "-o", library], check=True, capture_output=True, text=True)
            self._function = getattr(ctypes.CDLL(library), self.name)
        return self._function

    def __call__(self, *args: Any) -> None:
        params = self.in_params + self.out_params
        assert len(args) == len(params), (len(args), params)
        function = self._compiled()
        shapes = {a.shape for a in args if isinstance(a, np.ndarray)}
        assert len(shapes) == 1, shapes  # the backend never relies on broadcasting
        n = int(np.prod(next(iter(shapes))))
        values: list[Any] = [ctypes.c_longlong(n)]
        write_back = []
        for (dtype, name), a in zip(params, args, strict=True):
            if isinstance(a, np.ndarray):
                assert a.dtype == np.dtype(dtype), (name, a.dtype, dtype)
                buffer = np.ascontiguousarray(a)  # strided views (real/imag parts) through a copy
                if buffer is not a:
                    write_back.append((a, buffer))
                values.append(ctypes.c_void_p(buffer.ctypes.data))
            else:
                assert isinstance(a, (float, int)), (name, type(a))
                values.append((ctypes.c_float if dtype == "float32" else ctypes.c_double)(a))
        function(*values)
        for target, buffer in write_back:
            target[...] = buffer


def _parse(params: str) -> list[tuple[str, str]]:
    parsed = []
    for item in params.split(","):
        if item.strip():
            dtype, name = item.split()
            parsed.append((dtype, name))
    return parsed


def install_cupy_stand_in(monkeypatch: Any, elementwise: bool | None = None) -> Any:
    """arrayopt's CuPy backend over a stand-in ``cupy`` module (NumPy arrays), installed for one test.

    Generated ElementwiseKernels are compiled as C++ on the CPU (``elementwise=True``,
    needs a compiler), or disabled so every rule goes through the ``cupy.fuse`` stand-in
    (``False``); None picks the former when a compiler exists. Returns the backend,
    registered for NumPy arrays until the test ends.
    """
    import importlib
    import sys

    import array_api_compat.numpy

    import arrayopt.backends

    import fuse_dialect

    if elementwise is None:
        elementwise = COMPILER is not None
    fake = fuse_dialect.fake_cupy_module()
    fake.ElementwiseKernel = CpuElementwiseKernel
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", array_api_compat.numpy)
    monkeypatch.delitem(sys.modules, "arrayopt.backends.cupy", raising=False)
    monkeypatch.setattr(arrayopt.backends, "cupy", None, raising=False)
    module = importlib.import_module("arrayopt.backends.cupy")
    if not elementwise:
        monkeypatch.setattr(module, "_elementwise_launcher", lambda *args: None)
    backend = module.CuPyBackend()
    monkeypatch.setitem(arrayopt.backends._BY_TYPE, np.ndarray, backend)
    return backend
