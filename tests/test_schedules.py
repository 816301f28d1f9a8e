"""Learning-rate schedules, and what `--resume RUN --set optim.lr=X` means under each."""

import pytest
import torch

from alexnet.config import apply_overrides, load_recipe
from alexnet.schedules import build_optimizer, build_schedule, change_learning_rate, per_step


def setup(schedule: str, lr: float = 1.0, epochs: int = 6, steps: int = 1, **keys):
    items = [f"schedule.name={schedule}", f"optim.lr={lr}", f"epochs={epochs}"]
    items += [f"schedule.{k}={v}" for k, v in keys.items()]
    recipe = apply_overrides(load_recipe("imagenet-paper"), items)
    opt = build_optimizer(torch.nn.Linear(1, 1), recipe.optim)
    return opt, build_schedule(opt, recipe, steps)


def lr(opt) -> float:
    return opt.param_groups[0]["lr"]


def test_constant_takes_the_new_rate_from_now_on():
    opt, sched = setup("constant")
    opt.step()
    sched.step()
    change_learning_rate(opt, sched, 0.2)
    assert lr(opt) == 0.2
    sched.step()
    sched.step()
    assert lr(opt) == pytest.approx(0.2)


def test_step_keeps_the_milestones_already_passed():
    opt, sched = setup("step", milestones="[2, 4]", factor=0.1)
    for _ in range(3):
        opt.step()
        sched.step()
    assert lr(opt) == pytest.approx(0.1)
    change_learning_rate(opt, sched, 0.5)
    assert lr(opt) == pytest.approx(0.05)  # one milestone passed
    sched.step()
    assert lr(opt) == pytest.approx(0.005)  # the next divides the new rate


def test_plateau_keeps_the_reductions_left():
    opt, sched = setup("plateau", factor=0.1, patience=0, max_reductions=3)
    sched.step(0.5)
    sched.step(0.5)  # no improvement: the first of three reductions
    assert lr(opt) == pytest.approx(0.1)
    change_learning_rate(opt, sched, 0.5)
    seen = [lr(opt)]
    for _ in range(6):
        sched.step(0.5)
        seen.append(lr(opt))
    assert sorted(set(round(x, 9) for x in seen), reverse=True) == [0.5, 0.05, 0.005]


def test_onecycle_is_scaled_to_its_new_peak():
    (opt, sched), (ref, ref_sched) = [setup("onecycle", epochs=1, steps=20) for _ in range(2)]
    for _ in range(3):
        for o, s in ((opt, sched), (ref, ref_sched)):
            o.step()
            s.step()
    change_learning_rate(opt, sched, 0.5)  # the peak was 1.0
    for _ in range(17):
        assert lr(opt) == pytest.approx(lr(ref) / 2)
        for o, s in ((opt, sched), (ref, ref_sched)):
            o.step()
            s.step()


@pytest.mark.parametrize("steps", range(1, 9))
@pytest.mark.parametrize("warmup", [0.0, 0.2, 0.9])
def test_onecycle_runs_any_number_of_steps(steps, warmup):
    opt, sched = setup("onecycle", epochs=1, steps=steps, warmup_fraction=warmup)
    assert per_step(sched)
    for _ in range(steps):
        opt.step()
        sched.step()
    assert 0 < lr(opt) <= 1.0


def test_paper_schedule_divides_by_ten_at_most_three_times():
    recipe = load_recipe("imagenet-paper")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.optim.lr)
    sched = build_schedule(opt, recipe, steps_per_epoch=10)
    lrs = []
    for _ in range(20):  # validation error never improves after the first epoch
        sched.step(0.5)
        lrs.append(lr(opt))
    assert sorted(set(lrs), reverse=True) == pytest.approx([0.01, 0.001, 0.0001, 0.00001])
