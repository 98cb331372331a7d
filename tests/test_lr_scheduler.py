"""Every scheduler against torch.optim.lr_scheduler 2.14: live (marker ``ref``) and golden.

The cases live in ``lr_cases.py``; ``make_golden.py schedulers`` stores torch's results in
``golden/lr_scheduler.json`` so the schedules stay tested without torch. Numbers must
agree within 1e-12 relative to each group's largest learning rate (they agree to the
last bit on the machine the golden file was made on); errors and warnings must have
torch's class and text.
"""

import copy
import doctest
import json
import math
import warnings

import numpy as np
import pytest

import arrayopt
import arrayopt.lr_scheduler.composite
import arrayopt.lr_scheduler.decay
import arrayopt.lr_scheduler.lambda_lr
import arrayopt.lr_scheduler.plateau
from arrayopt import lr_scheduler
from arrayopt.lr_scheduler import (
    CosineAnnealingLR,
    CyclicLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiplicativeLR,
    ReduceLROnPlateau,
    StepLR,
)

import lr_cases as C
import make_golden

GOLDEN = make_golden.LR_SCHEDULER
RTOL = 1e-12
TRAJECTORY_KEYS = ("lr", "last_lr", "momentum", "num_bad_epochs", "cooldown_counter", "best")


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN) as f:
        return json.load(f)


def assert_same_schedule(ours, ref, what=""):
    """Trajectories agree within RTOL of each column's largest magnitude; same warnings."""
    for key in TRAJECTORY_KEYS:
        if key not in ref:
            continue
        a, b = ours[key], ref[key]
        if b is None:
            assert a is None, f"{what} {key}: torch has none"
            continue
        assert len(a) == len(b), f"{what} {key}: {len(a)} entries, torch {len(b)}"
        a2, b2 = np.array(a, dtype=float).reshape(len(a), -1), np.array(b, dtype=float).reshape(len(b), -1)
        finite = np.isfinite(b2)
        np.testing.assert_array_equal(a2[~finite], b2[~finite], err_msg=f"{what} {key}")
        scale = np.max(np.where(finite, np.abs(b2), 0.0), axis=0, keepdims=True)
        error = np.abs(np.where(finite, a2 - b2, 0.0))
        worst = np.unravel_index(np.argmax(error / np.maximum(scale, 1e-300)), error.shape)
        assert np.all(error <= RTOL * scale), (
            f"{what} {key}: step {worst[0]} group {worst[1]}: {a2[worst]!r} vs torch {b2[worst]!r}"
        )
    if "warnings" in ref:
        assert ours["warnings"] == ref["warnings"], what


# -- schedules step by step --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(C.CASES))
def test_schedule_matches_golden(name, golden):
    assert_same_schedule(C.run_case("arrayopt", name), golden["cases"][name], name)


@pytest.mark.ref
@pytest.mark.parametrize("name", list(C.CASES))
def test_schedule_matches_torch(name, torch):
    assert_same_schedule(C.run_case("arrayopt", name), C.run_case("torch", name), name)


@pytest.mark.parametrize("name", list(C.CASES))
def test_resume_from_state_dicts_continues_exactly(name):
    whole = C.run_case("arrayopt", name)
    resumed = C.run_case("arrayopt", name, resume_after=C.RESUME_AFTER)
    for key in ("lr", "last_lr", "momentum"):
        assert resumed[key] == whole[key], key


@pytest.mark.parametrize("name", list(C.CASES))
def test_array_lrs_are_filled_in_place(name, xp, golden):
    """lr as a 0-d array (torch's tensor lr): same numbers, same array object throughout."""
    ours = C.run_case("arrayopt", name, xp=xp, lr_array=True)
    assert_same_schedule(ours, golden["cases"][name], name)
    assert ours["lr_kept"] == [True, True]


@pytest.mark.ref
@pytest.mark.parametrize("name", list(C.CASES))
def test_array_lrs_match_torch_tensor_lrs(name, torch):
    ours = C.run_case("arrayopt", name, lr_array=True)
    ref = C.run_case("torch", name, lr_array=True)
    assert_same_schedule(ours, ref, name)
    assert ours["lr_kept"] == ref["lr_kept"]


