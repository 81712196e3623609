"""Tier 1: every registered model — shapes, finite losses and gradients, deterministic
evaluation — and the registry's and configs' validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.config import PatchesConfig, SaccaderConfig
from model.interface import Batch
from model.loss import ObjectiveConfig
from model.step import LossModule, eval_step, train_step
from model.variants import create_model, list_models, model_config
from pipelines.region import TiledImage, TileRegionReader

CLASSES, CHANNELS = 5, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def make_batch(B: int = 2, H: int = 70, W: int = 50, *, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        proxy_BCHW=torch.rand(B, CHANNELS, 20, 16, generator=g),
        labels_B=torch.randint(0, CLASSES, (B,), generator=g),
        images_BCHW=torch.rand(B, CHANNELS, H, W, generator=g),
    )


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("kind", ["product", "additive"])
def test_shapes_finite_loss_and_gradients(name: str, kind: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=CLASSES, in_channels=CHANNELS)
    batch = make_batch()
    model.train()
    parts = model.loss(batch, ObjectiveConfig(kind=kind))
    assert parts.total.ndim == 0 and torch.isfinite(parts.total)
    parts.total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    model.eval()
    prediction = model.predict(batch)
    assert prediction.logits_BK.shape == (2, CLASSES)
    assert prediction.labels_B.shape == (2,)
    if name.startswith("saccader"):
        glimpses = model.config.glimpses
        assert prediction.boxes_BT4.shape == (2, glimpses, 4)
        assert prediction.boxes_BT4.min() >= 0 and prediction.boxes_BT4.max() <= 1


@pytest.mark.parametrize("name", list_models())
def test_eval_is_deterministic(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=CLASSES, in_channels=CHANNELS)
    batch = make_batch()
    train_step(model, batch, torch.optim.SGD(model.parameters(), lr=1e-2), ObjectiveConfig())
    first, second = eval_step(model, batch), eval_step(model, batch)
    torch.testing.assert_close(
        first["prediction"].logits_BK, second["prediction"].logits_BK, rtol=0, atol=0
    )
    if first["prediction"].boxes_BT4 is not None:
        torch.testing.assert_close(
            first["prediction"].boxes_BT4, second["prediction"].boxes_BT4, rtol=0, atol=0
        )


@pytest.mark.parametrize(
    "name", ["saccader_test", "resnet18_patches_test", "resnet18_resize224_test"]
)
def test_tile_reader_batch_equals_in_memory_batch(name: str) -> None:
    """The models read stored tiles (no whole image in memory) with the same result."""
    rng = np.random.default_rng(0)
    images_BHWC = rng.integers(0, 256, size=(2, 70, 50, CHANNELS), dtype=np.uint8)
    tiled = [TiledImage.from_array(a, tile_size=16, tile_format="png") for a in images_BHWC]
    in_memory = make_batch()
    in_memory.images_BCHW = torch.from_numpy(images_BHWC).permute(0, 3, 1, 2).float() / 255
    from_tiles = Batch(
        proxy_BCHW=in_memory.proxy_BCHW,
        labels_B=in_memory.labels_B,
        reader=TileRegionReader(tiled, threads=1),
    )
    torch.manual_seed(0)
    model = create_model(name, num_classes=CLASSES, in_channels=CHANNELS).eval()
    torch.testing.assert_close(
        model.predict(from_tiles).logits_BK,
        model.predict(in_memory).logits_BK,
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("name", ["resnet18_patches_test", "resnet18_resize224_test"])
def test_whole_image_baselines_take_a_batch_of_mixed_sizes(name: str) -> None:
    """Photos (portrait and landscape) and replay renders differ in size within a batch: each
    image's logits are what it gets alone (a refused batch crashed training and evaluation)."""
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in ((70, 50, 3), (40, 90, 3))]
    tiled = [TiledImage.from_array(a, tile_size=16, tile_format="png") for a in arrays]
    proxy_BCHW = torch.rand(2, CHANNELS, 16, 16, generator=torch.Generator().manual_seed(0))

    def batch(images: list[TiledImage], proxy: torch.Tensor) -> Batch:
        labels = torch.zeros(len(images), dtype=torch.long)
        return Batch(proxy_BCHW=proxy, labels_B=labels, reader=TileRegionReader(images, threads=1))

    torch.manual_seed(0)
    model = create_model(name, num_classes=CLASSES, in_channels=CHANNELS).eval()
    for module in model.modules():  # a fresh net maps a blank patch to zero features: not here
        if isinstance(module, torch.nn.BatchNorm2d):
            module.bias.data.fill_(0.1)
    together = model.predict(batch(tiled, proxy_BCHW)).logits_BK
    alone = torch.cat(
        [model.predict(batch([t], proxy_BCHW[i : i + 1])).logits_BK for i, t in enumerate(tiled)]
    )
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_patches_sum_features_of_zero_padded_patches() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18_patches_test", num_classes=CLASSES, in_channels=CHANNELS).eval()
    batch = make_batch(B=1)
    padded = torch.zeros(1, CHANNELS, 96, 64)  # 70×50 padded to 3×2 patches of 32
    padded[:, :, :70, :50] = batch.images_BCHW
    patches = [padded[:, :, y : y + 32, x : x + 32] for y in (0, 32, 64) for x in (0, 32)]
    with torch.no_grad():
        expected = model.head(sum(model.backbone(p) for p in patches))
    torch.testing.assert_close(model.predict(batch).logits_BK, expected, rtol=1e-5, atol=1e-5)


