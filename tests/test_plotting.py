"""arrayopt.plotting: schedule_history's numbers, plot_schedule's images and refusals."""

import doctest
import subprocess
import sys

import numpy as np
import pytest

import arrayopt
import arrayopt.plotting
from arrayopt import lr_scheduler
from arrayopt.plotting import plot_schedule, schedule_history
from arrayopt.swa_utils import SWALR

import lr_cases as C

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mpl():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield matplotlib
    plt.close("all")


def groups_of(opt):
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


# -- the numbers ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Detected call of")  # SequentialLR-of-chained, as torch
@pytest.mark.parametrize("name", list(C.CASES))
def test_history_is_the_schedule_and_changes_nothing(name):
    """schedule_history(sched, N) lists what N-1 real steps give, and leaves sched and optimizer alone."""
    kind, factory = C.CASES[name]
    opt = C.make_optimizer("arrayopt", kind)
    sched = factory(C.namespace("arrayopt"), opt)
    opt.step()
    sched.step()  # history may start mid-schedule
    groups, state = groups_of(opt), C.summarize(sched.state_dict())
    history = schedule_history(sched, 30)
    assert groups_of(opt) == groups
    assert C.summarize(sched.state_dict()) == state
    expected_lr, expected_momentum = [], []
    for _ in range(30):
        snap = C.snapshot(opt, sched)
        expected_lr.append(snap["lr"])
        expected_momentum.append(snap["momentum"])
        opt.step()
        sched.step()
    assert history["lr"] == expected_lr
    assert history["momentum"] == expected_momentum
    assert history["momentum_name"] == ("beta1" if kind == "adam" else "momentum")


def test_history_of_plateau_follows_the_metrics():
    opt = C.make_optimizer("arrayopt", "sgd")
    sched = lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    history = schedule_history(sched, 6, metrics=[1.0, 1.0, 1.0, 1.0, 1.0])
    assert [row[0] for row in history["lr"]] == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001])
    assert sched.num_bad_epochs == 0 and opt.param_groups[0]["lr"] == 0.1


def test_history_leaves_array_lrs_alone(xp):
    opt = C.make_optimizer("arrayopt", "sgd", lr_array=True, xp=xp)
    sched = lr_scheduler.ExponentialLR(opt, 0.5)
    lr = opt.param_groups[0]["lr"]
    history = schedule_history(sched, 4)
    assert [row[0] for row in history["lr"]] == [0.1, 0.05, 0.025, 0.0125]
    assert opt.param_groups[0]["lr"] is lr and float(lr) == 0.1


def test_history_does_not_copy_parameters_or_state():
    params = [arrayopt.Parameter(np.zeros(1000))]
    params[0].grad = np.ones(1000)
    opt = arrayopt.Adam(params, lr=0.1)
    opt.step()
    sched = lr_scheduler.CosineAnnealingLR(opt, 10)
    simulated = arrayopt.plotting._detached_copy(sched)
    assert simulated.optimizer is not opt
    assert simulated.optimizer.param_groups[0]["params"][0] is params[0]
    assert simulated.optimizer.state is opt.state


# -- the pictures -----------------------------------------------------------------------------------


