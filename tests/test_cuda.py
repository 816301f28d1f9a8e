"""The CUDA paths: the Triton LRN kernels on a GPU, a bfloat16 channels_last training step,
pinned-memory batches and the runtime's choices. Skipped without a GPU; bench/gpu.sh runs
them on one. (Apple's MPS device is not tested: no such machine is at hand.)"""

import contextlib

import pytest
import torch

from alexnet.ops.lrn import LocalResponseNorm, pick_implementation

from .conftest import tiny_recipe

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here"),
]


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_triton_lrn_matches_the_reference_on_the_gpu(dtype, channels_last, relu):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(8, 96, 27, 27) * 4).to(dtype).contiguous(memory_format=fmt)
    grad = torch.randn(8, 96, 27, 27).to(dtype).contiguous(memory_format=fmt)
    out = {}
    for impl, device in (("triton", "cuda"), ("torch", "cpu")):
        leaf = x.to(device).requires_grad_()
        y = LocalResponseNorm(5, 1e-4, 0.75, 2.0, "paper", impl, relu)(leaf)
        y.backward(grad.to(device))
        out[impl] = (y.detach().cpu(), leaf.grad.cpu())
    assert pick_implementation(x.cuda()) == "triton"
    tol = 1e-5 if dtype == torch.float32 else 2**-7
    assert rel_err(out["triton"][0], out["torch"][0]) < tol
    assert rel_err(out["triton"][1], out["torch"][1]) < 2 * tol
    assert out["triton"][0].is_contiguous(memory_format=fmt)


def test_a_bf16_channels_last_training_step_learns():
    from alexnet.models import build_model
    from alexnet.runtime import autocast, pick_precision

    device = torch.device("cuda")
    amp = pick_precision("auto", device)
    assert amp == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    torch.manual_seed(0)
    model = build_model("alexnet", num_classes=10).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=True)
    x = torch.randn(16, 3, 227, 227, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,), device=device)
    losses = []
    for _ in range(8):
        with autocast(device, amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@contextlib.contextmanager
def sync_debug(mode: str):
    """PyTorch's check for calls that make the host wait for the GPU, in ``mode`` for the
    block, then as it was."""
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def host_never_waits():
    """Fail on any PyTorch call that makes the host wait for the GPU (a copy from pageable
    memory, ``.item()``, a stream synchronisation): the loader must queue a batch without
    waiting for the step before it to finish. (Waits inside the CUDA runtime, such as an
    event's synchronisation or a first allocation, are not PyTorch's and go unseen.)"""
    return sync_debug("error")


@pytest.fixture(autouse=True)
def _no_sync_check_left_on():
    yield
    torch.cuda.set_sync_debug_mode("default")


def test_batches_arrive_on_the_gpu_through_pinned_memory():
    from alexnet.data.batches import MemoryBatches
    from alexnet.data.imageset import ImageSet
    from alexnet.data.loader import BatchLoader

    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(32) % 4, ["a", "b", "c", "d"])
    plain = MemoryBatches(data, torch.zeros(3), torch.ones(3))
    loader = BatchLoader(data, 8, plain, train=True, device="cuda", channels_last=True)
    with host_never_waits():
        x, y, valid = next(iter(loader))
    assert x.is_cuda and y.is_cuda and valid.is_cuda
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert loader.to_device(torch.zeros(2)).is_cuda


def small_store(tmp_path, classes: int = 4, per_class: int = 16):
    """A store of random 40x48 photographs, stored at 32 pixels, and its batch maker with the
    paper's training augmentation (27-pixel crops, flips, PCA noise, the mean image)."""
    import numpy as np
    from PIL import Image

    from alexnet.data.batches import PCA, StoreBatches
    from alexnet.data.prepare import Plan, prepare
    from alexnet.data.store import open_store

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = tmp_path / "src" / "train" / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            array = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            array[..., c % 3] //= 2  # something to learn: each class dims one channel
            Image.fromarray(array).save(folder / f"{i}.png")
    prepare(tmp_path / "src", tmp_path / "store", plan=Plan(size=32), progress=False)
    store = open_store(tmp_path / "store")
    split, stats = store.split("train"), store.stats()
    maker = StoreBatches(split, 27, stats.mean_image / 255, torch.tensor([0.2, 0.3, 0.25]),
                         True, PCA(stats.eigval, stats.eigvec, 0.1))  # fmt: skip
    return split, maker


