"""The cloud UNet, the inception block, and the segmentation task's losses, augmentation,
normalisation and checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from climdl.clouds.scene import NODATA
from climdl.clouds.spec import SegmenterSpec
from climdl.errors import ConfigError, DataError
from climdl.models import CloudUNet, InceptionConvBlock, make_block
from climdl.tasks.segmentation import SegmentationTask, augment, load_segmenter


def _spec(n_bands: int = 3, classes: tuple[str, ...] = ("clear", "cloud", "snow")) -> SegmenterSpec:
    return SegmenterSpec.from_dict(
        {
            "bands": [f"b{i}" for i in range(n_bands)],
            "wavelengths": [0.5 + i for i in range(n_bands)],
            "band_units": ["1"] * n_bands,
            "classes": list(classes),
            "ignore_index": NODATA,
            "stats": {"mean": torch.arange(n_bands).float(), "std": torch.full((n_bands,), 2.0)},
            "class_counts": torch.tensor([900.0, 90.0, 10.0][: len(classes)]),
        }
    )


def _task(**kw: Any) -> SegmentationTask:
    task = SegmentationTask(depth=2, base_filters=4, max_filters=8, **kw)
    task.build(_spec())
    return task


@pytest.mark.parametrize("block", ["plain", "residual", "inception"])
@pytest.mark.parametrize("depth", [1, 3])
def test_unet_maps_any_bands_to_class_logits(block: Any, depth: int) -> None:
    net = CloudUNet(
        in_channels=5, num_classes=4, depth=depth, base_filters=4, max_filters=16, block=block
    )
    out = net(torch.randn(2, 5, 24, 16))
    assert out.shape == (2, 4, 24, 16)
    assert net.widths == [min(4 * 2**i, 16) for i in range(depth + 1)]


def test_inception_block_keeps_size_and_has_four_branches() -> None:
    block = make_block("inception", 3, 10)
    assert isinstance(block, InceptionConvBlock)
    assert block(torch.randn(2, 3, 7, 9)).shape == (2, 10, 7, 9)
    with pytest.raises(ConfigError, match="out_channels >= 4"):
        InceptionConvBlock(3, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "at least 2 classes"),
        ({"depth": 0}, "depth"),
        ({"base_filters": 0}, "base_filters"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_unet_rejects_bad_configuration(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"in_channels": 3, "num_classes": 2} | kwargs
    with pytest.raises(ConfigError, match=match):
        CloudUNet(**args)


def test_unet_tells_which_sizes_it_accepts() -> None:
    net = CloudUNet(3, 2, depth=3, base_filters=4)
    with pytest.raises(ConfigError, match="multiples of 8"):
        net(torch.randn(1, 3, 20, 16))
    with pytest.raises(ConfigError, match="3 input channels"):
        net(torch.randn(1, 4, 16, 16))


def test_augmentation_moves_inputs_and_labels_together() -> None:
    torch.manual_seed(0)
    y = torch.randint(0, 3, (6, 8, 8))
    x = torch.stack([y.float(), -y.float()], dim=1)  # inputs that encode their labels
    xa, ya = augment(x, y)
    assert torch.equal(xa[:, 0].long(), ya) and torch.equal(xa[:, 1], -xa[:, 0])
    assert not torch.equal(ya, y)  # something moved
    xr, yr = augment(x[:, :, :, :4], y[:, :, :4])  # non-square: shapes kept
    assert xr.shape == (6, 2, 8, 4) and torch.equal(xr[:, 0].long(), yr)


def test_normalisation_and_no_data_on_the_device() -> None:
    task = _task(augment=False)
    x = torch.ones(2, 3, 8, 8)
    x[0, 1, 0, 0] = float("nan")
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    out = task.on_after_batch_transfer({"x": x, "y": y}, 0)
    assert out["y"][0, 0, 0] == NODATA and (out["y"].flatten()[1:] == 0).all()
    torch.testing.assert_close(out["x_n"][1, :, 0, 0], (1 - torch.arange(3.0)) / 2)
    assert torch.isfinite(out["x_n"]).all()


@pytest.mark.parametrize("loss", ["ce", "ce_dice", "bce", "bce_dice"])
def test_losses_ignore_no_data(loss: Any) -> None:
    task = _task(loss=loss)
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = torch.randint(0, 3, (2, 8, 8))
    y[:, :4] = NODATA
    a = task.loss_from_logits(logits, y)
    y2 = y.clone()
    y2[:, :4] = NODATA  # the ignored pixels' logits do not matter either
    logits2 = logits.detach().clone()
    logits2[:, :, :4] = 100.0
    b = task.loss_from_logits(logits2, y2)
    torch.testing.assert_close(a, b)
    a.backward()
    assert logits.grad is not None and (logits.grad[:, :, :4] == 0).all()
    assert torch.isfinite(a)
    all_ignored = torch.full_like(y, NODATA)
    assert task.loss_from_logits(logits, all_ignored).item() == 0.0


def test_any_cloud_term_is_the_binary_cross_entropy_of_the_summed_cloud_probability() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 8, 8) * 3
    y = torch.randint(0, 3, (2, 8, 8))
    y[0, :2] = NODATA
    valid = y != NODATA
    p_cloud = torch.softmax(logits, 1)[:, 1]  # classes clear, cloud, snow: only "cloud" is cloudy
    target = (y == 1).float()
    expected = F.binary_cross_entropy(p_cloud[valid], target[valid])
    base = _task(any_cloud_weight=0.0).loss_from_logits(logits, y)
    with_term = _task(any_cloud_weight=2.0).loss_from_logits(logits, y)
    torch.testing.assert_close(with_term - base, 2.0 * expected, rtol=1e-5, atol=1e-6)
    # no cloudy class in the label set: the term is zero
    task = SegmentationTask(depth=2, base_filters=4, max_filters=8, any_cloud_weight=1.0)
    task.build(_spec(classes=("clear", "snow", "water")))
    plain = SegmentationTask(depth=2, base_filters=4, max_filters=8)
    plain.build(_spec(classes=("clear", "snow", "water")))
    y3 = torch.randint(0, 3, (2, 8, 8))
    torch.testing.assert_close(
        task.loss_from_logits(logits, y3), plain.loss_from_logits(logits, y3)
    )


def test_class_weights_balanced_explicit_or_none() -> None:
    w = _task(class_weights="balanced").class_weight
    assert w[2] > w[1] > w[0] and w.mean().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(_task(class_weights=None).class_weight, torch.ones(3))
    assert _task(class_weights=[1.0, 2.0, 3.0]).class_weight.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ConfigError, match="needs 3 values"):
        _task(class_weights=[1.0, 2.0])


def test_checkpoint_is_self_contained(tmp_path: Path) -> None:
    import lightning as L

    task = _task(block="inception")
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=0,
    )
    trainer.strategy.connect(task)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["climdl"]["kind"] == "cloud_segmentation"
    assert raw["climdl"]["spec"]["classes"] == ["clear", "cloud", "snow"]
    again = load_segmenter(path)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(again.predict_proba(x), task.eval().predict_proba(x))
    assert again.predict_proba(x).sum(1).allclose(torch.ones(2, 8, 8))
    torch.save({"state_dict": {}, "climdl": {"spec": {}, "version": "0.1.0"}}, tmp_path / "e.ckpt")
    with pytest.raises(DataError, match="not a cloud-segmentation checkpoint"):
        load_segmenter(tmp_path / "e.ckpt")
