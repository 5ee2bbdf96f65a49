"""The speed options of training (climdl.tasks.speed): each decision from what a run knows
(the device objects of a GPU run need no GPU), channels_last leaving the network's outputs
unchanged, the torch.compile fallback, and optimiser state moving between fused and for-each
Adam (a checkpoint resumes across the two)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from climdl.cli import main
from climdl.data.emulator_data import EmulatorDataModule
from climdl.models import DouryUNet
from climdl.parallel.testing import NO_LOGGERS, TINY_MODEL
from climdl.tasks import speed
from climdl.tasks.base import make_optimizer
from climdl.tasks.speed import (
    SpeedOptions,
    adam_kwargs,
    compile_network,
    match_state_layout,
    plain_strategy,
    to_channels_last,
    use_channels_last,
    use_fused_adam,
)
from tests.argv import train_argv
from tests.paths import CONFIGS

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


def _net(seed: int = 0) -> DouryUNet:
    torch.manual_seed(seed)
    return DouryUNet(
        3, 2, in_size=(8, 8), out_size=(32, 32), n_scalars=4, base_filters=4, max_filters=8,
        extra_filters=4, scalar_mlp=(8,),
    )  # fmt: skip


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 4, generator=g)


# ---------------------------------------------------------------------- decisions
def test_fused_adam_decision() -> None:
    """Fused on CUDA (and the CPU) in any precision, except fp16 with clipping (Lightning
    cannot clip gradients that the fused step unscales itself); the user's choice wins."""
    assert use_fused_adam(CUDA) and use_fused_adam(CUDA, "bf16-mixed", clipping=True)
    assert use_fused_adam(CPU)
    assert not use_fused_adam(CUDA, "16-mixed", clipping=True)
    assert use_fused_adam(CUDA, "16-mixed", clipping=False)
    assert not use_fused_adam(CUDA, asked=False)
    assert not use_fused_adam(torch.device("mps"))


def test_adam_kwargs_never_pass_fused_false() -> None:
    """Without fusing nothing is passed: ``fused=False`` would turn for-each off on CUDA."""
    params = [torch.nn.Parameter(torch.zeros(3))]
    fp16_clip = SimpleNamespace(precision="16-mixed", gradient_clip_val=1.0)
    assert adam_kwargs(params) == {"fused": True}
    assert adam_kwargs(params, fp16_clip) == {}
    assert adam_kwargs(params, None, asked=False) == {}
    assert adam_kwargs([]) == {}


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_make_optimizer_fuses_adam_only(name: str) -> None:
    """make_optimizer passes the decision to Adam/AdamW; SGD keeps PyTorch's default."""
    net = _net()
    opt = make_optimizer(name, net.parameters(), 1e-3, 0.0, 0.9, ("adam", "adamw", "sgd"))
    assert opt.defaults.get("fused") is (True if name != "sgd" else None)
    assert len(opt.param_groups[0]["params"]) == len(list(net.parameters()))


def test_channels_last_decision() -> None:
    """On CUDA in bf16/fp16 (tensor cores), not in fp32 there; on the CPU (oneDNN's NHWC
    kernels); the user's choice wins."""
    assert use_channels_last(CUDA, "bf16-mixed") and use_channels_last(CUDA, "16-mixed")
    assert use_channels_last(CUDA, "bf16-true")
    assert not use_channels_last(CUDA, "32-true")
    assert use_channels_last(CPU, "32-true") and use_channels_last(CPU, "bf16-mixed")
    assert not use_channels_last(CPU, "32-true", asked=False)
    assert not use_channels_last(CUDA, "bf16-mixed", asked=False)
    assert use_channels_last(CUDA, "32-true", asked=True)
    assert not use_channels_last(torch.device("mps"), "32-true")


def test_plain_strategy() -> None:
    """Lightning's single-device and DDP strategies; a subclass (climdl's parallel ones) not."""

    class Split(DDPStrategy):
        pass

    assert plain_strategy(SingleDeviceStrategy(CPU)) and plain_strategy(DDPStrategy())
    assert not plain_strategy(Split())