@pytest.mark.parametrize("name", list(C.CASES))
def test_state_dict_has_torchs_contents(name, golden):
    assert C.state_dict_after("arrayopt", name) == golden["state_dicts"][name]


@pytest.mark.ref
@pytest.mark.parametrize("name", list(C.CASES))
def test_state_dict_has_live_torchs_contents(name, torch):
    assert C.state_dict_after("arrayopt", name) == C.state_dict_after("torch", name)


# -- step(epoch) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(C.EPOCH_CASES))
def test_step_with_epoch_matches_golden(name, golden):
    assert_same_schedule(C.run_epoch_case("arrayopt", name), golden["epoch_cases"][name], name)


@pytest.mark.ref
@pytest.mark.parametrize("name", list(C.EPOCH_CASES))
def test_step_with_epoch_matches_torch(name, torch):
    assert_same_schedule(C.run_epoch_case("arrayopt", name), C.run_epoch_case("torch", name), name)


@pytest.mark.parametrize(
    "factory",
    [
        lambda o: StepLR(o, 7, 0.5),
        lambda o: lr_scheduler.MultiStepLR(o, [3, 9, 9, 20], 0.3),
        lambda o: lr_scheduler.ConstantLR(o, 0.25, 8),
        lambda o: LinearLR(o, 0.1, 0.9, 20),
        lambda o: ExponentialLR(o, 0.93),
        lambda o: lr_scheduler.PolynomialLR(o, 40, 2.0),
        lambda o: CosineAnnealingLR(o, 13, 0.001),
    ],
    ids=["StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR", "CosineAnnealingLR"],
)
def test_closed_form_agrees_with_the_recursion(factory):
    """step(e) (closed form, from base_lrs) lands where e plain steps (chainable form) do."""
    stepped, jumped = C.make_optimizer("arrayopt", "sgd"), C.make_optimizer("arrayopt", "sgd")
    a, b = factory(stepped), factory(jumped)
    for epoch in range(1, 30):
        stepped.step()
        jumped.step()
        a.step()
        with pytest.warns(UserWarning, match="The epoch parameter"):
            b.step(epoch)
        np.testing.assert_allclose(a.get_last_lr(), b.get_last_lr(), rtol=1e-13, atol=1e-18)


# -- ReduceLROnPlateau --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(C.PLATEAU_CASES))
def test_plateau_matches_golden(name, golden):
    assert_same_schedule(C.run_plateau_case("arrayopt", name), golden["plateau_cases"][name], name)


@pytest.mark.ref
@pytest.mark.parametrize("name", list(C.PLATEAU_CASES))
def test_plateau_matches_torch(name, torch):
    assert_same_schedule(C.run_plateau_case("arrayopt", name), C.run_plateau_case("torch", name), name)


@pytest.mark.parametrize("name", list(C.PLATEAU_CASES))
def test_plateau_resume_continues_exactly(name, xp):
    whole = C.run_plateau_case("arrayopt", name)
    resumed = C.run_plateau_case("arrayopt", name, resume_after=17, xp=xp)
    for key in TRAJECTORY_KEYS:
        assert resumed[key] == whole[key], key


def test_plateau_cases_exercise_what_they_claim(golden):
    """The scenarios really reduce, cool down, hit per-group min_lr and the eps guard."""
    cases = golden["plateau_cases"]
    for name in C.PLATEAU_CASES:
        lrs = cases[name]["lr"]
        assert lrs[-1][0] < lrs[0][0], name  # every scenario reduces at least once
    assert max(cases["min-rel"]["cooldown_counter"]) == 1
    assert max(cases["cooldown-long"]["cooldown_counter"]) == 5
    assert cases["min-rel"]["lr"][-1] == pytest.approx([1e-3, 5e-4], rel=1e-12)  # per-group min_lr
    assert cases["max-abs"]["lr"][-1] == pytest.approx([0.004, 0.004], rel=1e-12)
    # eps=0.02: 0.05 -> 0.025 is applied, 0.025 -> 0.0125 is not (0.0125 < eps)
    assert cases["eps-blocks"]["lr"][-1] == pytest.approx([0.025, 0.025], rel=1e-12)


