"""How a run computes: device, precision, allocator, and the ISA caps that hold them back."""

import platform
import subprocess
import sys

import pytest
import torch

from alexnet import runtime


def test_mps_is_chosen_where_cuda_is_not_and_runs_in_float32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert runtime.pick_device(0) == torch.device("mps")
    assert runtime.pick_precision("auto", torch.device("mps")) is None
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert runtime.pick_device(0) == torch.device("cpu")


@pytest.mark.parametrize(("cap", "fast"), [("AVX2", False), ("AVX512_CORE", False),
                                           ("AVX512_CORE_BF16", None), ("ALL", None)])  # fmt: skip
def test_a_onednn_cap_below_bf16_turns_bfloat16_off(monkeypatch, cap, fast):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    has = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert runtime.cpu_has_fast_bf16() is (has if fast is None else fast)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_freed_memory_is_kept_only_when_asked():
    code = ("from alexnet.runtime import keep_freed_memory as k; "
            "print(k('system'), k('auto'))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_settings_reject_unknown_choices():
    from alexnet.config import apply_overrides, load_recipe

    recipe = load_recipe("fashion-mnist")
    assert (
        apply_overrides(recipe, ['train.grad_compression="bf16"']).train.grad_compression == "bf16"
    )
    with pytest.raises(ValueError, match=r"train\.grad_compression"):
        apply_overrides(recipe, ['train.grad_compression="fp16"'])
    with pytest.raises(ValueError, match=r"train\.allocator"):
        apply_overrides(recipe, ['train.allocator="jemalloc"'])


def test_a_network_prepared_in_bfloat16_can_be_prepared_again_in_float32():
    """Figures (bfloat16 where it pays) and then predict (float32 by default) on one loaded
    network: the second preparation must not keep the first one's weights."""
    from alexnet.inference.prepared import infer, prepare_for_inference
    from alexnet.models import build_model

    model = build_model("alexnet-small", num_classes=10, in_channels=1, input_size=28)
    x = torch.randn(2, 1, 28, 28)
    cpu = torch.device("cpu")
    prepare_for_inference(model, cpu, torch.bfloat16, True)
    assert next(model.parameters()).dtype == torch.bfloat16
    prepare_for_inference(model, cpu, None, True)
    assert next(model.parameters()).dtype == torch.float32
    assert infer(model, x, None).dtype == torch.float32