@pytest.mark.parametrize("ddp", [False, True])
def test_channels_last_applies_on_a_single_device_only(ddp: bool) -> None:
    """The callback converts the network on a single device; under DDP (whose reducer was
    built with the NCHW strides and would scatter the first step's gradients) it leaves it."""
    from climdl.tasks.downscaling import DownscalingTask
    from climdl.tasks.speed import SpeedCallback

    task = DownscalingTask()
    task.net = _net()
    strategy = DDPStrategy(parallel_devices=[CPU]) if ddp else SingleDeviceStrategy(CPU)
    trainer = SimpleNamespace(strategy=strategy, precision="32-true")
    SpeedCallback().on_fit_start(trainer, task)  # type: ignore[arg-type]
    conv = next(p for p in task.net.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) is not ddp


@pytest.mark.parametrize("ddp", [False, True])
def test_ddp_gets_channels_last_before_the_wrap(ddp: bool) -> None:
    """Under Lightning's DDP the task converts in configure_model (before DDP builds its
    buckets); on a single device it leaves that to the callback at fit start."""
    from climdl.tasks.downscaling import DownscalingTask

    task = DownscalingTask()
    task.net = _net()
    strategy = DDPStrategy(parallel_devices=[CPU]) if ddp else SingleDeviceStrategy(CPU)
    task._trainer = SimpleNamespace(strategy=strategy, precision="32-true")  # type: ignore[assignment]
    task.configure_model()
    conv = next(p for p in task.net.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) is ddp


def test_pin_memory_only_when_training_on_cuda() -> None:
    """The emulator's loaders pin their batches when the trainer's device is a GPU."""
    dm = EmulatorDataModule(catalog="sample-alps")
    assert not dm._pin_memory()  # no trainer (inference, benchmarks)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=CPU))  # type: ignore[assignment]
    assert not dm._pin_memory()
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=CUDA))  # type: ignore[assignment]
    assert dm._pin_memory()


# ---------------------------------------------------------------------- channels_last
def test_channels_last_leaves_outputs_and_parameters() -> None:
    """On the CPU: the same outputs and gradients (1e-5), the same parameter objects
    (an optimiser built before keeps them), the weights in NHWC."""
    x, s = _inputs()
    ref = _net()
    out_ref = ref(x, s)
    out_ref.square().mean().backward()
    net = _net()
    before = [id(p) for p in net.parameters()]
    to_channels_last(net)
    assert [id(p) for p in net.parameters()] == before
    conv = next(p for p in net.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    out = net(x, s)
    out.square().mean().backward()
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4)


def test_optimizer_state_takes_the_weights_layout() -> None:
    """Moments restored with another layout (a checkpoint from an NCHW run) are given the
    channels_last weights' strides, with their values."""
    net = _net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, s = _inputs()
    net(x, s).mean().backward()
    opt.step()
    saved = opt.state_dict()
    to_channels_last(net)
    opt2 = torch.optim.Adam(net.parameters(), 1e-3)
    opt2.load_state_dict(saved)
    n4 = sum(p.dim() == 4 for p in net.parameters())
    assert match_state_layout([opt2]) == 2 * n4  # exp_avg and exp_avg_sq of each conv
    for p in net.parameters():
        state = opt2.state[p]
        assert state["exp_avg"].stride() == p.stride()
        torch.testing.assert_close(state["exp_avg"], opt.state[p]["exp_avg"])
    assert match_state_layout([opt2]) == 0


