"""Count the calls that make the host wait for the device (host-device synchronisations).

On a GPU, the host queues kernels and runs ahead; a call that needs a value or a shape the
device has not produced yet blocks it until the device catches up, and the queue runs dry.
:func:`count_host_syncs` counts such calls in a block of code, on any machine, with a
:class:`torch.overrides.TorchFunctionMode` (``torch.cuda.set_sync_debug_mode`` needs a GPU):

- tensor -> Python conversions: ``item``, ``tolist``, ``bool()``/``float()``/``int()``/
  ``operator.index``, ``numpy``, ``np.asarray`` (``__array__``), ``format``;
- outputs whose shape depends on the data: ``nonzero``, ``argwhere``, ``masked_select``,
  ``unique``, boolean-mask indexing (``t[mask]``, ``t[mask] = v``), one-argument
  ``torch.where``, ``repeat_interleave`` with tensor repeats and no ``output_size``;
- blocking copies: ``.cpu()``, ``.to("cpu")``, ``copy_`` between host and device, and
  host -> device copies without ``non_blocking=True`` (``.to(device)`` of a host tensor,
  ``torch.tensor(data, device=device)``, which includes Lightning's ``self.log`` of a Python
  number). A ``non_blocking=True`` copy is taken as asynchronous: on CUDA it is when the host
  memory is pinned, which the caller must see to.

Which tensors would be on the device? Where CUDA is available, their device says. On a
CPU-only machine every tensor is on the CPU, so the counter follows where tensors come from:
a tensor made while counting by a factory (``torch.tensor``, ``torch.randint``, ...) without
a device, or with the string ``"cpu"``, lives on the host on a GPU too, and so does what is
computed from host tensors only; tensors marked with :func:`mark_host` (long-lived host
buffers) too. Every other tensor (parameters, batches, results) is taken to be on the device,
and a ``torch.device`` object (``x.device``, ``self.device``) to name the device, not the host.

Each call is attributed to its first calling frame outside the ``torch`` package
(``file:line function``). Calls that torch's own Python code makes are ignored: the non-fused
optimisers read their ``step`` counters with ``.item()``, but those counters are host tensors
on a GPU too (unless ``capturable``/``fused``), and that is torch's business, not climdl's.
So are the calls made while a ``DataLoader`` makes a batch (a dataset, a collate function):
data are prepared on the host by design, in worker processes or in the main one.

Limits: only Python-level calls are seen (a sync inside a C++ kernel is not: on a GPU,
``torch.cuda.set_sync_debug_mode`` sees those), and not torch's own (``GradScaler``'s check for
infinite gradients under ``16-mixed`` precision is one; ``bf16-mixed`` has none); on a CPU-only
machine ``x.cpu().numpy()`` counts
twice (``.cpu()`` returns ``x`` itself there, still taken to be on the device) and a tensor made
before counting started is taken to be on the device, unless it was marked with
:func:`mark_host`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["HostSyncs", "SyncsPerStep", "count_host_syncs", "mark_host"]

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_CONVERSIONS = frozenset(
    {
        "item",
        "tolist",
        "numpy",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "__complex__",
        "__array__",
        "__format__",
    }
)
_DATA_SHAPED = frozenset({"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive"})
_FROM_DATA = frozenset({"tensor", "as_tensor", "asarray"})
_MOVES = frozenset({"to", "cuda", "cpu"})

_MARKED: dict[int, weakref.ref[Tensor]] = {}


def _track(store: dict[int, weakref.ref[Tensor]], t: Tensor) -> None:
    key = id(t)
    store[key] = weakref.ref(t, lambda _, key=key: store.pop(key, None))  # type: ignore[misc]


def _in(store: dict[int, weakref.ref[Tensor]], t: Tensor) -> bool:
    ref = store.get(id(t))
    return ref is not None and ref() is t


def mark_host(t: Tensor) -> Tensor:
    """Declare ``t`` a host tensor by design (e.g. a pinned buffer the device copies into), so
    that a CPU-only count does not take reading it for a synchronisation. Returns ``t``."""
    _track(_MARKED, t)
    return t


@dataclass
class HostSyncs:
    """The host-device synchronisations counted in a block of code.

    Attributes:
        events: ``(origin, op)`` per call, in order; ``origin`` is ``file:line function``.
        via: for each origin, its next two calling frames (where a library call came from).
    """

    events: list[tuple[str, str]] = field(default_factory=list)
    via: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """The number of synchronising calls."""
        return len(self.events)

    @property
    def by_origin(self) -> Counter[str]:
        """Calls per origin, ``"origin op"`` keys."""
        return Counter(f"{origin} {op}" for origin, op in self.events)


def _short(path: str) -> str:
    """A path from ``site-packages`` or the working directory (short, stable in reports)."""
    marker = "site-packages" + os.sep
    if marker in path:
        return path.split(marker, 1)[1]
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            return rel
    return path


def _codes(func: Any) -> set[Any]:
    """The code objects of ``func`` and the functions it wraps (a Python-level dispatcher)."""
    out = set()
    while func is not None:
        code = getattr(func, "__code__", None)
        if code is not None:
            out.add(code)
        func = getattr(func, "__wrapped__", None)
    return out


def _caller(func: Any, frame: FrameType | None) -> FrameType | None:
    """The frame that called ``func``, or None where torch's own code did.

    Frames in ``torch`` between the mode and the caller are skipped when they are ``func``'s
    own dispatch (``handle_torch_function`` and ``func``'s Python body, e.g.
    ``Tensor.__format__``); any other torch frame there means torch made the call itself.
    """
    torch_frames: list[FrameType] = []
    while frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIR):
        torch_frames.append(frame)
        frame = frame.f_back
    if not torch_frames:
        return frame
    codes = _codes(func)
    last = max(
        (i for i, f in enumerate(torch_frames) if f.f_code in codes),
        default=-1,
    )
    return frame if last == len(torch_frames) - 1 else None


_DATA_DIR = os.path.join(_TORCH_DIR, "utils", "data") + os.sep


def _loading_data(frame: FrameType | None) -> bool:
    """Whether a ``DataLoader`` is making a batch up the stack (host work by design)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(_DATA_DIR):
            return True
        frame = frame.f_back
    return False


