"""``climdl consolidate`` and ``climdl launch-info``: the command-line side of climdl.parallel.

``climdl consolidate RUN/checkpoints/last.ckpt`` turns a sharded checkpoint folder (fsdp,
tensor) into one file that ``climdl downscale`` reads and any strategy resumes;
``climdl launch-info`` prints how this process sits in a torchrun or SLURM launch (run it under
``srun`` or ``torchrun`` to check a job script before training).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the ``consolidate`` and ``launch-info`` subcommands."""
    c = sub.add_parser(
        "consolidate",
        help="turn a sharded (FSDP2 / tensor-parallel) checkpoint folder into one checkpoint file",
        description="Read a distributed checkpoint folder (last.ckpt/ with *.distcp files and "
        "meta.pt) and write one ordinary checkpoint: for climdl downscale, and to resume under "
        "any strategy.",
    )
    c.add_argument("checkpoint", type=Path, help="sharded checkpoint folder")
    c.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="output file (default: consolidated-<name> beside the folder)",
    )
    c.add_argument(
        "--weights-only",
        action="store_true",
        help="leave out optimizer and loop states (a smaller file for inference)",
    )
    c.add_argument("--overwrite", action="store_true", help="replace an existing output")
    c.add_argument("-q", "--quiet", action="store_true", help="print only the output path")
    c.set_defaults(func=_cmd_consolidate)

    info = sub.add_parser(
        "launch-info",
        help="show this process's rank, node and rendezvous under torchrun or SLURM",
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_cmd_launch_info)


def _cmd_consolidate(args: argparse.Namespace) -> int:
    from climdl.parallel.checkpoint import consolidate

    out = consolidate(args.checkpoint, args.output, args.weights_only, args.overwrite)
    print(out)
    return 0


def _cmd_launch_info(args: argparse.Namespace) -> int:
    from climdl.parallel.launch import detect

    info = detect()
    print(json.dumps(info.as_dict()) if args.json else info.describe())
    return 0
