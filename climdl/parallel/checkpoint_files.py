"""What reading any checkpoint path needs, without ``torch.distributed.checkpoint``.

:func:`climdl.tasks.checkpoint_file.read_checkpoint` (every ``downscale``, ``segment`` and
``evaluate`` run) only has to tell a sharded folder from a file and word a refusal;
:mod:`climdl.parallel.checkpoint` reads and consolidates sharded folders and imports
``torch.distributed.checkpoint`` (~50 ms on first use) to do so. Keeping these few checks here
spares inference that import.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["META", "is_sharded", "quiet_unpickler", "unpickling_refusal"]

#: The non-tensor part of a sharded checkpoint folder (epoch, loops, hyper-parameters, spec).
META = "meta.pt"


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` is a distributed-checkpoint folder (``meta.pt`` and ``*.distcp``)."""
    p = Path(path)
    return p.is_dir() and (p / META).is_file() and any(p.glob("*.distcp"))


def unpickling_refusal(path: str | Path, exc: BaseException) -> str:
    """One sentence for a checkpoint file that ``torch.load(weights_only=True)`` does not read;
    never torch's advice to retry with ``weights_only=False`` (that would run the file's code)."""
    if isinstance(exc, OSError) and exc.strerror:  # permission denied, I/O error, ...
        return f"cannot read the checkpoint {path}: {exc.strerror}."
    found = re.search(r"GLOBAL ([\w.]+)|reduce for unrecognized function (\S+)", str(exc))
    if isinstance(exc, pickle.UnpicklingError) and found:
        return (
            f"{path} refused: it holds objects other than tensors and plain values "
            f"({found.group(1) or found.group(2)}), so it is not a checkpoint written by "
            "climdl train."
        )
    return (
        f"{path} is not a readable climdl checkpoint (truncated, corrupt, or written by other "
        "software); give a .ckpt file written by climdl train."
    )


@contextlib.contextmanager
def quiet_unpickler() -> Iterator[None]:
    """Hide torch's warning about a pickle protocol its weights-only unpickler does not
    expect: a file that is not a torch checkpoint gets climdl's one sentence, nothing more."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        yield