def _where(frame: FrameType) -> str:
    return f"{_short(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}"


def _tensors(args: Iterable[Any]) -> Iterator[Tensor]:
    for a in args:
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (b for b in a if isinstance(b, Tensor))


class _Provenance:
    """Which tensors live on the host (see the module docstring); shared by counting windows."""

    def __init__(self, simulate: bool) -> None:
        self.simulate = simulate
        self._host: dict[int, weakref.ref[Tensor]] = {}

    def on_host(self, t: Tensor) -> bool:
        if not self.simulate:
            return t.device.type == "cpu"
        return _in(self._host, t) or _in(_MARKED, t)

    def host_target(self, device: Any) -> bool:
        """Whether a ``device`` argument names the host."""
        if device is None:
            return False
        if isinstance(device, str):
            return device.split(":")[0] == "cpu"
        if isinstance(device, torch.device):
            return not self.simulate and device.type == "cpu"
        return False  # an integer: a CUDA ordinal

    def forget(self, t: Tensor) -> None:
        """``t`` went to the device (on a CPU, ``t.to(device)`` is ``t`` itself)."""
        self._host.pop(id(t), None)

    def note(self, result: Any, host: bool) -> None:
        if not self.simulate or not host:
            return
        for t in _tensors(result if isinstance(result, (list, tuple)) else (result,)):
            _track(self._host, t)


def _device_arg(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """``(given, device)``: the target device of a move (``to``/``cuda``/``cpu``), if any."""
    if name == "cpu":
        return True, "cpu"
    if "device" in kwargs:
        return True, kwargs["device"]
    for a in args[1:]:
        if isinstance(a, (str, torch.device, int)) and not isinstance(a, bool):
            return True, a
        if isinstance(a, Tensor):
            return True, a
    if name == "cuda":
        return True, 0
    return False, None


def _non_blocking(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if "non_blocking" in kwargs:
        return bool(kwargs["non_blocking"])
    return any(isinstance(a, bool) and a for a in args[1:])


def _bool_index(index: Any) -> list[Tensor]:
    items = index if isinstance(index, tuple) else (index,)
    return [i for i in items if isinstance(i, Tensor) and i.dtype == torch.bool]


class _SyncMode(TorchFunctionMode):
    """Records synchronising calls in ``sink`` and tracks host tensors in ``prov``."""

    def __init__(self, sink: HostSyncs, prov: _Provenance) -> None:
        super().__init__()
        self.sink = sink
        self.prov = prov

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs = list(_tensors((*args, *kwargs.values())))
        op = self._sync_op(name, args, kwargs, inputs)
        if op is not None:
            self._record(func, op)
        result = func(*args, **kwargs)
        if self.prov.simulate and isinstance(result, (Tensor, list, tuple)):
            host = self._host_result(name, args, kwargs, inputs)
            if not any(result is t for t in inputs):
                self.prov.note(result, host)
            elif name in _MOVES and not host and isinstance(result, Tensor):
                self.prov.forget(result)  # on a CPU, t.to(device) is t: now on the "device"
        return result

    def _record(self, func: Any, op: str) -> None:
        caller = _caller(func, sys._getframe(2))
        if caller is None or _loading_data(caller):
            return
        origin = _where(caller)
        self.sink.events.append((origin, op))
        if origin not in self.sink.via:
            up, chain = caller.f_back, list[str]()
            while up is not None and len(chain) < 2:
                chain.append(_where(up))
                up = up.f_back
            self.sink.via[origin] = " <- ".join(chain)

    def _host_result(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], inputs: list[Tensor]
    ) -> bool:
        if name in _MOVES:
            given, device = _device_arg(name, args, kwargs)
            if given:
                if isinstance(device, Tensor):
                    return self.prov.on_host(device)
                return self.prov.host_target(device)
        if not inputs:  # a factory
            device = kwargs.get("device")
            return device is None or self.prov.host_target(device)
        return all(self.prov.on_host(t) for t in inputs)

    def _sync_op(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], inputs: list[Tensor]
    ) -> str | None:
        """The name to record if this call synchronises, else None."""
        prov = self.prov
        first = args[0] if args and isinstance(args[0], Tensor) else None
        if first is not None and not prov.on_host(first):
            if name in _CONVERSIONS or name in _DATA_SHAPED:
                return name
            if name == "where" and len(args) == 1 and not kwargs:
                return "where(condition)"
            tensor_repeats = len(args) == 1 or isinstance(args[1], Tensor)
            if name == "repeat_interleave" and "output_size" not in kwargs and tensor_repeats:
                return "repeat_interleave(tensor repeats)"
        if name in ("__getitem__", "__setitem__", "index_put", "index_put_") and len(args) > 1:
            masks = _bool_index(args[1])
            if masks and not all(prov.on_host(t) for t in [*masks, *inputs[:1]]):
                return f"{name}(bool mask)"
        if first is not None and name in _MOVES:
            given, device = _device_arg(name, args, kwargs)
            if not given:
                return None
            to_host = (
                prov.on_host(device) if isinstance(device, Tensor) else prov.host_target(device)
            )
            if to_host and not prov.on_host(first):
                return f"{name}(device->host)"
            if not to_host and prov.on_host(first) and not _non_blocking(args, kwargs):
                return f"{name}(host->device)"
        if name == "copy_" and len(args) > 1 and isinstance(args[1], Tensor) and first is not None:
            dst, src = prov.on_host(first), prov.on_host(args[1])
            if dst != src and not _non_blocking(args[1:], kwargs):
                return "copy_(device->host)" if dst else "copy_(host->device)"
        if name in _FROM_DATA and not inputs and "device" in kwargs:
            device = kwargs["device"]
            if device is not None and not prov.host_target(device):
                return f"{name}(host->device)"
        return None


