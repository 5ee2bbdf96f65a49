"""What the downscaling and segmentation LightningModules share.

Both build their network in :meth:`BaseTask.setup` from the data module's spec (so a YAML
config never repeats what the data say), store that spec in every checkpoint
(``checkpoint["climdl"]``: ``spec`` as :meth:`to_dict`, the climdl version, and a ``kind`` for
the segmenter) and rebuild themselves from a checkpoint alone (:meth:`BaseTask.from_checkpoint`,
after a ``torch.load(weights_only=True)``). Each task says how it builds itself
(:meth:`BaseTask.build`) and what its loss is (:meth:`BaseTask.compute_loss`). Every task
trains with the speed options of :mod:`climdl.tasks.speed` (:attr:`BaseTask.speed`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import lightning as L
import torch
from torch import Tensor, nn

from climdl.errors import ConfigError
from climdl.tasks.speed import SpeedCallback, SpeedOptions, adam_kwargs


class Spec(Protocol):
    """A typed, versioned spec (:class:`~climdl.data.spec.EmulatorSpec`, ...)."""

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint layout: plain types and tensors, with ``schema_version``."""


SpecT = TypeVar("SpecT", bound=Spec)
TaskT = TypeVar("TaskT", bound="BaseTask[Any]")


def make_optimizer(
    name: str,
    params: Iterable[nn.Parameter],
    lr: float,
    weight_decay: float,
    momentum: float,
    allowed: tuple[str, ...],
    trainer: Any = None,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of ``allowed``: adam, adamw, sgd, rmsprop) over ``params``.

    Adam and AdamW are the fused implementation where it helps (see
    :func:`climdl.tasks.speed.use_fused_adam`: the parameters' device, the ``trainer``'s
    precision and clipping, the user's choice ``fused``). Their state dicts are the same as the
    for-each ones', so checkpoints resume across the two.
    """
    if name not in allowed:
        raise ConfigError(f"unknown optimizer {name!r}; choose {', '.join(allowed)}.")
    if name in ("adam", "adamw"):
        params = list(params)
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, weight_decay=weight_decay, **adam_kwargs(params, trainer, fused))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


class BaseTask(L.LightningModule, Generic[SpecT]):
    """A LightningModule built from a typed spec that travels in its checkpoints.

    Subclasses set :attr:`KIND` (the checkpoint's ``kind``; None for emulators), :attr:`NAME`
    and :attr:`DATA_MODULE` (named in the error when training without one) and implement
    :meth:`read_spec`, :meth:`build` and :meth:`compute_loss`.
    """

    KIND: ClassVar[str | None] = None
    NAME: ClassVar[str] = "this"
    DATA_MODULE: ClassVar[str] = "a data module"

    def __init__(self) -> None:
        super().__init__()
        self.spec: SpecT | None = None
        self.net: nn.Module | None = None
        self.speed = SpeedOptions()
        """The speed options of training (``climdl train --compile true`` sets ``compile``)."""

    @property
    def hp(self) -> Any:
        """The hyper-parameters (attribute access, typed loosely for mypy)."""
        return self.hparams

    def configure_callbacks(self) -> list[L.Callback]:
        """The callback that applies :attr:`speed` (channels_last, compile) when fitting."""
        return [SpeedCallback()]

    def adam_options(self) -> dict[str, Any]:
        """Keyword arguments for an Adam/AdamW built by hand over this task's parameters
        (``{"fused": True}`` where it helps; see :func:`climdl.tasks.speed.use_fused_adam`)."""
        return adam_kwargs(self.parameters(), self._trainer, self.speed.fused)

    # ------------------------------------------------------------------ building
    @classmethod
    def read_spec(cls, layout: Mapping[str, Any]) -> SpecT:
        """The spec from its stored layout (any known schema version)."""
        raise NotImplementedError

    def spec_from_data(self, dm: Any) -> SpecT:
        """The spec to build from when training: the data module's (tasks may complete it)."""
        spec: SpecT = dm.spec()
        return spec

    def build(self, spec: SpecT) -> None:
        """Create the network, normalisers and metrics from a spec."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        """Build from the data module's spec, once (a checkpoint may have built it already)."""
        if self.net is not None:
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "spec"):
            raise ConfigError(
                f"the {self.NAME} task needs {self.DATA_MODULE} (data:) to build its network."
            )
        self.build(self.spec_from_data(dm))

    # ------------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the spec and climdl's version under ``checkpoint["climdl"]``."""
        from climdl import __version__

        assert self.spec is not None, "a task is saved after it was built"
        meta: dict[str, Any] = {"spec": self.spec.to_dict(), "version": __version__}
        if self.KIND is not None:
            meta["kind"] = self.KIND
        checkpoint["climdl"] = meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Build the network from the stored spec before Lightning loads the weights."""
        if self.net is None and "climdl" in checkpoint:
            self.build(self.read_spec(checkpoint["climdl"]["spec"]))

    @classmethod
    def from_checkpoint(cls: type[TaskT], ckpt: Mapping[str, Any]) -> TaskT:
        """The task (in eval mode) from a checkpoint dictionary read with ``weights_only``:
        its hyper-parameters (those this version knows), spec and weights."""
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if k in accepted}
        task = cls(**hparams)
        task.build(cls.read_spec(ckpt["climdl"]["spec"]))
        task.load_state_dict(ckpt["state_dict"])
        return task.eval()

    # ------------------------------------------------------------------ losses
    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of a batch (after :meth:`on_after_batch_transfer`).

        Args:
            batch: the normalised batch (``x_n`` and the targets; the pipeline-parallel
                strategy may put the network's output in ``net_out``).

        Returns:
            ``(loss, parts)``: the scalar loss and its named parts (e.g. per target), for logging.
        """
        raise NotImplementedError