def test_plot_writes_a_png(mpl, tmp_path):
    opt = C.make_optimizer("arrayopt", "sgd")
    sched = lr_scheduler.OneCycleLR(opt, 0.5, total_steps=40)
    path = tmp_path / "onecycle.png"
    ax = plot_schedule(sched, 40, path=path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 1000
    lines = ax.get_lines()
    assert len(lines) == 2  # one lr line per group
    np.testing.assert_array_equal(lines[0].get_ydata(), [row[0] for row in schedule_history(sched, 40)["lr"]])
    twin = [other for other in ax.figure.axes if other is not ax]
    assert len(twin) == 1 and twin[0].get_ylabel() == "momentum"  # OneCycleLR cycles it
    assert ax.get_title() == "OneCycleLR"


def test_plot_into_given_axes_and_formats(mpl, tmp_path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3)
    opt = C.make_optimizer("arrayopt", "adam")
    plot_schedule(lr_scheduler.StepLR(opt, 3), 10, ax=axes[0], title="step")
    plot_schedule(SWALR(C.make_optimizer("arrayopt", "sgd"), 0.01, anneal_epochs=4), 10, ax=axes[1], momentum=True)
    rop = lr_scheduler.ReduceLROnPlateau(C.make_optimizer("arrayopt", "sgd"), patience=0)
    plot_schedule(rop, 5, metrics=[3, 3, 3, 3], ax=axes[2], momentum=False)
    assert axes[0].get_title() == "step"
    assert len(fig.axes) == 4  # one twin axis, for the momentum=True panel only
    fig.savefig(tmp_path / "grid.svg")
    assert (tmp_path / "grid.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda s: plot_schedule(object(), 10), TypeError, "expects an arrayopt scheduler"),
        (lambda s: plot_schedule(s, 0), ValueError, "steps must be a positive int, got 0"),
        (lambda s: plot_schedule(s, -3), ValueError, "steps must be a positive int, got -3"),
        (lambda s: plot_schedule(s, 2.5), TypeError, "steps must be a positive int, got 2.5"),
        (lambda s: plot_schedule(s, True), TypeError, "steps must be a positive int, got True"),
        (lambda s: plot_schedule(s, 5, ax="axes"), TypeError, "ax must be a matplotlib Axes, got str"),
        (lambda s: plot_schedule(s, 5, momentum="yes"), TypeError, "momentum must be True, False or None"),
        (lambda s: plot_schedule(s, 5, metrics=[1.0] * 4), ValueError, "metrics only drive ReduceLROnPlateau"),
        (
            lambda s: plot_schedule(lr_scheduler.ReduceLROnPlateau(s.optimizer), 5),
            ValueError,
            "ReduceLROnPlateau follows a metric; pass metrics=",
        ),
        (
            lambda s: plot_schedule(lr_scheduler.ReduceLROnPlateau(s.optimizer), 5, metrics=[1.0]),
            ValueError,
            "1 metrics for steps=5; need at least 4",
        ),
        (
            lambda s: plot_schedule(lr_scheduler.ReduceLROnPlateau(s.optimizer), 3, metrics="ab"),
            TypeError,
            "metrics must be a sequence of numbers",
        ),
        (
            lambda s: plot_schedule(lr_scheduler.OneCycleLR(s.optimizer, 0.1, total_steps=10), 13),
            ValueError,
            "Tried to step 11 times",
        ),
    ],
)
def test_plot_refuses_bad_input(mpl, call, error, match):
    sched = lr_scheduler.StepLR(C.make_optimizer("arrayopt", "sgd"), 3)
    with pytest.raises(error, match=match):
        call(sched)


def test_momentum_true_needs_momentum(mpl):
    opt = C.make_optimizer("arrayopt", "sgd")
    for group in opt.param_groups:
        del group["momentum"]
    with pytest.raises(ValueError, match="no momentum or betas"):
        plot_schedule(lr_scheduler.StepLR(opt, 3), 5, momentum=True)


@pytest.mark.ref
def test_torch_schedulers_are_refused_by_name(torch):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(TypeError, match=r"got torch\.optim\.lr_scheduler\.StepLR"):
        schedule_history(torch.optim.lr_scheduler.StepLR(opt, 3), 5)


def test_without_matplotlib_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    sched = lr_scheduler.StepLR(C.make_optimizer("arrayopt", "sgd"), 3)
    with pytest.raises(ImportError, match=r"pip install arrayopt\[plot\]"):
        plot_schedule(sched, 5)
    assert len(schedule_history(sched, 5)["lr"]) == 5  # the numbers need no matplotlib


def test_import_arrayopt_does_not_import_matplotlib(tmp_path):
    code = (
        "import sys, arrayopt, arrayopt.plotting, arrayopt.lr_scheduler, arrayopt.swa_utils\n"
        "assert 'matplotlib' not in sys.modules\nprint('clean')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_docstring_examples():
    result = doctest.testmod(arrayopt.plotting, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_the_gallery_notebook_runs(mpl, tmp_path):
    """notebooks/scheduler_gallery.ipynb executes top to bottom (with this checkout's arrayopt)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    notebook = nbformat.read(os.path.join(root, "notebooks", "scheduler_gallery.ipynb"), as_version=4)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(arrayopt.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    env["MPLBACKEND"] = "Agg"
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.km = client.create_kernel_manager()
    with client.setup_kernel(env=env):
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_schedule_history_of_an_optimizer_over_a_parameter_list_changes_nothing():
    params = arrayopt.ParameterList([np.ones(2), np.zeros(3)])
    params.flat_grad = np.ones(5)
    opt = arrayopt.SGD(params, lr=1.0, momentum=0.9)
    opt.step()
    before = params.flat_data.copy()
    scheduler = arrayopt.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    history = schedule_history(scheduler, 5)
    assert history["lr"] == [[1.0], [1.0], [0.5], [0.5], [0.25]]
    np.testing.assert_array_equal(params.flat_data, before)
    assert opt.param_groups[0]["lr"] == 1.0