# ---------------------------------------------------------------------- fused resume
@pytest.mark.parametrize(("saved_fused", "loaded_fused"), [(False, True), (True, False)])
def test_adam_state_resumes_across_fused_and_foreach(saved_fused: bool, loaded_fused: bool) -> None:
    """A checkpoint's Adam state from one implementation continues in the other: the next
    steps match those of the implementation that saved it."""
    x, s = _inputs()

    def steps(net: torch.nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            net(x, s).square().mean().backward()
            opt.step()

    net = _net()
    opt = torch.optim.Adam(net.parameters(), 1e-2, fused=saved_fused or None)
    steps(net, opt, 2)
    weights, state = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    steps(net, opt, 2)  # the run that was not interrupted
    resumed = _net(seed=5)
    resumed.load_state_dict(weights)
    opt2 = torch.optim.Adam(resumed.parameters(), 1e-2, fused=loaded_fused or None)
    opt2.load_state_dict(state)
    steps(resumed, opt2, 2)
    assert opt2.state_dict()["state"][0]["step"].item() == 4
    for p, q in zip(resumed.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------- torch.compile
def test_compile_keeps_state_dict_keys() -> None:
    """Compiling in place: the same parameter names (no ``_orig_mod.``), plain checkpoints."""
    net = _net()
    keys = list(net.state_dict())
    if not compile_network(net, CPU):
        pytest.skip("torch.compile is unavailable here")
    assert list(net.state_dict()) == keys


def test_compile_blocker_names_a_missing_compiler(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a C++ compiler the CPU network stays eager, with one line saying why."""
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    net = _net()
    with caplog.at_level(logging.WARNING, logger="climdl.tasks.speed"):
        assert not compile_network(net, CPU)
    assert net._compiled_call_impl is None
    assert [r.getMessage() for r in caplog.records] == [
        "--compile: no C++ compiler (g++/clang++) for torch.compile's CPU kernels; training eagerly."
    ]


def _failing_compile(fn: Any, *args: Any, **kwargs: Any) -> Any:
    def compiled(*a: Any, **k: Any) -> Any:
        raise RuntimeError("InductorError: C++ compile error\n  long traceback text")

    return compiled


def test_compile_failure_at_first_forward_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A compile that fails at the first forward: eager outputs from then on, one warning
    line (the error's first line, no traceback), and later errors are not swallowed."""
    monkeypatch.setattr(speed, "compile_blocker", lambda device: None)
    monkeypatch.setattr(torch, "compile", _failing_compile)
    x, s = _inputs()
    net, ref = _net(), _net()
    with caplog.at_level(logging.WARNING, logger="climdl.tasks.speed"):
        assert compile_network(net, CPU)
        for _ in range(3):
            torch.testing.assert_close(net(x, s), ref(x, s))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "torch.compile failed at the network's first forward (RuntimeError: InductorError: C++ "
        "compile error); training eagerly."
    ]
    assert net._compiled_call_impl is None


def test_a_later_error_of_a_compiled_network_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a first forward that compiled, an ordinary error (not Dynamo's) propagates."""
    calls = []

    def flaky(fn: Any, *args: Any, **kwargs: Any) -> Any:
        def compiled(*a: Any, **k: Any) -> Any:
            calls.append(1)
            if len(calls) > 1:
                raise ValueError("a genuine error")
            return fn(*a, **k)

        return compiled

    monkeypatch.setattr(speed, "compile_blocker", lambda device: None)
    monkeypatch.setattr(torch, "compile", flaky)
    net = _net()
    compile_network(net, CPU)
    net(*_inputs())
    with pytest.raises(ValueError, match="a genuine error"):
        net(*_inputs())


def test_train_compile_true_falls_back_and_trains(
    tmp_path: Path,
    use_sample_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``climdl train --compile true`` where compiling fails: one warning line, the run
    trains its steps eagerly and writes its checkpoint and summary."""
    monkeypatch.setattr(speed, "compile_blocker", lambda device: None)
    monkeypatch.setattr(torch, "compile", _failing_compile)
    options = [*NO_LOGGERS, "--quiet", *TINY_MODEL, "--data.batch_size", "8"]
    options += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    options += ["--trainer.limit_val_batches", "1", "--data.test_period", "null"]
    argv = train_argv(CONFIGS / "emulator" / "sample.yaml", tmp_path, *options, "--compile", "true")
    with caplog.at_level(logging.WARNING, logger="climdl.tasks.speed"):
        assert main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if r.name == "climdl.tasks.speed"]
    assert len(warned) == 1 and "training eagerly" in warned[0]
    assert (tmp_path / "summary.json").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_compile_really_compiles_on_the_cpu() -> None:
    """A real ``torch.compile`` of a tiny UNet: eager's outputs and gradients (where a C++
    compiler is installed)."""
    net, ref = _net(), _net()
    if not compile_network(net, CPU):
        pytest.skip("torch.compile is unavailable here")
    x, s = _inputs()
    out, out_ref = net(x, s), ref(x, s)
    out.square().mean().backward()
    out_ref.square().mean().backward()
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-4)
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4)
    assert net._compiled_call_impl is not None  # still compiled: no fallback happened


def test_options_default_to_automatic() -> None:
    """A task trains with climdl's decisions unless told otherwise; compile is opt-in."""
    from climdl.tasks.downscaling import DownscalingTask

    task = DownscalingTask()
    assert task.speed == SpeedOptions(fused=None, channels_last=None, compile=False)
    assert [type(c).__name__ for c in task.configure_callbacks()] == ["SpeedCallback"]
