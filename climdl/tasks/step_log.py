"""How climdl's tasks log their training steps without making the host wait for the device.

Lightning turns every value logged with ``on_step=True`` into a Python number on each step
(for the progress bar, and for the logger every ``log_every_n_steps``), and a Python number
logged with ``self.log`` into a device tensor: on a GPU each is a host-device synchronisation
that drains the queue of kernels. With ``sync_dist=True`` each such value is also all-reduced
on every step under DDP. So a training step here logs:

- the running loss for the progress bar and the logger's step curve (``train_loss``) from a
  host copy: :class:`LatestValue` copies the detached loss into pinned host memory with
  ``non_blocking=True`` and shows the latest copy the device has *completed* (one step or so
  late on a GPU, the current one on a CPU); it is logged as a CPU tensor, which Lightning reads
  without a synchronisation, and without ``sync_dist`` (it is this rank's loss);
- everything else as epoch means (``train_loss_epoch``, the per-target losses, the masked
  fraction): device tensors accumulated on the device with ``on_step=False``, reduced across
  ranks once at the epoch's end (``sync_dist=True``);
- the learning rate once per epoch, at its end (:func:`log_lr`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import lightning as L
import torch
from torch import Tensor

from climdl.tasks.host_sync import mark_host

__all__ = ["LatestValue", "TrainingLog", "log_lr"]


class LatestValue:
    """The latest value of a device scalar that has reached the host, read without waiting.

    :meth:`push` queues a non-blocking copy of the value into a slot of a small pinned host
    buffer and, on CUDA, records an event after it; :meth:`value` returns the newest value whose
    copy has completed (slots are reused only once their copy is done, so none is read while
    the device writes it). When all slots wait for the device, a push is skipped: the value
    shown is then a few steps old, never a reason to wait. On a CPU the copy is done at once.
    On other accelerators (MPS, XLA, ...) the copy blocks, as their non-blocking copies to the
    host give no event to wait for.

    Args:
        slots: copies in flight at most.
    """

    def __init__(self, slots: int = 4) -> None:
        self.slots = slots
        self._buf: Tensor | None = None
        self._cuda = False
        self._events: list[torch.cuda.Event] = []
        self._free: list[int] = list(range(slots))
        self._pending: deque[tuple[int, torch.cuda.Event | None]] = deque()
        self._value: float | None = None

    def push(self, value: Tensor) -> None:
        """Queue a copy of ``value`` (a 0-d or one-element tensor) to the host."""
        self._harvest()
        if not self._free:
            return
        v = value.detach().reshape(()).float()
        cuda = v.device.type == "cuda"
        if self._buf is None or self._cuda != cuda:  # first push, or the task moved
            self._buf = mark_host(torch.zeros(self.slots, pin_memory=cuda))
            self._events = [torch.cuda.Event() for _ in range(self.slots)] if cuda else []
            self._cuda, self._free, self._pending = cuda, list(range(self.slots)), deque()
        slot = self._free.pop()
        self._buf[slot].copy_(v, non_blocking=cuda or v.device.type == "cpu")
        event = None
        if cuda:  # re-recorded only once its last copy completed (the slot was free)
            event = self._events[slot]
            event.record()
        self._pending.append((slot, event))

    def value(self) -> float | None:
        """The newest completed value (None before the first one completes)."""
        self._harvest()
        return self._value

    def _harvest(self) -> None:
        """Read the completed copies, in order (a stream completes its events in order)."""
        while self._pending:
            slot, event = self._pending[0]
            if event is not None and not event.query():
                return
            self._pending.popleft()
            assert self._buf is not None
            self._value = float(self._buf[slot])
            self._free.append(slot)


class TrainingLog:
    """What a task logs per training step (see the module docstring); one per task."""

    def __init__(self) -> None:
        self.loss = LatestValue()

    def log(
        self,
        module: L.LightningModule,
        loss: Tensor,
        batch_size: int,
        means: Mapping[str, Tensor] | None = None,
    ) -> None:
        """Log a training step from ``module.training_step`` (or a strategy's).

        Args:
            module: the task.
            loss: the step's loss (0-d device tensor).
            batch_size: the batch's samples, the weights of the epoch means.
            means: more values to log as epoch means (0-d device tensors).
        """
        self.loss.push(loss)
        shown = self.loss.value()
        if shown is not None:  # a host tensor: the bar and the logger read it without a sync
            module.log(
                "train_loss",
                torch.tensor(shown),
                prog_bar=True,
                on_step=True,
                on_epoch=False,
                batch_size=batch_size,
            )
        for name, value in {"train_loss_epoch": loss, **(means or {})}.items():
            module.log(
                name,
                value.detach(),
                on_step=False,
                on_epoch=True,
                batch_size=batch_size,
                sync_dist=True,
            )


def log_lr(module: L.LightningModule) -> None:
    """Log the first optimiser's learning rate, once, from ``on_train_epoch_end``."""
    if module._trainer is None or not module.trainer.optimizers:
        return
    lr = float(module.trainer.optimizers[0].param_groups[0]["lr"])
    module.log("lr", lr, on_step=False, on_epoch=True, sync_dist=True)
