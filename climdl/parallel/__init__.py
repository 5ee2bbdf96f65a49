"""Scaling climdl training out: strategy presets, FSDP2/tensor-parallel wiring, pipeline stages,
domain (spatial) strips, global-batch BatchNorm, launch detection (torchrun, SLURM) and checks of
distributed runs.

One concept per module: :mod:`~climdl.parallel.strategies` (Lightning strategies, FSDP2 and
tensor-parallel plans), :mod:`~climdl.parallel.stages` (cutting the UNet into pipeline stages),
:mod:`~climdl.parallel.pipeline` (the pipeline-parallel Lightning strategy),
:mod:`~climdl.parallel.domain` (domain parallelism: the strategy, splitting the networks, the loss),
:mod:`~climdl.parallel.halo` (halo exchange between row strips and the layers that use it),
:mod:`~climdl.parallel.syncbn` (BatchNorm over the global batch on any device),
:mod:`~climdl.parallel.launch` (ranks from torchrun/SLURM variables),
:mod:`~climdl.parallel.checkpoint` (sharded checkpoints to one file),
:mod:`~climdl.parallel.probe` (recording and fault-injection callbacks),
:mod:`~climdl.parallel.testing` (tiny distributed runs through ``climdl train`` and their
comparison) and :mod:`~climdl.parallel.cli` (``climdl consolidate``, ``climdl launch-info``).
Nothing heavy is imported here; the presets in ``configs/strategy/`` name the classes directly.
"""
