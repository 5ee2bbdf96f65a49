"""The speed options of a training run, on where they help and off where they do not.

Each decision is a small function of what a run knows (the parameters' device, the trainer's
precision and strategy) so that it can be tested without the hardware it is meant for:

* fused Adam/AdamW (:func:`use_fused_adam`): one kernel per step for all parameters, and the
  step counter stays on the device (no host synchronisation to read it);
* channels_last (:func:`use_channels_last`): NHWC weights, so that convolutions run without
  layout transposes (on a GPU's tensor cores); on CUDA in bf16/fp16 and on the CPU;
* ``torch.compile`` of the network (:func:`compile_network`), opt-in (``climdl train --compile
  true``), with an eager fallback and one warning line when it cannot compile.

:class:`SpeedCallback` applies the last two when fitting starts (channels_last on a single
device; compile on a single device or under DDP); every
:class:`~climdl.tasks.base.BaseTask` adds it to its trainer. The pinned-memory decision lives in
the data modules (the data layer imports no task), as a one-liner on the trainer's device.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = [
    "SpeedCallback",
    "SpeedOptions",
    "compile_blocker",
    "compile_network",
    "match_state_layout",
    "plain_strategy",
    "to_channels_last",
    "use_channels_last",
    "use_fused_adam",
]


@dataclass(frozen=True)
class SpeedOptions:
    """What a user (or a benchmark) asks for; ``None`` lets climdl decide from the run.

    Attributes:
        fused: fused Adam/AdamW (None: on CUDA and CPU parameters, see :func:`use_fused_adam`).
        channels_last: NHWC network weights (None: on CUDA in bf16/fp16, and on the CPU).
        compile: ``torch.compile`` the network in place (eager fallback when it cannot).
    """

    fused: bool | None = None
    channels_last: bool | None = None
    compile: bool = False


# ---------------------------------------------------------------------- fused optimiser
def use_fused_adam(
    device: torch.device,
    precision: str = "32-true",
    clipping: bool = False,
    asked: bool | None = None,
) -> bool:
    """Whether Adam/AdamW over parameters on ``device`` should be the fused implementation.

    Fused Adam updates every parameter in one kernel and keeps its step counter on the device
    (the for-each default launches several kernels per step and reads a CPU counter). On the
    CPU it is also the fastest (one vectorised pass over each tensor; ~3 ms instead of ~12 ms a
    step for the sample UNet's 2.8 M parameters on this project's 2-core machine). It is off
    for fp16 mixed precision with gradient clipping: the fused step unscales the gradients
    itself, so Lightning cannot clip them first (it refuses such a run).

    Args:
        device: the device of the parameters (the first one's: they share it when Lightning
            calls ``configure_optimizers``).
        precision: the trainer's precision (``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"`` ...).
        clipping: whether gradient clipping is configured.
        asked: the user's choice (:attr:`SpeedOptions.fused`); None decides from the above.

    Returns:
        True to pass ``fused=True``; False to keep PyTorch's default (for-each on CUDA).
    """
    if device.type not in ("cuda", "cpu"):
        return False  # fused kernels exist for CUDA and the CPU (MPS/XLA: keep the default)
    if precision.startswith("16") and clipping:
        return False
    return True if asked is None else asked


def adam_kwargs(
    params: Iterable[Tensor], trainer: Any = None, asked: bool | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``torch.optim.Adam``/``AdamW`` over ``params``: ``{"fused": True}``
    or nothing (``fused=False`` would also turn PyTorch's for-each default off on CUDA).

    Args:
        params: the parameters (the first one's device decides; none: nothing). An iterator
            loses its first element: pass a list, or a fresh ``module.parameters()``.
        trainer: the Lightning trainer, for its precision and gradient clipping (None: fp32).
        asked: the user's choice (:attr:`SpeedOptions.fused`).
    """
    first = next(iter(params), None)
    if first is None:
        return {}
    precision = str(getattr(trainer, "precision", "32-true"))
    clipping = bool(getattr(trainer, "gradient_clip_val", None))
    fused = use_fused_adam(first.device, precision, clipping, asked)
    return {"fused": True} if fused else {}