@contextlib.contextmanager
def count_host_syncs(simulate: bool | None = None) -> Iterator[HostSyncs]:
    """Count the host-device synchronisations of the calls in the ``with`` block.

    Args:
        simulate: follow where tensors come from to tell host from device tensors (see the
            module docstring); default: where CUDA is not available.

    Yields:
        The :class:`HostSyncs`, filled as the block runs.
    """
    sink = HostSyncs()
    prov = _Provenance(not torch.cuda.is_available() if simulate is None else simulate)
    with _SyncMode(sink, prov):
        yield sink


class SyncsPerStep(L.Callback):
    """Counts host-device synchronisations per training step (and per validation batch), for
    benchmarks and tests.

    A training step's window runs from its ``on_train_batch_start`` to the next step's (or to
    the start of validation, or to the end of the epoch): the forward, backward and optimiser
    step, the callbacks and progress bar, the logger's writes every ``log_every_n_steps``, then
    the next batch's fetch and its ``on_after_batch_transfer``. Lightning's batch transfer
    itself (``move_data_to_device``) is not counted: it copies with ``non_blocking=True`` on
    CUDA, but not on the CPU, where it knows copies block anyway. A validation batch's window
    runs from its ``on_validation_batch_start`` to the next one's (or to the end of the
    validation epoch, before the task's epoch-end scores). Sanity checks are not counted.

    Attributes:
        steps: one :class:`HostSyncs` per training step, in order.
        val_steps: one :class:`HostSyncs` per validation batch, in order.
    """

    def __init__(self, simulate: bool | None = None) -> None:
        self.steps: list[HostSyncs] = []
        self.val_steps: list[HostSyncs] = []
        self._prov = _Provenance(not torch.cuda.is_available() if simulate is None else simulate)
        self._mode: _SyncMode | None = None

    def _open(self, into: list[HostSyncs]) -> None:
        self._close()
        sink = HostSyncs()
        into.append(sink)
        self._mode = _SyncMode(sink, self._prov)
        self._mode.__enter__()

    def _close(self, *args: Any, **kwargs: Any) -> None:
        if self._mode is None:
            return
        self._mode.__exit__(None, None, None)
        sink, self._mode = self._mode.sink, None
        sink.events[:] = [e for e in sink.events if not _lightning_transfer(*e)]

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        """Close the previous window, open this step's."""
        self._open(self.steps)

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        """Close the previous window, open this validation batch's (not in sanity checks)."""
        if trainer.sanity_checking:
            self._close()
        else:
            self._open(self.val_steps)

    on_validation_start = _close
    on_validation_epoch_end = _close
    on_train_epoch_end = _close
    on_exception = _close
    teardown = _close


_TRANSFER = os.path.join("lightning", "fabric", "utilities", "apply_func.py")


def _lightning_transfer(origin: str, op: str) -> bool:
    """Whether a call is Lightning's batch transfer (a ``.to`` in ``move_data_to_device``)."""
    return origin.startswith(_TRANSFER) and origin.endswith(" batch_to") and op.startswith("to(")