def test_patch_checkpointing_keeps_gradients() -> None:
    batch = make_batch()
    grads = {}
    for checkpoint in (True, False):
        torch.manual_seed(0)
        model = create_model(
            "resnet18_patches_test",
            num_classes=CLASSES,
            in_channels=CHANNELS,
            checkpoint=checkpoint,
            patches_per_chunk=4,
        )
        model.loss(batch, ObjectiveConfig()).total.backward()
        grads[checkpoint] = [p.grad.clone() for p in model.parameters()]
    for with_ckpt, without in zip(grads[True], grads[False], strict=True):
        torch.testing.assert_close(with_ckpt, without, rtol=1e-5, atol=1e-6)


def test_train_step_through_ddp_loss_module(tmp_path) -> None:
    """`LossModule` is what Ray Train's prepare_model wraps in DDP; its forward is the loss."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = create_model("saccader_test", num_classes=CLASSES, in_channels=CHANNELS)
        module = DistributedDataParallel(LossModule(model))
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
        before = [p.detach().clone() for p in model.parameters()]
        parts = train_step(module, make_batch(), optimizer, ObjectiveConfig())
    finally:
        dist.destroy_process_group()
    assert all(map(math.isfinite, parts.values()))
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_unknown_model_and_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="saccader_test"):
        create_model("no_such_model", num_classes=2, in_channels=1)
    with pytest.raises(ValueError, match="glimpse_count"):
        create_model("saccader", num_classes=2, in_channels=1, glimpse_count=3)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("proxy_only", in_channels=1)


def test_config_validation_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match="max_image_fraction"):
        SaccaderConfig(num_classes=2, in_channels=1, min_image_fraction=0.5, max_image_fraction=0.3)
    with pytest.raises(ValueError, match="likelihood"):
        SaccaderConfig(num_classes=2, in_channels=1, likelihood="poisson")
    with pytest.raises(ValueError, match="patch_size"):
        PatchesConfig(num_classes=2, in_channels=1, patch_size=0)
    with pytest.raises(ValueError, match="kind"):
        ObjectiveConfig(kind="sum")
    config = model_config("saccader", num_classes=2, in_channels=3)
    assert config.proxy_channels == 3 and config.window == 64 and config.glimpses == 4


def test_train_step_reports_parts_and_learns() -> None:
    torch.manual_seed(0)
    model = create_model("saccader_test", num_classes=CLASSES, in_channels=CHANNELS)
    batch = make_batch(B=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    objective = ObjectiveConfig(kind="additive")
    first = train_step(model, batch, optimizer, objective)
    assert {"total", "ce", "kl", "recon", "aux_ce", "accuracy"} <= set(first)
    for _ in range(10):
        last = train_step(model, batch, optimizer, objective)
    assert last["total"] < first["total"]


def test_eval_step_hit_rate_against_centred_boxes() -> None:
    torch.manual_seed(0)
    model = create_model("saccader_test", num_classes=CLASSES, in_channels=CHANNELS)
    batch = make_batch()
    batch.gt_boxes = [torch.tensor([[0.45, 0.45, 0.55, 0.55]]), torch.zeros(0, 4)]
    result = eval_step(model, batch)
    # image 1 has no object: at most half of the glimpses can hit; centred boxes hit image 0
    assert 0 <= result["hit_rate"] <= 0.5
    assert result["centred_hit_rate"] == 0.5


def test_a_config_saved_under_an_old_setting_name_builds_the_same_model() -> None:
    """Checkpoints and registered models keep their settings' old names (`latent`, now
    `hidden`; `part_classes`, now `class_parts` as in the manifest): they must rebuild the model
    their state dict fits."""
    from jobs.training.recipes import TrainConfig, make_recipe

    new = make_recipe("sc2_cpu", "unused", {})
    saved = new.to_dict()
    saved["model_cfg"] = {
        ("latent" if k == "hidden" else k): v for k, v in saved["model_cfg"].items()
    }
    assert "latent" in saved["model_cfg"]
    assert TrainConfig.from_dict(saved) == new
    assert create_model("saccader", num_classes=3, in_channels=1, latent=8).config.hidden == 8
    parts = create_model("saccader", num_classes=2, in_channels=1, part_classes=[[0], [1]])
    assert parts.config.class_parts == ((0,), (1,))
