"""Pipeline parallelism for the Doury UNet as a Lightning strategy (``torch.distributed.pipelining``).

Lightning has no pipeline strategy (Lightning issue #17180), so :class:`PipelineStrategy` adds
one, reachable from ``climdl train`` like any other (``configs/strategy/pipeline.yaml``). Each
rank holds one stage of the network (:mod:`climdl.parallel.stages` cuts it, skip connections
included; :mod:`climdl.parallel.pipeline_plan` gives the rank its stage); the parts of the other
stages are removed from the rank's copy of the task, so the optimizer and its state cover the
rank's own parameters only. Every rank reads the same batches;
rank 0 feeds the predictors into the first stage, and the last rank computes the task's own loss
on each micro-batch. The batch is split into ``n_microbatches`` micro-batches that flow through
the stages under the GPipe (all forwards, then all backwards) or 1F1B (one forward, one backward
in the steady state: fewer activations alive) schedule.

Numerics: the gradient is the mean of the micro-batch gradients, and BatchNorm normalises each
micro-batch on its own, so a pipeline step equals a single-process step with gradient
accumulation over the same micro-batches (``accumulate_grad_batches = n_microbatches`` with
``batch_size / n_microbatches``). The tests check loss and gradients against exactly that run.

Checkpoints are assembled from all stages into the layout of a single-process run (weights and
the optimizer state, keyed as the full model's), so they load for inference, resume under any
strategy, and resume a pipeline with another number of stages.

Lightning's loop calls ``zero_grad`` between ``training_step`` and ``backward``; the schedule
runs forward and backward inside ``training_step``, so the strategy sets the fresh gradients
aside there and puts them back in :meth:`PipelineStrategy.backward`.

Limits: pure pipeline parallelism (every rank is one stage; no data parallelism across
pipelines); no gradient clipping (norms would be per stage), no gradient accumulation (the
micro-batches are the accumulation), no ``16-mixed`` loss scaling (use ``bf16-mixed`` or 32).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.fabric.utilities.optimizer import _optimizers_to_device
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torch.optim import Optimizer

from climdl.errors import ConfigError
from climdl.parallel.pipeline_plan import Plan, microbatches, partition

ScheduleName = Literal["gpipe", "1f1b"]


class PipelineStrategy(DDPStrategy):
    """Pipeline-parallel training of the Doury UNet: one stage per rank.

    Args:
        schedule: ``gpipe`` or ``1f1b`` (``torch.distributed.pipelining`` ScheduleGPipe /
            Schedule1F1B).
        n_microbatches: micro-batches per batch (at most the batch size; a smaller last batch
            uses fewer).
        split_before: part names that start stages 1..n-1 (``entry``, ``enc0``..,
            ``dec0``.., ``head``, ``fuse``); None places the cuts to balance forward FLOPs.
        process_group_backend: ``gloo``, ``nccl`` or None (Lightning's choice for the device).
        timeout: collective timeout.
    """

    def __init__(
        self,
        schedule: ScheduleName = "1f1b",
        n_microbatches: int = 4,
        split_before: list[str] | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(process_group_backend=process_group_backend, timeout=timeout)
        if schedule not in ("gpipe", "1f1b"):
            raise ConfigError(f"pipeline schedule must be gpipe or 1f1b, got {schedule!r}.")
        if n_microbatches < 1:
            raise ConfigError(f"n_microbatches must be 1 or more, got {n_microbatches}.")
        self.schedule_name: ScheduleName = schedule
        self.n_microbatches = n_microbatches
        self.split_before = list(split_before) if split_before else None
        self._plan: Plan | None = None
        self._batch: dict[str, Tensor] | None = None
        self._records: list[tuple[Tensor, dict[str, Tensor]]] = []
        self._pending: list[tuple[nn.Parameter, Tensor | None]] = []

    # ------------------------------------------------------------------ set-up
    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        """Every stage reads the same batches (no data parallelism)."""
        return {"num_replicas": 1, "rank": 0}

    @property
    def plan(self) -> Plan:
        """This rank's part of the pipeline (after :meth:`setup`)."""
        if self._plan is None:
            raise RuntimeError("the pipeline is built in PipelineStrategy.setup().")
        return self._plan

    def setup(self, trainer: L.Trainer) -> None:
        """Check the trainer, move the task to the device, cut the network, make optimizers."""
        assert self.accelerator is not None and self.model is not None
        self.accelerator.setup(trainer)
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting:
            self._check_trainer(trainer)
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        if self._plan is None:
            self._plan = partition(
                self.lightning_module,
                self.world_size,
                self.global_rank,
                self.split_before,
                self.precision_plugin,
            )
        if fitting:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if fitting:
            _optimizers_to_device(self.optimizers, self.root_device)

    def _check_trainer(self, trainer: L.Trainer) -> None:
        if trainer.accumulate_grad_batches != 1:
            raise ConfigError(
                "the pipeline strategy accumulates over its micro-batches; set "
                "accumulate_grad_batches to 1 and raise n_microbatches instead."
            )
        if trainer.gradient_clip_val:
            raise ConfigError(
                "gradient clipping is not supported by the pipeline strategy "
                "(each stage sees only its own gradients)."
            )
        if getattr(self.precision_plugin, "scaler", None) is not None:
            raise ConfigError(
                "the pipeline strategy does not support 16-mixed loss scaling; "
                "use precision bf16-mixed or 32-true."
            )

    # ------------------------------------------------------------------ schedules
    def _schedule(self, batch_size: int, train: bool) -> Any:
        """The stage and schedule for this batch size (shapes are fixed per schedule)."""
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        plan = self.plan
        key = (batch_size, train)
        if key not in plan.schedules:
            n_mb = microbatches(batch_size, self.n_microbatches)
            size = batch_size // n_mb
            grad = train and not plan.stage.first

            def examples(sig: list[tuple[tuple[int, ...], torch.dtype]], rg: bool) -> Any:
                return tuple(
                    torch.empty(
                        size,
                        *shape,
                        dtype=dtype,
                        device="meta",
                        requires_grad=rg and dtype.is_floating_point,
                    )
                    for shape, dtype in sig
                )

            stage = PipelineStage(
                plan.stage,
                self.global_rank,
                self.world_size,
                self.root_device,
                input_args=examples(plan.inputs, grad),
                output_args=examples(plan.outputs, train),
            )
            if not train:  # forward only: GPipe without a loss
                plan.schedules[key] = ScheduleGPipe(stage, n_microbatches=n_mb)
            else:  # 1F1B needs at least one micro-batch per stage; GPipe computes the same
                one_f_one_b = self.schedule_name == "1f1b" and n_mb >= self.world_size
                cls = Schedule1F1B if one_f_one_b else ScheduleGPipe
                plan.schedules[key] = cls(
                    stage, n_microbatches=n_mb, loss_fn=self._microbatch_loss, scale_grads=True
                )
        return plan.schedules[key]

    def _microbatch_loss(self, output: Tensor, rows: Tensor) -> Tensor:
        """The task's loss on one micro-batch: ``rows`` index it in the current batch."""
        assert self._batch is not None
        task: Any = self.lightning_module
        n = self._batch["x"].shape[0]
        sub = {
            k: v[rows]
            for k, v in self._batch.items()
            if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == n
        }
        sub["net_out"] = output
        loss, parts = task.compute_loss(sub)
        self._records.append((loss.detach(), {k: v.detach() for k, v in parts.items()}))
        return loss

    def _run(self, batch: dict[str, Tensor], train: bool) -> Tensor | None:
        """One pass of the schedule; the last stage's output (eval) or None."""
        plan = self.plan
        b = int(batch["x"].shape[0])
        schedule = self._schedule(b, train)
        self._batch, self._records = batch, []
        args: tuple[Tensor, ...] = ()
        if plan.stage.first:
            args = (batch["x_n"], batch["aux_n"]) if plan.stage.has_scalars else (batch["x_n"],)
        kwargs: dict[str, Any] = {}
        if plan.stage.last and train:
            kwargs = {"target": torch.arange(b, device=batch["x"].device), "losses": []}
        try:
            if train:
                schedule.step(*args, return_outputs=False, **kwargs)
                self._records = self._records[-microbatches(b, self.n_microbatches) :]
                return None
            out: Tensor | None = schedule.step(*args)
            return out
        finally:
            self._batch = None

    def _from_last(self, t: Tensor) -> Tensor:
        """Broadcast a tensor from the last stage (every rank passes one of the same shape)."""
        if self.world_size > 1:
            dist.broadcast(t, src=self.world_size - 1)
        return t

    # ------------------------------------------------------------------ steps
    def training_step(self, *args: Any, **kwargs: Any) -> Tensor:
        """Forward and backward of all micro-batches through the pipeline; logs the mean loss."""
        task: Any = self.lightning_module
        batch: dict[str, Tensor] = args[0]
        params = [p for p in self.plan.stage.parameters() if p.requires_grad]
        for p in params:
            p.grad = None
        with self.precision_plugin.train_step_context():
            self._run(batch, train=True)
        targets = list(task.y_norm.names)
        values = torch.zeros(1 + len(targets), device=self.root_device)
        if self.plan.stage.last:
            losses = torch.stack([r[0] for r in self._records]).float()
            values[0] = losses.mean()
            for i, t in enumerate(targets):
                values[1 + i] = torch.stack([r[1][t] for r in self._records]).float().mean()
        values = self._from_last(values)
        self._records = []
        loss = values[0]
        task.log_training(loss, {t: values[1 + i] for i, t in enumerate(targets)}, batch)
        # Lightning zeroes gradients after training_step: keep these until backward()
        self._pending = [(p, p.grad) for p in params]
        for p in params:
            p.grad = None
        return loss

    def backward(
        self, closure_loss: Tensor, optimizer: Optimizer | None, *args: Any, **kwargs: Any
    ) -> Tensor:
        """Restore the gradients the schedule computed (the backward already ran)."""
        module = self.lightning_module
        assert module is not None
        closure_loss = self.precision_plugin.pre_backward(closure_loss, module)
        for p, g in self._pending:
            p.grad = g
        self._pending = []
        return self.precision_plugin.post_backward(closure_loss, module)

    def _eval_output(self, batch: dict[str, Tensor]) -> Tensor:
        out = self._run(batch, train=False)
        b = int(batch["x"].shape[0])
        full = torch.empty(b, *self.plan.out_shape, device=self.root_device)
        if out is not None:
            full.copy_(out.float())
        return self._from_last(full)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        """The pipeline's output, broadcast to every rank, through the task's validation step
        (every rank logs the same values; metric sums are equal on all ranks, so the ratios the
        task reports are unaffected by their synchronisation)."""
        batch, rest = args[0], args[1:]
        module = self.lightning_module
        assert module is not None
        with self.precision_plugin.val_step_context():
            out = self._eval_output(batch)
            return module.validation_step({**batch, "net_out": out}, *rest, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`validation_step`, for the test loop."""
        batch, rest = args[0], args[1:]
        module = self.lightning_module
        assert module is not None
        with self.precision_plugin.test_step_context():
            out = self._eval_output(batch)
            return module.test_step({**batch, "net_out": out}, *rest, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported: predict with ``climdl downscale`` from the (full) checkpoint."""
        raise ConfigError(
            "predict under the pipeline strategy is not supported; use climdl "
            "downscale with the checkpoint, which holds the whole network."
        )

    # ------------------------------------------------------------------ checkpoints
    def _gather(self, obj: Any) -> list[Any] | None:
        """Objects of all ranks on rank 0 (None elsewhere)."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.global_rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The whole network's state dict on rank 0, assembled from the stages, in the key order
        of a single-process run (empty elsewhere; only rank 0 writes checkpoints)."""
        module = self.lightning_module
        assert module is not None
        local = {
            k: (v.detach().cpu() if isinstance(v, Tensor) else v)
            for k, v in module.state_dict().items()
        }
        gathered = self._gather(local)
        if gathered is None:
            return {}
        merged: dict[str, Any] = {}
        for part in gathered:
            for k, v in part.items():
                merged.setdefault(k, v)
        missing = [k for k in self.plan.state_keys if k not in merged]
        if missing:
            raise RuntimeError(f"pipeline checkpoint misses {missing[:3]}...")
        return {k: merged[k] for k in self.plan.state_keys}

    def _local_names(self, optimizer: Optimizer) -> list[list[str]]:
        module = self.lightning_module
        assert module is not None
        names = {id(p): n for n, p in module.named_parameters()}
        return [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """The optimizer state of all stages on rank 0, indexed as a single-process optimizer
        over the whole network (parameters in ``named_parameters`` order) would index it."""
        opt = optimizer._optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
        sd = opt.state_dict()
        names = self._local_names(opt)
        flat = [n for group in names for n in group]
        local = {
            "state": {
                flat[i]: {
                    k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in st.items()
                }
                for i, st in sd["state"].items()
            },
            "groups": [
                ({k: v for k, v in g.items() if k != "params"}, names[j])
                for j, g in enumerate(sd["param_groups"])
            ],
        }
        gathered = self._gather(local)
        if gathered is None:
            return {}
        order = {n: i for i, n in enumerate(self.plan.param_names)}
        groups: list[tuple[dict[str, Any], list[str]]] = []
        state_by_name: dict[str, Any] = {}
        for part in gathered:
            state_by_name.update(part["state"])
            for j, (hyper, group_names) in enumerate(part["groups"]):
                if j == len(groups):
                    groups.append((hyper, []))
                groups[j][1].extend(group_names)
        full_groups, full_state, index = [], {}, 0
        for hyper, group_names in groups:
            ids = []
            for n in sorted(set(group_names), key=order.__getitem__):
                if n in state_by_name:
                    full_state[index] = state_by_name[n]
                ids.append(index)
                index += 1
            full_groups.append({**hyper, "params": ids})
        return {"state": full_state, "param_groups": full_groups}

    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        """Load the entries of a whole-network checkpoint that this rank holds."""
        module = self.lightning_module
        assert module is not None
        own = set(module.state_dict().keys())
        module.load_state_dict(
            {k: v for k, v in checkpoint["state_dict"].items() if k in own}, strict=strict
        )

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        """Pick this rank's entries from whole-network optimizer states (see
        :meth:`optimizer_state`; a single-process checkpoint has the same layout)."""
        order = {n: i for i, n in enumerate(self.plan.param_names)}
        for optimizer, full in zip(self.optimizers, checkpoint["optimizer_states"], strict=True):
            opt = optimizer._optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
            names = self._local_names(opt)
            full_ids = [i for g in full["param_groups"] for i in g["params"]]
            if len(full_ids) != len(self.plan.param_names) or len(full["param_groups"]) != len(
                names
            ):
                raise ConfigError(
                    "the checkpoint's optimizer does not match this network's "
                    "parameters; resume with the same model settings."
                )
            local_state, groups, k = {}, [], 0
            for j, group_names in enumerate(names):
                ids = []
                for n in group_names:
                    full_id = full_ids[order[n]]
                    if full_id in full["state"]:
                        local_state[k] = full["state"][full_id]
                    ids.append(k)
                    k += 1
                hyper = {a: v for a, v in full["param_groups"][j].items() if a != "params"}
                groups.append({**hyper, "params": ids})
            opt.load_state_dict({"state": local_state, "param_groups": groups})
        _optimizers_to_device(self.optimizers, self.root_device)