def match_state_layout(optimizers: Iterable[torch.optim.Optimizer]) -> int:
    """Give each optimiser state tensor its parameter's memory layout; the count changed.

    A checkpoint saved by a run whose weights had another layout (NCHW under DDP or from an
    older climdl, channels_last on one device) restores moments with the old strides: the for-each path would then fall
    back to a slow per-tensor loop and the fused kernel expects one layout per tensor list.
    """
    changed = 0
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                state = opt.state.get(p, {})
                for key, value in list(state.items()):
                    if (
                        isinstance(value, Tensor)
                        and value.shape == p.shape
                        and value.dim() > 1
                        and value.stride() != p.stride()
                    ):
                        state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
                        changed += 1
    return changed


# ---------------------------------------------------------------------- channels_last
def use_channels_last(device: torch.device, precision: str, asked: bool | None = None) -> bool:
    """Whether the network's weights should be channels_last (NHWC) for this run.

    On CUDA in bf16/fp16, cuDNN runs NHWC convolutions on the tensor cores without the
    transposes an NCHW network costs; in fp32 on a GPU the gain is small and layout-dependent:
    off there. On the CPU, oneDNN's convolutions and transposed convolutions run natively in
    NHWC: a training step of the sample UNet took ~0.6x the NCHW time on this project's 2-core
    machine (the full-size UNet ~0.65x): on there, in any precision.

    Args:
        device: the device the network trains on.
        precision: the trainer's precision string.
        asked: the user's choice (:attr:`SpeedOptions.channels_last`); None decides.
    """
    if asked is not None:
        return asked
    if device.type == "cpu":
        return True
    return device.type == "cuda" and precision.startswith(("bf16", "16", "fp16"))


def to_channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 4-D weights channels_last, in place (the same parameter objects,
    so an optimiser built over them keeps working); convolutions then compute in NHWC and
    their outputs follow, with the same values."""
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


# ---------------------------------------------------------------------- torch.compile
def compile_blocker(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot work here (one sentence), or None when it may.

    Inductor needs a C++ compiler to generate CPU kernels and Triton for GPU kernels; Dynamo
    supports a range of Python versions. Failures beyond these show at the first forward
    (see :func:`compile_network`).
    """
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    from torch._dynamo import is_dynamo_supported

    if not is_dynamo_supported():
        return f"torch.compile does not support Python {sys.version_info[0]}.{sys.version_info[1]}"
    if device.type == "cpu":
        candidates = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(c and shutil.which(c) for c in candidates):
            return "no C++ compiler (g++/clang++) for torch.compile's CPU kernels"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "no Triton for torch.compile's GPU kernels"
    return None


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, with its type."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"[:300]


class _EagerOnFailure:
    """The compiled call of a module that falls back to its eager call, for good, when
    compiling fails (always on the first call; afterwards on Dynamo/Inductor errors only, so
    that a genuine error of a later step is not hidden behind a retry)."""

    def __init__(self, module: nn.Module, compiled: Callable[..., Any]) -> None:
        self.module, self.compiled, self.called = module, compiled, False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        first, self.called = not self.called, True
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:
            if not (first or _is_compile_error(exc)):
                raise
            self.module._compiled_call_impl = None  # eager from now on
            log.warning(
                "torch.compile failed at the network's first forward (%s); training eagerly.",
                _first_line(exc),
            )
            return self.module._call_impl(*args, **kwargs)


def _is_compile_error(exc: BaseException) -> bool:
    """Whether an exception comes from Dynamo or Inductor (compiling, not computing)."""
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:  # pragma: no cover - a torch without Dynamo has no compile either
        return False
    return isinstance(exc, TorchDynamoException)


