"""Learning-rate schedules, and what `--resume RUN --set optim.lr=X` means under each."""

import copy

import pytest
import torch

from alexnet.config import apply_overrides, load_recipe
from alexnet.training.schedules import (
    build_optimizer,
    build_schedule,
    change_learning_rate,
    per_step,
)


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
    opt, sched = setup("plateau", factor=0.1, patience=0, patience_images=0, max_reductions=3)
    sched.step(0.5)
    sched.step(0.5)  # no improvement: the first of three reductions
    assert lr(opt) == pytest.approx(0.1)
    change_learning_rate(opt, sched, 0.5)
    seen = [lr(opt)]
    for _ in range(6):
        sched.step(0.5)
        seen.append(lr(opt))
    assert sorted(set(round(x, 9) for x in seen), reverse=True) == [0.5, 0.05, 0.005]


@pytest.mark.parametrize(("steps", "flat_epochs"), [(10_010, 2), (45, 223)])
def test_plateau_waits_for_as_many_images_as_the_papers_test_saw(steps, flat_epochs):
    """On ImageNet (10,010 steps of 128) the rate is divided after two flat epochs, as
    before; on Caltech-101 (45 steps an epoch) it divided after two flat epochs too, three
    times within six noisy ones. It now waits until one ImageNet epoch of images has passed
    without a better validation error: 223 epochs of 5,760 images."""
    opt, sched = setup("plateau", steps=steps, lr=0.01)
    sched.step(0.5)
    for epoch in range(1, flat_epochs + 1):
        assert lr(opt) == pytest.approx(0.01), epoch
        sched.step(0.5)
    assert lr(opt) == pytest.approx(0.001)


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
    sched = build_schedule(opt, recipe, steps_per_epoch=10_010)  # ImageNet's epoch
    lrs = []
    for _ in range(20):  # validation error never improves after the first epoch
        sched.step(0.5)
        lrs.append(lr(opt))
    assert sorted(set(lrs), reverse=True) == pytest.approx([0.01, 0.001, 0.0001, 0.00001])


# The update rule (optim.rule): the paper's velocity against torch.optim.SGD's momentum.


def paper_reference(w: float, grads, rates, momentum=0.9, decay=5e-4) -> list[float]:
    """Section 5 written out in float64: v <- 0.9 v - 0.0005 eps w - eps grad; w <- w + v."""
    v, out = 0.0, []
    for g, eps in zip(grads, rates, strict=True):
        v = momentum * v - decay * eps * w - eps * g
        w += v
        out.append(w)
    return out


def run_rule(rule: str, grads, rates, w0: float = 1.0, decay: float = 5e-4) -> list[float]:
    items = [f'optim.rule="{rule}"', f"optim.weight_decay={decay}"]
    recipe = apply_overrides(load_recipe("imagenet-paper"), items)
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(w0)
    opt = build_optimizer(model, recipe.optim)
    out = []
    for g, eps in zip(grads, rates, strict=True):
        for group in opt.param_groups:
            group["lr"] = eps
        model.weight.grad = torch.full_like(model.weight, g)
        opt.step()
        out.append(model.weight.item())
    return out


GRADS = [0.3, -1.2, 0.7, 2.0, -0.4, 0.9, 1.1, -0.2, 0.5, 0.8]


def test_the_rules_agree_step_for_step_at_a_constant_rate():
    """Within float32 rounding (relative 1e-6 of the weight), and both follow the paper's
    formula; at a constant rate the buffers are never rescaled, so the two agree bit for bit."""
    rates = [0.05] * len(GRADS)
    paper, torch_rule = run_rule("paper", GRADS, rates), run_rule("torch", GRADS, rates)
    assert paper == torch_rule
    assert paper == pytest.approx(paper_reference(1.0, GRADS, rates), rel=1e-6)


def test_after_a_division_the_rules_differ_as_computed_by_hand():
    """Three steps at 0.1 on a unit gradient, then 0.01: the paper's velocity is -0.271 and its
    next step 0.9 * -0.271 - 0.01 = -0.2539; torch's buffer is 2.71 and its next step
    -0.01 * (0.9 * 2.71 + 1) = -0.03439."""
    grads, rates = [1.0] * 4, [0.1, 0.1, 0.1, 0.01]
    paper, torch_rule = (run_rule(r, grads, rates, w0=0.0, decay=0.0) for r in ("paper", "torch"))
    assert paper[:3] == torch_rule[:3] == pytest.approx([-0.1, -0.29, -0.561])
    assert paper[3] - paper[2] == pytest.approx(-0.2539, rel=1e-5)
    assert torch_rule[3] - torch_rule[2] == pytest.approx(-0.03439, rel=1e-5)


def test_the_paper_rule_follows_its_formula_through_any_schedule():
    rates = [0.1 * 0.7**i for i in range(len(GRADS))]  # a change of rate at every step
    assert run_rule("paper", GRADS, rates) == pytest.approx(
        paper_reference(1.0, GRADS, rates), rel=1e-5
    )


def test_the_paper_rule_resumes_bit_for_bit_across_a_division():
    """Saved after two steps, resumed into a fresh optimiser: a division after the resume
    rescales the buffers exactly as in the run that was never stopped."""
    recipe = load_recipe("imagenet-paper")

    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        return model, build_optimizer(model, recipe.optim)

    def steps(model, opt, rates, first: int = 0):  # step i sees batch 100 + i
        for i, eps in enumerate(rates, start=first):
            for group in opt.param_groups:
                group["lr"] = eps
            torch.manual_seed(100 + i)
            model(torch.randn(8, 4)).square().sum().backward()
            opt.step()
            opt.zero_grad()

    whole, whole_opt = make()
    steps(whole, whole_opt, [0.1, 0.1, 0.01, 0.01])
    first, first_opt = make()
    steps(first, first_opt, [0.1, 0.1])
    saved = copy.deepcopy((first.state_dict(), first_opt.state_dict()))
    again, again_opt = make()
    again.load_state_dict(saved[0])
    again_opt.load_state_dict(saved[1])
    steps(again, again_opt, [0.01, 0.01], first=2)  # the whole run's steps 3 and 4
    for a, b in zip(whole.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_biases_escape_weight_decay_only_when_asked():
    items = ["optim.momentum=0", "optim.weight_decay=0.5", "optim.lr=1"]
    for decay_biases, bias_after in ((True, 0.5), (False, 1.0)):
        recipe = apply_overrides(load_recipe("imagenet-paper"),
                                 [*items, f"optim.decay_biases={str(decay_biases).lower()}"])  # fmt: skip
        model = torch.nn.Linear(1, 1)
        with torch.no_grad():
            model.weight.fill_(1.0)
            model.bias.fill_(1.0)
        opt = build_optimizer(model, recipe.optim)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        assert model.weight.item() == pytest.approx(0.5)  # w - lr * 0.5 * w
        assert model.bias.item() == pytest.approx(bias_after)
