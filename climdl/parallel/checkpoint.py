"""Sharded (distributed) checkpoints to one ordinary checkpoint file.

Under ``fsdp`` and ``tensor`` (Lightning's ``ModelParallelStrategy`` with
``save_distributed_checkpoint: true``) every rank writes its own shard of weights and optimizer
state with ``torch.distributed.checkpoint``: ``last.ckpt`` is a folder of ``__<rank>_0.distcp``
files plus ``meta.pt`` (epoch, loops, hyper-parameters and climdl's data spec). Such a folder
resumes training on any number of ranks (``--ckpt_path last``), but inference
(``climdl downscale``, :func:`climdl.tasks.checkpoint.load_emulator`) reads one file.
:func:`consolidate` writes that file: the full weights, and the optimizer state in the layout of
a single-process run (parameters numbered in ``named_parameters`` order), so it also resumes
training under ``single``, ``ddp`` or ``pipeline``.

:class:`RestartCheckpoint` is the step-wise checkpoint of ``configs/strategy/restartable.yaml``
that torchrun restarts and SLURM requeues resume from.

Reading a sharded folder runs no code from it (README, Safety). ``torch.distributed.checkpoint``
unpickles ``.metadata`` with plain :mod:`pickle` and loads non-tensor shard items with
``torch.load(weights_only=False)``; torch's weights-only unpickler cannot read ``.metadata``
(pickle protocol 4). So :class:`SafeFileSystemReader` reads ``.metadata`` with
:class:`_MetadataUnpickler` (only the checkpoint-metadata classes, torch sizes, dtypes and
layouts), keeps shard file names inside the folder, and :class:`_SafeLoadPlanner` loads the
non-tensor items with ``weights_only=True``; ``meta.pt`` is read with ``weights_only=True``.
:func:`check_sharded` runs those checks before Lightning itself resumes from a folder, and
:func:`guard_checkpoint_loads` puts the checks in front of every load of a training run.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata, StorageMeta

from climdl.errors import ConfigError, DataError, OutputError
from climdl.parallel.checkpoint_files import META, is_sharded, quiet_unpickler, unpickling_refusal

if TYPE_CHECKING:
    from lightning.pytorch.strategies import Strategy
    from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, ReadItem
    from torch.futures import Future

_METADATA = ".metadata"

_METADATA_GLOBALS = frozenset(
    [
        *(
            ("torch.distributed.checkpoint.metadata", name)
            for name in (
                "Metadata",
                "TensorStorageMetadata",
                "BytesStorageMetadata",
                "ChunkStorageMetadata",
                "TensorProperties",
                "MetadataIndex",
                "StorageMeta",
                "_MEM_FORMAT_ENCODING",
            )
        ),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("collections", "OrderedDict"),
        ("pathlib", "Path"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "PureWindowsPath"),
    ]
)
"""What a ``.metadata`` written by ``torch.distributed.checkpoint`` holds besides builtins
(inspected on climdl's fsdp preset; dtypes are allowed by type). Each is a data class or a
lookup: calling one with any arguments runs no code of the file's choosing."""


_DTYPES = frozenset(n for n, v in vars(torch).items() if isinstance(v, torch.dtype))
"""torch's dtype names, listed once: a lookup by name (``getattr(torch, name)``) would import
the submodule or call the function a crafted file names before refusing it."""


class _Refused(pickle.UnpicklingError):
    """A global outside :data:`_METADATA_GLOBALS` (its name is the message)."""


class _MetadataUnpickler(pickle.Unpickler):
    """:mod:`pickle` restricted to :data:`_METADATA_GLOBALS` and torch dtypes."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_GLOBALS or (module == "torch" and name in _DTYPES):
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


def read_metadata(folder: str | Path, file: str = _METADATA) -> Metadata:
    """The ``.metadata`` of a sharded checkpoint, unpickled with the restricted unpickler;
    a :class:`~climdl.errors.DataError` for anything but checkpoint metadata whose shard files
    lie in the folder."""
    folder = Path(folder)
    try:
        with open(folder / file, "rb") as f:
            md = _MetadataUnpickler(f).load()
    except _Refused as exc:
        raise DataError(
            f"{folder} refused: its {file} holds objects other than checkpoint metadata "
            f"({exc}); use only sharded checkpoints written by climdl train."
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot read {folder / file}: {exc.strerror or exc}.") from exc
    except Exception as exc:  # any malformed pickle: truncated, wrong types, bad opcodes
        raise DataError(
            f"{folder} is not a readable sharded checkpoint: its {file} is truncated or "
            f"corrupt ({type(exc).__name__})."
        ) from exc
    if not isinstance(md, Metadata) or not isinstance(md.state_dict_metadata, dict):
        raise DataError(
            f"{folder} refused: its {file} holds {type(md).__name__}, not checkpoint metadata."
        )
    if not isinstance(md.storage_data or {}, dict):
        raise DataError(
            f"{folder} refused: its {file} holds no shard index, not checkpoint metadata."
        )
    for info in (md.storage_data or {}).values():
        name = getattr(info, "relative_path", None)
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            raise DataError(
                f"{folder} refused: its {file} names a shard file outside the folder ({name!r})."
            )
    return md


class SafeFileSystemReader(FileSystemReader):
    """torch's ``FileSystemReader`` with ``.metadata`` read by :func:`read_metadata`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """The folder's ``.metadata`` (or a rank's), read without unpickling arbitrary objects."""
        rank = kwargs.get("rank")
        md = read_metadata(Path(self.path), _METADATA if rank is None else f"__{rank}{_METADATA}")
        if getattr(md, "storage_meta", None) is None:
            md.storage_meta = StorageMeta()
        assert md.storage_meta is not None
        md.storage_meta.load_id = self.load_id
        return md

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Read the planned items; only with the safe planner, which never unpickles objects."""
        if not isinstance(planner, _SafeLoadPlanner):  # its load_bytes would unpickle anything
            raise TypeError("SafeFileSystemReader needs a _SafeLoadPlanner")
        return super().read_data(plan, planner)


class _SafeLoadPlanner(_EmptyStateDictLoadPlanner):
    """Rebuilds the whole state dictionary (or only ``keys``); non-tensor items are read with
    ``torch.load(weights_only=True)`` (torch's planner uses ``weights_only=False``)."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise DataError(
                f"refused: the shard item {fqn} holds objects other than tensors and plain "
                "values; use only sharded checkpoints written by climdl train."
            ) from exc
        except Exception as exc:  # damaged bytes: the unpickler fails in any way
            raise DataError(f"has a truncated or corrupt shard item {fqn}.") from exc
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._nested_dict import set_element

            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


def _read_state(folder: Path, keys: set[str] | None = None) -> dict[str, Any]:
    """The state dictionary of a sharded folder (``keys`` only, if given), read safely."""
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    try:
        _load_state_dict(
            state,
            storage_reader=SafeFileSystemReader(folder),
            planner=_SafeLoadPlanner(keys=keys),
            no_dist=True,
        )
    except CheckpointException as exc:  # torch wraps every failure (a BaseException)
        errors = [failure[0] for failure in exc.failures.values()]
        for err in errors:
            if isinstance(err, DataError):
                raise DataError(f"{folder} {err}") from None
        first = str(errors[0]).splitlines()[0] if errors else "unknown failure"
        raise DataError(
            f"{folder} is not a readable sharded checkpoint (truncated, corrupt, or written "
            f"by other software): {first}"
        ) from None
    return state


def _read_meta(folder: Path) -> dict[str, Any]:
    """``meta.pt`` (epoch, loops, hyper-parameters, data spec), read with ``weights_only``."""
    try:
        meta = torch.load(folder / META, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{folder} refused: its {META} holds objects other than tensors and plain values; "
            "use only sharded checkpoints written by climdl train."
        ) from exc
    except Exception as exc:  # damaged bytes: torch's unpickler fails in any way
        raise DataError(
            f"{folder} is not a readable sharded checkpoint: its {META} is truncated or corrupt."
        ) from exc
    if not isinstance(meta, dict):
        raise DataError(f"{folder} refused: its {META} holds {type(meta).__name__}, not a dict.")
    return meta


def check_sharded(path: str | Path) -> None:
    """Refuse (:class:`~climdl.errors.DataError`) a sharded folder that Lightning's own loader
    would run code from: ``.metadata``, the non-tensor shard items and ``meta.pt`` are read as
    :func:`load_sharded` reads them (tensors are not read)."""
    folder = Path(path)
    md = read_metadata(folder)
    keys = {k for k, v in md.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata)}
    if keys:
        _read_state(folder, keys)
    _read_meta(folder)


def _indexed_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    """A name-keyed optimizer state (``get_optimizer_state_dict``) in ``optimizer.state_dict()``
    layout: parameters numbered in the order of the param groups."""
    groups, out_state, index = [], {}, 0
    for group in state["param_groups"]:
        ids = []
        for name in group["params"]:
            if name in state["state"]:
                out_state[index] = state["state"][name]
            ids.append(index)
            index += 1
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
    return {"state": out_state, "param_groups": groups}


def check_checkpoint_path(path: str | Path) -> None:
    """Refuse (:class:`~climdl.errors.DataError`) what a checkpoint path must not be: missing,
    a folder that is not a sharded checkpoint, a sharded folder that :func:`check_sharded`
    refuses, or a file that ``torch.load(weights_only=True)`` does not read."""
    p = Path(path)
    if p.is_dir():
        if not is_sharded(p):
            raise DataError(
                f"{p} is a folder, not a checkpoint; give a .ckpt file or a sharded "
                "checkpoint folder (meta.pt and *.distcp files)."
            )
        check_sharded(p)
        return
    if not p.is_file():
        raise DataError(f"checkpoint {p} does not exist.")
    try:  # memory-mapped where torch can (zip format): the tensors are not read
        with quiet_unpickler():
            torch.load(p, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(p))
    except Exception as exc:  # damaged bytes make torch's unpickler fail in any way
        raise DataError(unpickling_refusal(p, exc)) from exc


def newest_last_checkpoint(folders: Iterable[str | Path]) -> Path | None:
    """The newest ``last*.ckpt`` or ``hpc_ckpt_*.ckpt`` (a file, or a sharded checkpoint's
    folder) in any of ``folders`` (not below them), or None.

    What ``--ckpt_path last`` means to a user: the run that stopped last. Lightning looks only
    in the checkpoint folder of the logger's *current* version (``csv/version_N/checkpoints``),
    which a new run has just created empty, and then trains from scratch with a warning; the
    caller passes every version's folder instead (:func:`checkpoint_folders`). The checkpoint
    Lightning writes on SLURM's signal before a requeue (``hpc_ckpt_N.ckpt``, in the run's root)
    competes too: Lightning itself takes it only when no ``--ckpt_path`` is given. Every rank
    must see the same files (a shared run folder), as for any resumed run.
    ``consolidated-*`` files are not candidates."""
    found = [
        p
        for folder in {Path(f) for f in folders}
        if folder.is_dir()
        for pattern in ("last*.ckpt", "hpc_ckpt_*.ckpt")  # and SLURM's requeue checkpoints
        for p in folder.glob(pattern)
        if p.is_file() or is_sharded(p)
    ]
    return max(found, key=lambda p: (p.stat().st_mtime, str(p)), default=None)


def checkpoint_folders(trainer: Any) -> list[Path]:
    """Every folder this run's checkpoint callbacks write to in *any* logger version, as
    Lightning's ModelCheckpoint places them: its own ``dirpath`` if set, else
    ``<first logger's save_dir>/<name>/<version>/checkpoints`` (every existing version), else
    ``<default_root_dir>/checkpoints`` (no logger; :class:`RestartCheckpoint` too). The
    logger's version is not asked for: that would pick the new run's."""
    root = Path(trainer.default_root_dir)
    folders = [root, root / "checkpoints"]  # root: Lightning's hpc_ckpt_N.ckpt of a requeue
    folders += [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if cb.dirpath]
    if trainer.loggers:
        first = trainer.loggers[0]
        base = Path(first.save_dir or root) / str(first.name)  # as Lightning joins them
        folders += [v / "checkpoints" for v in sorted(base.glob("*")) if v.is_dir()]
    return folders


def guard_checkpoint_loads(strategy: Strategy) -> None:
    """Put :func:`check_checkpoint_path` in front of every checkpoint the strategy loads
    (``--ckpt_path`` given, ``last`` or ``hpc`` found by Lightning, the best checkpoint
    re-validated) and load with ``weights_only=True`` (Lightning's default is ``False`` for
    remote files, which are refused here)."""
    load = strategy.load_checkpoint

    def guarded(checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(checkpoint_path):
            raise DataError(
                f"{checkpoint_path}: climdl train resumes from local checkpoints only; "
                "download it first."
            )
        check_checkpoint_path(checkpoint_path)
        with safe_distributed_reads():  # a folder swapped after the check runs no code either
            out: dict[str, Any] = load(checkpoint_path, weights_only=True)
        return out

    strategy.load_checkpoint = guarded  # type: ignore[method-assign]


@contextlib.contextmanager
def safe_distributed_reads() -> Iterator[None]:
    """While open, every ``torch.distributed.checkpoint`` load (Lightning's own resume of a
    sharded folder included) reads ``.metadata`` with :func:`read_metadata` and non-tensor items
    with ``weights_only=True``: the checks hold for the bytes actually loaded, not only for those
    :func:`check_sharded` saw before."""
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    saved = (FileSystemReader.read_metadata, DefaultLoadPlanner.load_bytes)
    FileSystemReader.read_metadata = SafeFileSystemReader.read_metadata  # type: ignore[method-assign,assignment]
    DefaultLoadPlanner.load_bytes = _SafeLoadPlanner.load_bytes  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        FileSystemReader.read_metadata, DefaultLoadPlanner.load_bytes = saved  # type: ignore[method-assign]


def load_sharded(path: str | Path) -> dict[str, Any]:
    """A distributed-checkpoint folder as one checkpoint dictionary (in memory, on the CPU),
    read without running code from it (:class:`SafeFileSystemReader`)."""
    folder = Path(path)
    if not is_sharded(folder):
        raise DataError(
            f"{folder} is not a sharded checkpoint folder (meta.pt and *.distcp files)."
        )
    read_metadata(folder)  # its refusal in one sentence (torch would wrap it in two more)
    ckpt = _read_state(folder)
    ckpt.update(_read_meta(folder))
    if "model" in ckpt:  # Fabric's key
        ckpt["state_dict"] = ckpt.pop("model")
    keys = sorted((k for k in ckpt if re.fullmatch(r"optimizer_\d+", k)), key=lambda k: int(k[10:]))
    states = [ckpt.pop(k) for k in keys]
    if states:
        ckpt["optimizer_states"] = [
            _indexed_optimizer(s)
            if s["param_groups"]
            and s["param_groups"][0]["params"]
            and isinstance(s["param_groups"][0]["params"][0], str)
            else s
            for s in states
        ]
    return ckpt


def consolidate(
    path: str | Path,
    out: str | Path | None = None,
    weights_only: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write the sharded checkpoint folder ``path`` as one file (default: beside it, named
    ``consolidated-<name>``, a name that ``--ckpt_path last`` does not pick up). With
    ``weights_only`` the optimizer and loop states are left out (a smaller inference file).
    The file is written under a temporary name and renamed when complete."""
    folder = Path(path)
    target = Path(out) if out is not None else folder.with_name(f"consolidated-{folder.name}")
    if target.exists() and not overwrite:
        raise OutputError(f"{target} exists; pass overwrite (--overwrite) to replace it.")
    ckpt = load_sharded(folder)
    if weights_only:
        for key in ("optimizer_states", "lr_schedulers", "loops", "callbacks"):
            ckpt.pop(key, None)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}.") from exc
    return target


class RestartCheckpoint(ModelCheckpoint):
    """A checkpoint every ``every_n_train_steps`` optimizer steps, kept in
    ``<default_root_dir>/checkpoints/<filename>.ckpt`` whatever the loggers do, so that
    ``--ckpt_path last`` finds it after a restart.

    Lightning's ModelCheckpoint writes into the first logger's versioned folder
    (``csv/version_3/checkpoints``) and ``--ckpt_path last`` looks in the folder of the *current*
    version, which a restarted run has just made empty. This callback uses a fixed folder and a
    ``last``-prefixed name (Lightning's ``--ckpt_path last`` takes the newest ``last*.ckpt`` of
    all checkpoint callbacks), keeps only the newest file and overwrites it in place.

    Args:
        every_n_train_steps: steps between checkpoints: the most work a failure can lose.
        filename: file name without ``.ckpt``; must start with ``last``.
        dirpath: folder (default ``<default_root_dir>/checkpoints``).
    """

    def __init__(
        self,
        every_n_train_steps: int = 200,
        filename: str = "last-step",
        dirpath: str | None = None,
    ) -> None:
        if not filename.startswith(self.CHECKPOINT_NAME_LAST):
            raise ConfigError(
                f"RestartCheckpoint's filename must start with 'last' (got "
                f"{filename!r}) so that --ckpt_path last finds it."
            )
        if every_n_train_steps < 1:
            raise ConfigError(f"every_n_train_steps must be 1 or more, got {every_n_train_steps}.")
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            save_top_k=1,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )

    def _folder(self, trainer: L.Trainer) -> Path:
        return (
            Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "checkpoints"
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fix the folder before Lightning would pick the logger's."""
        self.dirpath = str(self._folder(trainer))
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: L.Trainer) -> set[str]:
        folder = self._folder(trainer)
        if not folder.is_dir():
            return set()
        return {os.path.normpath(p) for p in folder.glob(f"{self.CHECKPOINT_NAME_LAST}*.ckpt")}
