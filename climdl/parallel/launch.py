"""Where this process sits in a distributed launch: torchrun, SLURM, or a single process.

Lightning reads the same variables to pick its cluster environment (``TorchElasticEnvironment``
for torchrun, ``SLURMEnvironment`` with auto-requeue under ``sbatch``); this module reads them
for climdl's own use: log lines and ``climdl launch-info`` say which rank is which, the fault-
injection callback knows whether this is a restart, and the tests find free ports.
"""

from __future__ import annotations

import atexit
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

Launcher = Literal["torchrun", "slurm", "single"]


@dataclass(frozen=True)
class LaunchInfo:
    """Ranks and rendezvous of this process as the launcher describes them."""

    launcher: Launcher
    global_rank: int
    local_rank: int
    world_size: int
    node_rank: int
    num_nodes: int
    master_addr: str | None
    master_port: int | None
    restart_count: int
    job_id: str | None

    def as_dict(self) -> dict[str, Any]:
        """Plain types, for JSON."""
        return asdict(self)

    def describe(self) -> str:
        """One line for logs."""
        where = f"{self.master_addr}:{self.master_port}" if self.master_addr else "no rendezvous"
        return (
            f"{self.launcher}: rank {self.global_rank}/{self.world_size} (local "
            f"{self.local_rank}, node {self.node_rank}/{self.num_nodes}), {where}, "
            f"restart {self.restart_count}" + (f", job {self.job_id}" if self.job_id else "")
        )


def _int(env: Mapping[str, str], *names: str, default: int = 0) -> int:
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(str(value).split("(")[0])
            except ValueError:
                continue
    return default


def is_slurm(env: Mapping[str, str] | None = None) -> bool:
    """A SLURM batch task (as Lightning decides: ``SLURM_NTASKS`` set and a job name other than
    an interactive shell's, so ``srun --pty bash`` sessions are not treated as SLURM jobs)."""
    env = os.environ if env is None else env
    return "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def is_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """A worker started by torchrun / torch elastic."""
    env = os.environ if env is None else env
    return all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"))


def detect(env: Mapping[str, str] | None = None) -> LaunchInfo:
    """This process's ranks from torchrun's or SLURM's variables (torchrun first: torchrun
    inside a SLURM allocation sets its own); a single process otherwise."""
    env = os.environ if env is None else env
    port = _int(env, "MASTER_PORT", default=-1)
    master_port = port if port >= 0 else None
    if is_torchrun(env):
        world = _int(env, "WORLD_SIZE", default=1)
        local_world = max(1, _int(env, "LOCAL_WORLD_SIZE", default=world))
        return LaunchInfo(
            "torchrun",
            _int(env, "RANK"),
            _int(env, "LOCAL_RANK"),
            world,
            _int(env, "GROUP_RANK", "NODE_RANK"),
            max(1, world // local_world),
            env.get("MASTER_ADDR"),
            master_port,
            _int(env, "TORCHELASTIC_RESTART_COUNT"),
            env.get("SLURM_JOB_ID"),
        )
    if is_slurm(env):
        return LaunchInfo(
            "slurm",
            _int(env, "SLURM_PROCID"),
            _int(env, "SLURM_LOCALID"),
            _int(env, "SLURM_NTASKS", default=1),
            _int(env, "SLURM_NODEID"),
            _int(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES", default=1),
            env.get("MASTER_ADDR"),
            master_port,
            _int(env, "SLURM_RESTART_COUNT"),
            env.get("SLURM_JOB_ID"),
        )
    return LaunchInfo("single", 0, 0, 1, 0, 1, env.get("MASTER_ADDR"), master_port, 0, None)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now (the OS picks it; bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_closing_at_exit = False


def close_process_groups() -> None:
    """Destroy this process's ``torch.distributed`` process groups, if any.

    Lightning destroys them at exit only for NCCL. A gloo group (every CPU run) left to the
    interpreter's shutdown is torn down while its C++ threads may still be joinable, which aborts
    the process ("terminate called without an active exception", exit code -6 / 134) in a few
    percent of otherwise successful runs: 3 of 40 two-process runs of a bare gloo script here,
    0 of 60 with this call at the end and 0 of 60 with it registered by :mod:`atexit`.
    Destroying a gloo group is local (no collective).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def close_process_groups_at_exit() -> None:
    """Have :func:`close_process_groups` run once when this process exits (idempotent).

    At exit, not at the end of a run: a script under torchrun may train and then downscale, or
    downscale twice, in one process, and re-creating a destroyed gloo group there fails
    ("Gloo connectFullMesh failed"). :mod:`atexit` handlers run before the interpreter's
    teardown, which is where the abort happens.
    """
    global _closing_at_exit
    if not _closing_at_exit:
        atexit.register(close_process_groups)
        _closing_at_exit = True


def join_ranks() -> tuple[int, int]:
    """(rank, world size) of a job that shares its work across ranks (``downscale``'s chunks,
    ``segment``'s rows): from torchrun's ``WORLD_SIZE`` (on SLURM, ``srun torchrun ...``: plain
    ``srun`` tasks do not set it and each would run the whole job); with more than one rank, joins a gloo
    group for barriers (kept for the process's life: a second run in the same process reuses
    it; closed at exit, not left to the interpreter's teardown, which aborts gloo)."""
    text = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    if not text.isdigit():
        from climdl.errors import ConfigError

        raise ConfigError(f"WORLD_SIZE={text!r} is not a number of ranks; run under torchrun.")
    world = int(text)
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
        close_process_groups_at_exit()
    return dist.get_rank(), dist.get_world_size()


def barrier(world: int) -> None:
    """Wait for every rank of :func:`join_ranks`'s group (nothing with one rank)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
