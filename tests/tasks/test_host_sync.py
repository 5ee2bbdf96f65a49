"""The host-device sync counter, the sync-free step logging, and a training step without syncs."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torchmetrics.classification import MulticlassConfusionMatrix

from climdl.clouds.scene import NODATA
from climdl.data.emulator_data import EmulatorDataModule
from climdl.data.spec import EmulatorSpec
from climdl.tasks.downscaling import DownscalingTask
from climdl.tasks.host_sync import SyncsPerStep, count_host_syncs, mark_host
from climdl.tasks.seg_metrics import new_confusion
from climdl.tasks.step_log import LatestValue

TINY: dict[str, Any] = {"base_filters": 4, "max_filters": 8, "extra_filters": 4, "head_features": 4}


def _ops(fn: Any) -> list[str]:
    """The ops counted while ``fn`` runs on a CPU-only machine's rules."""
    with count_host_syncs(simulate=True) as syncs:
        fn()
    return [op for _, op in syncs.events]


DEVICE = torch.arange(6.0)  # made before counting: taken to be on the device
IDX = torch.tensor([1, 1, 1, 1, 1, 1])


@pytest.mark.parametrize(
    ("call", "op"),
    [
        (lambda x: x.sum().item(), "item"),
        (lambda x: x.tolist(), "tolist"),
        (lambda x: bool(x.sum() > 0), "__bool__"),
        (lambda x: float(x[0]), "__float__"),
        (lambda x: int(x[0]), "__int__"),
        (lambda x: [0, 1][x[1].long()], "__index__"),
        (lambda x: x.numpy(), "numpy"),
        (lambda x: np.asarray(x), "__array__"),
        (lambda x: f"{x.sum():.1f}", "__format__"),
        (lambda x: x.nonzero(), "nonzero"),
        (lambda x: torch.masked_select(x, x > 1), "masked_select"),
        (lambda x: torch.unique(x), "unique"),
        (lambda x: x[x > 1], "__getitem__(bool mask)"),
        (lambda x: x.clone().__setitem__(x > 1, 0.0), "__setitem__(bool mask)"),
        (lambda x: torch.where(x > 1), "where(condition)"),
        (lambda x: x.repeat_interleave(IDX), "repeat_interleave(tensor repeats)"),
        (lambda x: x.cpu(), "cpu(device->host)"),
        (lambda x: x.to("cpu"), "to(device->host)"),
        (lambda x: torch.tensor([1.0]).to(x.device), "to(host->device)"),
        (lambda x: torch.tensor([1.0], device=x.device), "tensor(host->device)"),
        (lambda x: mark_host(torch.zeros(())).copy_(x[0]), "copy_(device->host)"),
    ],
)
def test_counts_the_calls_that_wait_for_the_device(call: Any, op: str) -> None:
    assert _ops(lambda: call(DEVICE)) == [op]


def test_ignores_host_tensors_async_copies_and_torch_internals() -> None:
    def host_work() -> None:
        draws = torch.randint(0, 4, (3,), device="cpu")  # host by design
        draws.tolist()
        int((draws + 1)[0])  # computed from host tensors only
        rows = torch.tensor([2, 5])
        rows.tolist()
        buf = mark_host(torch.zeros(2))  # a long-lived host buffer
        buf[0].copy_(DEVICE.sum(), non_blocking=True)
        float(buf[0])
        torch.ones(3).to(DEVICE.device, non_blocking=True)
        DEVICE.repeat_interleave(2)  # static output size
        DEVICE[DEVICE.long()[:2]]  # integer indexing: no sync
        torch.zeros(2, device=DEVICE.device)  # a fill on the device, no copy

    assert _ops(host_work) == []
    # the non-fused Adam reads its (host) step counters with .item(): torch's own call
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    opt = torch.optim.Adam([p], foreach=False)
    assert _ops(opt.step) == []
    # a DataLoader's dataset and collate work on the host by design
    data: Any = [DEVICE] * 2
    loader: Any = torch.utils.data.DataLoader(
        data, batch_size=1, collate_fn=lambda b: b[0].tolist()
    )
    assert _ops(lambda: list(loader)) == []


def test_origin_is_the_first_frame_outside_torch() -> None:
    with count_host_syncs(simulate=True) as syncs:
        DEVICE.sum().item()
        f"{DEVICE.sum():.1f}"  # Tensor.__format__ calls .item() inside torch: counted once
    assert syncs.total == 2
    origin = next(iter(syncs.by_origin))
    assert "test_host_sync.py:" in origin and "test_origin_is_the_first_frame" in origin


def test_latest_value_shows_completed_copies_in_order() -> None:
    latest = LatestValue(slots=2)
    assert latest.value() is None
    latest.push(torch.tensor(1.5))
    assert latest.value() == 1.5  # on a CPU the copy is done at once

    class Event:  # a CUDA event's CPU-visible part
        def __init__(self) -> None:
            self.done = False

        def query(self) -> bool:
            return self.done

    # copies in flight (as on a GPU): the newest *completed* one is shown
    assert latest._buf is not None
    first, second = Event(), Event()
    pending: Any = latest._pending
    latest._buf[:] = torch.tensor([2.0, 3.0])
    latest._free = []
    pending.extend([(0, first), (1, second)])
    latest.push(torch.tensor(9.0))  # no free slot: skipped, never waited for
    assert latest.value() == 1.5 and len(latest._pending) == 2
    second.done = True  # events complete in order: the first one blocks the newer
    assert latest.value() == 1.5
    first.done = True
    assert latest.value() == 3.0 and sorted(latest._free) == [0, 1]