def compile_network(net: nn.Module, device: torch.device) -> bool:
    """Compile ``net`` in place (:meth:`torch.nn.Module.compile`), or say why not; whether it
    was.

    In place, so the parameters keep their names (no ``_orig_mod.`` prefix): checkpoints stay
    plain and load into an eager network. Compiling is lazy: a failure at the first forward
    (an unsupported operator, a broken toolchain) turns the network back to eager with one
    warning line, and training goes on.
    """
    reason = compile_blocker(device)
    if reason is not None:
        log.warning("--compile: %s; training eagerly.", reason)
        return False
    try:
        net.compile()
    except Exception as exc:  # compiling is lazy; a failure here is rare (a bad option)
        log.warning(
            "--compile: torch.compile refused the network (%s); training eagerly.", _first_line(exc)
        )
        return False
    compiled = net._compiled_call_impl
    assert compiled is not None
    net._compiled_call_impl = _EagerOnFailure(net, compiled)
    return True


# ---------------------------------------------------------------------- the callback
def plain_strategy(strategy: Any) -> bool:
    """Whether the strategy is Lightning's single-device or DDP one, where the network stays
    whole on each device; climdl's parallel strategies (FSDP2, tensor, pipeline, domain) split
    it and keep its layout and eager execution as they built them."""
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    return isinstance(strategy, SingleDeviceStrategy | DDPStrategy) and type(
        strategy
    ).__module__.startswith("lightning.")


def channels_last_before_ddp(task: L.LightningModule) -> None:
    """Under Lightning's DDP, give the network NHWC weights before DDP wraps it (called from
    the tasks' ``configure_model``, which runs before the strategy's set-up): DDP then builds
    its gradient buckets with the NHWC strides, and every step's gradients are right.
    Converting after the wrap is what :class:`SpeedCallback` must not do (see there)."""
    from lightning.pytorch.strategies import DDPStrategy

    trainer = task._trainer
    net = getattr(task, "net", None)
    if trainer is None or not isinstance(net, nn.Module):
        return
    strategy = trainer.strategy
    if type(strategy) is not DDPStrategy:  # Lightning's own DDP only; climdl's shard themselves
        return
    options: SpeedOptions = getattr(task, "speed", SpeedOptions())
    if use_channels_last(strategy.root_device, str(trainer.precision), options.channels_last):
        to_channels_last(net)


class SpeedCallback(L.Callback):
    """Applies the task's :class:`SpeedOptions` to its network when fitting starts (the
    network is on its device then): channels_last, then ``torch.compile``; and once the
    checkpoint's optimiser state is restored, gives it the weights' layout.

    channels_last applies here under the single-device strategy only: by then DDP has built
    its gradient buckets with the NCHW strides, and PyTorch's reducer then scatters the first
    step's convolution gradients into the wrong elements (measured: relative error 1.3 on CPU
    with gloo). Under DDP the tasks convert before the wrap (:func:`channels_last_before_ddp`);
    the sharding strategies lay the weights out themselves.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """channels_last (single device) and compile (single device and DDP)."""
        from lightning.pytorch.strategies import SingleDeviceStrategy

        net = getattr(pl_module, "net", None)
        options: SpeedOptions = getattr(pl_module, "speed", SpeedOptions())
        if not isinstance(net, nn.Module):
            return
        device = trainer.strategy.root_device
        single = type(trainer.strategy) is SingleDeviceStrategy
        if single and use_channels_last(device, str(trainer.precision), options.channels_last):
            to_channels_last(net)
        if options.compile and net._compiled_call_impl is None:
            if plain_strategy(trainer.strategy):
                compile_network(net, device)
            else:
                log.warning(
                    "--compile applies under the single-device and ddp strategies, not %s; "
                    "training eagerly.",
                    type(trainer.strategy).__name__,
                )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restored optimiser moments take their parameters' layout."""
        match_state_layout(trainer.optimizers)