def test_plateau_leaves_the_optimizer_alone_at_construction():
    opt = C.make_optimizer("arrayopt", "sgd")
    before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    ReduceLROnPlateau(opt)
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == before


def test_plateau_accepts_array_metrics(xp):
    opt = C.make_optimizer("arrayopt", "sgd")
    sched = ReduceLROnPlateau(opt, patience=0)
    sched.step(xp.asarray(1.0))
    sched.step(xp.asarray(2.0))
    assert sched.get_last_lr() == pytest.approx([0.01, 0.005])


def test_plateau_new_group_needs_min_lrs():
    opt = C.make_optimizer("arrayopt", "sgd")
    fixed, default = ReduceLROnPlateau(opt, patience=0, min_lr=[0.0, 0.0]), ReduceLROnPlateau(opt, patience=0)
    opt.add_param_group({"params": [arrayopt.Parameter(np.zeros(1))], "lr": 1.0})
    for sched in (fixed, default):
        sched.step(1.0)
    default.step(2.0)  # the scalar default is spread over the new group
    assert len(default.min_lrs) == 3
    with pytest.raises(RuntimeError, match=r"The number of param groups in the `optimizer` \(3\) differs"):
        fixed.step(2.0)


# -- errors and warnings ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(C.ERROR_CASES))
def test_errors_match_golden(name, golden):
    expected = golden["error_cases"][name]
    assert expected is not None, "torch raised nothing: not an error case"
    assert list(C.run_error_case("arrayopt", name)) == expected


@pytest.mark.ref
@pytest.mark.parametrize("name", list(C.ERROR_CASES))
def test_errors_match_torch(name, torch):
    assert C.run_error_case("arrayopt", name) == C.run_error_case("torch", name)


@pytest.mark.parametrize("name", list(C.WARNING_CASES))
def test_warnings_match_golden(name, golden):
    assert C.run_warning_case("arrayopt", name) == golden["warning_cases"][name]


@pytest.mark.ref
@pytest.mark.parametrize("name", list(C.WARNING_CASES))
def test_warnings_match_torch(name, torch):
    assert C.run_warning_case("arrayopt", name) == C.run_warning_case("torch", name)


def test_failed_construction_leaves_the_groups_untouched():
    """CyclicLR, OneCycleLR and SWALR check everything before writing (torch writes first)."""
    for make in (
        lambda o: CyclicLR(o, 0.5, 1.0, mode="bogus"),
        lambda o: CyclicLR(o, 0.5, 1.0, base_momentum=[0.1]),
        lambda o: lr_scheduler.OneCycleLR(o, 0.5, total_steps=10, base_momentum=[0.1]),
        lambda o: arrayopt.swa_utils.SWALR(o, 0.5, anneal_epochs=-1),
    ):
        opt = C.make_optimizer("arrayopt", "sgd")
        before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
        with pytest.raises(ValueError):
            make(opt)
        assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == before


def test_one_hook_per_optimizer_however_many_schedulers():
    opt = C.make_optimizer("arrayopt", "sgd")
    StepLR(opt, 2)
    LinearLR(opt)
    ExponentialLR(opt, 0.5)
    assert len(opt._optimizer_step_pre_hooks) == 1
    assert not getattr(opt, "_opt_called", False)
    opt.step()
    assert opt._opt_called is True


# -- state_dict details ----------------------------------------------------------------------------


def test_lambda_state_dict_keeps_callable_objects_only():
    opt = C.make_optimizer("arrayopt", "sgd")
    warmup = C.Warmup(4)
    sched = LambdaLR(opt, [warmup, C._inverse])
    state = sched.state_dict()
    assert state["lr_lambdas"] == [{"epochs": 4}, None]
    assert "optimizer" not in state
    other = C.Warmup(99)
    fresh = LambdaLR(C.make_optimizer("arrayopt", "sgd"), [other, C._inverse])
    fresh.load_state_dict(state)
    assert other.epochs == 4
    assert state["lr_lambdas"] == [{"epochs": 4}, None]  # the caller's dict is not consumed