def test_store_batches_on_the_gpu_equal_the_cpu_path(tmp_path):
    """The paper's preprocessing of a store batch, finished on the GPU (one gather of the mean
    image's crops) and on the CPU (image by image), from the same uint8 crops and draws."""
    from alexnet.data.loader import BatchLoader

    split, maker = small_store(tmp_path, classes=2, per_class=8)
    g = torch.Generator().manual_seed(0)
    raw = maker.read(torch.arange(16), g)
    on_cpu, _ = maker.finish(raw, torch.device("cpu"), True)
    on_gpu, labels = maker.finish(raw, torch.device("cuda"), True)
    assert on_gpu.is_cuda and labels.is_cuda
    assert on_gpu.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-5)
    # The workers' ring of shared buffers is pinned, copied from asynchronously on a stream
    # of its own, and reused (4 batches an epoch, 6 slots, 3 epochs) without a batch
    # overwritten before its copy; the GPU's batches equal the CPU's, and making them never
    # makes the host wait for the GPU.
    seen = {}
    for device, workers in (("cpu", 0), ("cuda", 0), ("cuda", 2)):
        loader = BatchLoader(split, 4, maker, train=True, device=device, workers=workers)
        seen[device, workers] = []
        for epoch in range(3):
            loader.set_epoch(epoch)
            with host_never_waits():
                seen[device, workers] += [(x.clone(), valid) for x, _, valid in loader]
        assert workers == 0 or (loader._slots.pinned and loader._slots.next > 6)
    for device, workers in (("cuda", 0), ("cuda", 2)):
        for (a, valid), (b, _) in zip(seen[device, workers], seen["cpu", 0], strict=True):
            assert a.is_cuda and valid.is_cuda and torch.allclose(a.cpu(), b, atol=1e-5)


def train_on_batches(split, maker, device: str, finish_aside: bool, steps: int = 200):
    """``steps`` training steps of a small network through the package's own step, on the
    loader's batches finished on its side stream or on the compute stream: the batches (on
    the host) and each step's loss."""
    from alexnet.config import TrainSettings
    from alexnet.runtime import start_runtime

    before = torch.are_deterministic_algorithms_enabled()
    try:
        rt = start_runtime(TrainSettings(deterministic=True))  # the same sums in both runs
        assert rt.device.type == device
        return _steps(split, maker, rt, finish_aside, steps)
    finally:
        torch.use_deterministic_algorithms(before)


def _steps(split, maker, rt, finish_aside: bool, steps: int):
    from alexnet.data.loader import BatchLoader
    from alexnet.training.train import forward_loss, update

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 4),
    ).to(rt.device, memory_format=torch.channels_last)  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loader = BatchLoader(split, 16, maker, train=True, device=rt.device, channels_last=True)
    loader.finish_aside = finish_aside
    criterion = torch.nn.CrossEntropyLoss()
    batches, losses, epoch = [], [], 0
    while len(losses) < steps:
        loader.set_epoch(epoch)
        for x, y, _ in loader:
            loss, _ = forward_loss(net, criterion, rt, x, y)
            update(opt, loss)
            batches.append(x.cpu())
            losses.append(loss.item())
            if len(losses) == steps:
                break
        epoch += 1
    return batches, losses


def test_batches_finished_beside_the_step_are_the_same_and_train_the_same(tmp_path):
    """The loader finishes batches on a stream of its own rather than on the compute stream
    between steps: the batches are the same bit for bit, and 200 steps on them learn the
    same (the mean loss of the last 50 within 1%)."""
    split, maker = small_store(tmp_path)
    aside, aside_losses = train_on_batches(split, maker, "cuda", finish_aside=True)
    inline, inline_losses = train_on_batches(split, maker, "cuda", finish_aside=False)
    assert all(torch.equal(a, b) for a, b in zip(aside, inline, strict=True))
    late_aside, late_inline = (sum(v[-50:]) / 50 for v in (aside_losses, inline_losses))
    assert abs(late_aside - late_inline) <= 0.01 * late_inline
    assert late_aside < 0.8 * sum(aside_losses[:10]) / 10  # it learned something


def test_a_training_epoch_waits_for_the_gpu_only_to_read_each_step(tmp_path, tiny_folder,
                                                                     monkeypatch):  # fmt: skip
    """Between reading one step's numbers and the next, the host only queues work: a single
    synchronising call inside the loop would leave the GPU idle while the host launches the
    next step. Reading a step (one step late) and checkpointing are the places allowed to
    wait. (In-memory batches here; the store's ring of buffers is checked in the loader test
    above.)"""
    from alexnet.training import train

    def allowed_to_wait(fn):
        def call(*args, **kwargs):
            with sync_debug("default"):
                return fn(*args, **kwargs)

        return call

    def never_waits(fn):
        def call(*args, **kwargs):
            with host_never_waits():
                return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(train, "train_one_epoch", never_waits(train.train_one_epoch))
    monkeypatch.setattr(train, "read_step", allowed_to_wait(train.read_step))
    monkeypatch.setattr(train.Loop, "save", allowed_to_wait(train.Loop.save))
    final = train.fit(tiny_recipe(tiny_folder, epochs=2), tmp_path / "run", progress=False,
                      report=False)  # fmt: skip
    assert final["epoch"] == 2 and torch.isfinite(torch.tensor(final["train_loss"]))


def test_cudnn_times_its_algorithms_unless_the_run_is_deterministic():
    from alexnet.config import TrainSettings
    from alexnet.runtime import start_runtime

    before = torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()
    try:
        assert start_runtime(TrainSettings()).device.type == "cuda"
        assert torch.backends.cudnn.benchmark
        start_runtime(TrainSettings(deterministic=True))
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = before[0]
        torch.use_deterministic_algorithms(before[1])
