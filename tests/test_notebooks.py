"""The notebooks in notebooks/: each runs top to bottom, and the committed ones were executed.

The kernel imports the arrayopt these tests import (the installed package in CI, the
checkout with PYTHONPATH), as tests/test_plotting.py does for the scheduler gallery,
which it executes itself (so it is only checked for outputs here).
"""

import importlib.util
import os

import pytest

import arrayopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(name for name in os.listdir(FOLDER) if name.endswith(".ipynb"))
RUN_ELSEWHERE = {"scheduler_gallery.ipynb"}  # tests/test_plotting.py::test_the_gallery_notebook_runs


def read(name):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(os.path.join(FOLDER, name), as_version=4)


def errors_in(notebook):
    return [
        f"cell {index}: {output.get('ename')}: {output.get('evalue')}"
        for index, cell in enumerate(notebook.cells)
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]


def test_the_numbered_notebooks_are_there():
    expected = {"01_quickstart", "02_scientific_fitting", "04_gpu_pipeline", "05_migrating_from_torch"}
    assert expected <= {name.removesuffix(".ipynb") for name in NOTEBOOKS}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_was_executed(name):
    """Every code cell ran, in order, without an error; the plots are stored as images."""
    notebook = read(name)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    counts = [cell.execution_count for cell in code]
    assert None not in counts, f"{name}: cells never executed: {[i for i, c in enumerate(counts) if c is None]}"
    assert counts == sorted(counts), f"{name}: cells executed out of order: {counts}"
    assert not errors_in(notebook)
    uses_plots = any("plt.show()" in cell.source for cell in code)
    images = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    assert bool(images) == uses_plots, f"{name}: {len(images)} stored images"


@pytest.mark.parametrize("name", [n for n in NOTEBOOKS if n not in RUN_ELSEWHERE])
def test_committed_notebook_is_what_build_py_writes(name):
    """The cells match notebooks/build.py, so the JSON was regenerated after the last edit."""
    pytest.importorskip("nbformat")
    spec = importlib.util.spec_from_file_location("notebooks_build", os.path.join(FOLDER, "build.py"))
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    generated = build.make(build.NOTEBOOKS[name.removesuffix(".ipynb")])
    committed = read(name)
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in generated.cells]


def execute(name, tmp_path, hide_torch=False):
    """Run a notebook afresh in a kernel that imports this arrayopt; return it with its outputs."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("scipy")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = read(name)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(arrayopt.__file__)))
    path = [package_root, os.environ.get("PYTHONPATH", "")]
    if hide_torch:  # a stand-in that fails to import, as a missing torch does
        shadow = tmp_path / "no_torch"
        shadow.mkdir()
        (shadow / "torch.py").write_text("raise ImportError('torch hidden by tests/test_notebooks.py')\n")
        path.insert(0, str(shadow))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "MPLBACKEND": "Agg"}
    env.setdefault("OMP_NUM_THREADS", "1")
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.km = client.create_kernel_manager()
    with client.setup_kernel(env=env):
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)  # raises CellExecutionError on an error
    assert not errors_in(notebook)
    return notebook


def stdout_of(notebook):
    return "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))


@pytest.mark.parametrize("name", [n for n in NOTEBOOKS if n not in RUN_ELSEWHERE])
def test_notebook_runs(name, tmp_path):
    """Executed afresh, no cell raises (the notebooks assert their own claims)."""
    notebook = execute(name, tmp_path)
    if name == "05_migrating_from_torch.ipynb" and importlib.util.find_spec("torch") is not None:
        assert "largest relative difference" in stdout_of(notebook)  # the torch side ran and was compared


def test_migrating_notebook_runs_without_torch(tmp_path):
    notebook = execute("05_migrating_from_torch.ipynb", tmp_path, hide_torch=True)
    out = stdout_of(notebook)
    assert "torch is not installed" in out
    assert "largest relative difference" not in out