def test_multiplicative_state_dict_and_validation():
    opt = C.make_optimizer("arrayopt", "sgd")
    sched = MultiplicativeLR(opt, C._wiggle)
    assert sched.state_dict()["lr_lambdas"] == [None, None]


def test_cyclic_state_dict_drops_the_scale_function_reference():
    opt = C.make_optimizer("arrayopt", "sgd")
    sched = CyclicLR(opt, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.9)
    state = sched.state_dict()
    assert "_scale_fn_ref" not in state and state["_scale_fn_custom"] is None
    for _ in range(4):
        opt.step()
        sched.step()
    fresh_opt = C.make_optimizer("arrayopt", "sgd")
    fresh = CyclicLR(fresh_opt, 0.01, 0.1, step_size_up=3)  # triangular until loaded
    fresh.load_state_dict(sched.state_dict())
    assert fresh.mode == "exp_range" and fresh.scale_mode == "iterations"
    opt.step()
    sched.step()
    fresh_opt.step()
    fresh.step()
    assert fresh.get_last_lr() == sched.get_last_lr()


@pytest.mark.ref
def test_a_torch_state_dict_resumes_in_arrayopt(torch):
    """Same keys, same meaning: torch's scheduler checkpoint continues in arrayopt."""
    ref_opt = C.make_optimizer("torch", "sgd")
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=9, eta_min=0.002)
    for _ in range(11):
        ref_opt.step()
        ref.step()
    opt = C.make_optimizer("arrayopt", "sgd")
    sched = CosineAnnealingLR(opt, T_max=9, eta_min=0.002)
    for group, ref_group in zip(opt.param_groups, ref_opt.param_groups, strict=True):
        group["lr"], group["initial_lr"] = ref_group["lr"], ref_group["initial_lr"]
    sched.load_state_dict(ref.state_dict())
    for _ in range(30):
        ref_opt.step()
        ref.step()
        opt.step()
        sched.step()
        assert sched.get_last_lr() == ref.get_last_lr()


# -- construction and API details ----------------------------------------------------------------


def test_construction_records_initial_lr_with_setdefault():
    opt = C.make_optimizer("arrayopt", "sgd")
    LinearLR(opt, start_factor=0.5)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.05]
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.025]
    second = StepLR(opt, 3)  # reuses the first scheduler's initial_lr
    assert second.base_lrs == [0.1, 0.05]


def test_array_lr_copies_never_alias(xp):
    opt = C.make_optimizer("arrayopt", "sgd", lr_array=True, xp=xp)
    lr0 = opt.param_groups[0]["lr"]
    sched = ExponentialLR(opt, 0.5)
    for value in (*sched.base_lrs, opt.param_groups[0]["initial_lr"], *sched.get_last_lr()):
        assert value is not lr0
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] is lr0
    assert float(lr0) == pytest.approx(0.05)
    assert float(sched.base_lrs[0]) == 0.1 and float(opt.param_groups[0]["initial_lr"]) == 0.1
    last = sched.get_last_lr()[0]
    last[...] = 7.0
    assert float(lr0) == pytest.approx(0.05)