def test_device_confusion_matches_torchmetrics() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (3, 9, 9), generator=g)
    y[torch.rand(3, 9, 9, generator=g) < 0.3] = NODATA
    pred = torch.randint(0, 4, (3, 9, 9), generator=g)
    ours, theirs = new_confusion(4), MulticlassConfusionMatrix(4, ignore_index=NODATA)
    for _ in range(2):
        ours.update(pred, y)
        theirs.update(pred, y)
    assert torch.equal(ours.compute(), theirs.compute())
    assert _ops(lambda: new_confusion(4).update(pred, y)) == []


@pytest.fixture(scope="module")
def sample_data(sample_cache: Path) -> tuple[EmulatorDataModule, EmulatorSpec]:
    """The sample's data module (batches of 8) and the spec fitted on it, made once."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIMDL_CACHE", str(sample_cache))
        dm = EmulatorDataModule(
            catalog="sample-alps", experiment="Emulator_hist_future", batch_size=8
        )
        dm.setup("fit")
        return dm, DownscalingTask().spec_from_data(dm)


def _fit(
    tmp_path: Path, data: tuple[EmulatorDataModule, EmulatorSpec], task: DownscalingTask, bar: Any
) -> tuple[SyncsPerStep, L.Trainer]:
    """Five training steps of ``task`` with the progress bar ``bar`` and a CSV logger."""
    torch.manual_seed(0)
    dm, spec = data
    task.build(spec)
    counter = SyncsPerStep(simulate=True)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=5,
        limit_val_batches=0,
        logger=CSVLogger(tmp_path, name="csv"),
        log_every_n_steps=2,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[counter, bar],
    )
    trainer.fit(task, datamodule=dm)
    assert len(counter.steps) == 5
    return counter, trainer


@pytest.mark.parametrize("bar", [TQDMProgressBar, RichProgressBar])
def test_downscaling_training_steps_do_not_sync(
    tmp_path: Path, sample_data: tuple[EmulatorDataModule, EmulatorSpec], bar: type[L.Callback]
) -> None:
    task = DownscalingTask(**TINY, residual_to_baseline=True)
    counter, trainer = _fit(tmp_path, sample_data, task, bar())
    # the first step makes Lightning's metric states; then nothing waits for the device
    assert [s.total for s in counter.steps[1:]] == [0, 0, 0, 0], [
        s.by_origin for s in counter.steps
    ]
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    steps = [r for r in rows if r.get("train_loss")]
    assert len(steps) == 2 and all(float(r["train_loss"]) > 0 for r in steps)
    last = rows[-1]
    for name in ("train_loss_epoch", "train_loss_tasmax", "train_masked_fraction", "lr"):
        assert last[name] != "", name
    assert float(last["lr"]) == pytest.approx(5e-4)
    shown = task.train_log.loss.value()  # the last step's loss (on a CPU)
    assert shown is not None and shown > 0
    assert trainer.progress_bar_metrics["train_loss"] == pytest.approx(shown)


class _Syncing(DownscalingTask):
    """A task whose step reads its loss on the host, as the old step logging did."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("host_loss", float(loss.detach()))
        return loss


def test_a_training_step_that_syncs_is_caught(
    tmp_path: Path, sample_data: tuple[EmulatorDataModule, EmulatorSpec]
) -> None:
    counter, _ = _fit(tmp_path, sample_data, _Syncing(**TINY), TQDMProgressBar())
    for step in counter.steps[1:]:
        # float(loss) here, and Lightning's device tensor made from that float
        assert {op for _, op in step.events} >= {"__float__", "tensor(host->device)"}
        assert any("test_host_sync.py" in origin for origin, _ in step.events)


def test_the_any_cloud_term_does_not_sync() -> None:
    """The segmentation loss with its any-cloud term: class splits are device buffers, so no
    boolean-mask indexing (data-dependent shape) and no host copy per step."""
    from climdl.clouds.scene import CLASSES
    from climdl.clouds.spec import SegmenterSpec
    from climdl.tasks.segmentation import SegmentationTask

    spec = SegmenterSpec.from_dict(
        {
            "bands": ["blue", "red"],
            "wavelengths": [0.48, 0.66],
            "band_units": ["1", "1"],
            "classes": list(CLASSES),
            "ignore_index": 255,
            "stats": {"mean": torch.full((2,), 0.2), "std": torch.full((2,), 0.2)},
            "class_counts": torch.ones(len(CLASSES)),
        }
    )
    task = SegmentationTask(depth=2, base_filters=4, max_filters=8, any_cloud_weight=0.5)
    task.build(spec)
    scores = torch.randn(2, len(CLASSES), 16, 16, requires_grad=True)
    y = torch.randint(0, len(CLASSES), (2, 16, 16))
    y[0, 0] = NODATA
    task.loss_from_logits(scores, y)  # first call: nothing lazy left to make
    assert _ops(lambda: task.loss_from_logits(scores, y).backward()) == []
    # the term is the binary cross-entropy of P(any cloud), by hand
    logits = torch.randn(1, len(CLASSES), 2, 2)
    labels = torch.tensor([[[0, 1], [2, NODATA]]])
    cloudy = torch.tensor([c in ("cloud", "thin_cloud") for c in CLASSES])
    p = logits.softmax(1)[:, cloudy].sum(1)
    target = cloudy[labels.clamp_max(len(CLASSES) - 1)]
    want = -torch.where(target, p.log(), (1 - p).log())
    want[labels == NODATA] = 0.0
    got = task._any_cloud_nll(logits, labels.where(labels != NODATA, 0), labels != NODATA)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