def test_a_one_element_lr_array_is_filled(xp):
    opt = C.make_optimizer("arrayopt", "sgd")
    opt.param_groups[0]["lr"] = xp.asarray([0.1], dtype=xp.float64)
    sched = StepLR(opt, 1, gamma=0.5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"].shape == (1,)
    assert float(opt.param_groups[0]["lr"][0]) == 0.05


def test_get_lr_outside_step_warns_and_still_computes():
    opt = C.make_optimizer("arrayopt", "sgd")
    sched = ExponentialLR(opt, 0.5)
    with pytest.warns(UserWarning, match="please use `get_last_lr\\(\\)`"):
        assert sched.get_lr() == [0.05, 0.025]


def test_submodule_imports_like_torch():
    import arrayopt.lr_scheduler as module
    from arrayopt.lr_scheduler import StepLR as Imported

    assert arrayopt.lr_scheduler is module and Imported is StepLR
    assert issubclass(lr_scheduler._LRScheduler, lr_scheduler.LRScheduler)
    assert set(C.namespace("arrayopt").__dict__) >= {"OneCycleLR", "SWALR", "ReduceLROnPlateau"}


@pytest.mark.ref
def test_public_names_match_torch(torch):
    assert set(lr_scheduler.__all__) == set(torch.optim.lr_scheduler.__all__)
    # torch's text, less its pointer to PyTorch's issue tracker (issue 19)
    theirs = torch.optim.lr_scheduler.EPOCH_DEPRECATION_WARNING
    assert lr_scheduler.EPOCH_DEPRECATION_WARNING.startswith(theirs[: theirs.index(", where available.")])


def test_warnings_speak_of_arrayopt_not_of_pytorchs_sites_or_versions():
    """Texts copied from torch once sent the reader to pytorch.org, PyTorch's issues and "PyTorch 1.1.0"."""
    from arrayopt.lr_scheduler import base

    for text in (base.EPOCH_DEPRECATION_WARNING, base.STEP_ORDER_WARNING, base.STEP_OVERRIDDEN_WARNING):
        assert "pytorch.org" not in text and "github.com/pytorch" not in text and "PyTorch" not in text
    p = arrayopt.Parameter(np.zeros(1))
    opt = arrayopt.SGD([p], lr=0.1)
    scheduler = lr_scheduler.StepLR(opt, step_size=1)
    with pytest.warns(
        UserWarning, match=r"^Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"
    ) as seen:
        scheduler.step()
    assert "arrayopt.lr_scheduler module docstring" in str(seen[0].message)
    with pytest.warns(UserWarning, match="duplicate parameters") as seen:
        arrayopt.SGD([p, p], lr=0.1)
    assert "github" not in str(seen[0].message) and "list each parameter once" in str(seen[0].message)


@pytest.mark.ref
def test_signatures_match_torch(torch):
    import inspect

    for name in torch.optim.lr_scheduler.__all__:
        ours, theirs = getattr(lr_scheduler, name), getattr(torch.optim.lr_scheduler, name)
        mine = [(p.name, p.default, p.kind) for p in inspect.signature(ours.__init__).parameters.values()]
        ref = [(p.name, p.default, p.kind) for p in inspect.signature(theirs.__init__).parameters.values()]
        assert mine == ref, name


@pytest.mark.ref
def test_cosine_get_lr_right_after_a_resumed_construction(torch):
    """The one path of CosineAnnealingLR.get_lr that only a direct call reaches: the closed form."""
    values = []
    for lib in ("arrayopt", "torch"):
        opt = C.make_optimizer(lib, "sgd")
        for group in opt.param_groups:
            group["initial_lr"] = 0.3
        sched = C.namespace(lib).CosineAnnealingLR(opt, T_max=9, eta_min=0.01, last_epoch=4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values.append([float(v) for v in sched.get_lr()])
    assert values[0] == values[1]


def test_one_cycle_initial_lr_is_the_annealed_value():
    """torch computes the epoch-0 lr through the annealing formula: not exactly max_lr / div_factor."""
    opt = C.make_optimizer("arrayopt", "sgd")
    lr_scheduler.OneCycleLR(opt, 0.1, total_steps=10)
    lr = opt.param_groups[0]["lr"]
    assert lr == pytest.approx(0.004, rel=1e-14)
    start, end = 0.1 / 25.0, 0.1
    assert lr == end + (start - end) / 2.0 * (math.cos(0.0) + 1)


@pytest.mark.parametrize(
    "module",
    [
        arrayopt.lr_scheduler.decay,
        arrayopt.lr_scheduler.lambda_lr,
        arrayopt.lr_scheduler.composite,
        arrayopt.lr_scheduler.plateau,
    ],
    ids=lambda m: m.__name__,
)
def test_docstring_examples(module):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_every_scheduler_has_a_case():
    names = {name.split("-")[0] for name in C.CASES}
    exported = {
        n for n in lr_scheduler.__all__ if n[0].isupper() and n not in ("LRScheduler", "EPOCH_DEPRECATION_WARNING")
    }
    assert exported - {"ReduceLROnPlateau"} <= names
    assert "SWALR" in names
