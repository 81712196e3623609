"""The paper's baselines (MODEL.md, "Baselines"): a ResNet-18 trained from scratch on
(a) the original resized to 224×224, (b) every pixel of the original in 224×224 patches whose
features are summed before the head, and the proxy alone.

Shape legend: B batch, C channels, H height, W width, F feature width, K classes,
P patch side, M patches in a chunk (patch positions × B).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.config import PatchesConfig, ProxyOnlyConfig, ResizeConfig
from model.glimpse import RegionReader
from model.interface import Batch, BatchClassifier
from model.layers import ResNet, resize_square


class ResizeBaseline(BatchClassifier):
    """(a): the whole original resized to 224×224 — what the reference code's baseline did."""

    def __init__(self, config: ResizeConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ResNet(config.in_channels, width=config.width, blocks=config.blocks)
        self.head = nn.Linear(self.backbone.out_dim, config.num_classes)

    def batch_logits(self, batch: Batch) -> torch.Tensor:
        # one image at a time: a batch of photos or replay renders may mix sizes
        size = self.config.image_size
        images_BCHW = torch.cat([resize_square(i[None], size) for i in batch.whole_images()])
        return self.head(self.backbone(images_BCHW))


class ProxyOnlyBaseline(BatchClassifier):
    """The same ResNet on the proxy alone: what the proxy can tell without any glimpse."""

    def __init__(self, config: ProxyOnlyConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ResNet(config.proxy_channels, width=config.width, blocks=config.blocks)
        self.head = nn.Linear(self.backbone.out_dim, config.num_classes)

    def batch_logits(self, batch: Batch) -> torch.Tensor:
        return self.head(self.backbone(resize_square(batch.proxy_BCHW, self.config.proxy_size)))


def patch_positions(height: int, width: int, patch: int) -> list[tuple[int, int]]:
    """Top-left (y, x) of the patches tiling a height × width image (the last ones overhang)."""
    return [(y, x) for y in range(0, height, patch) for x in range(0, width, patch)]


class PatchesBaseline(BatchClassifier):
    """(b): every pixel — the original cut into P×P patches (zero-padded past the image), each
    through the ResNet, the features summed before the head (the reference's DSLR baseline).

    Patches are read through the batch's region reader a chunk at a time, so neither the whole
    image as floats nor all patches' activations are held at once. In training each chunk is
    gradient-checkpointed (activations recomputed in backward); batch-norm running statistics
    are then updated twice per chunk, which only changes their effective momentum.
    """

    def __init__(self, config: PatchesConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ResNet(config.in_channels, width=config.width, blocks=config.blocks)
        self.head = nn.Linear(self.backbone.out_dim, config.num_classes)

    def batch_logits(self, batch: Batch) -> torch.Tensor:
        reader = batch.region_reader()
        sizes = reader.image_sizes()
        B, P = len(sizes), self.config.patch_size
        # the patches of the largest extent; where images differ in size (photos, replay
        # renders), a patch past an image's own extent is read (zeros) but not counted for it
        positions = patch_positions(max(h for h, _ in sizes), max(w for _, w in sizes), P)
        inside_NB = torch.tensor(
            [[y < h and x < w for h, w in sizes] for y, x in positions], device=batch.device
        )
        per_chunk = max(1, self.config.patches_per_chunk // B)
        features_BF = None
        for start in range(0, len(positions), per_chunk):
            patches_MCPP = self._read_patches(reader, positions[start : start + per_chunk], batch)
            if self.training and self.config.checkpoint:
                f_MF = checkpoint(self.backbone, patches_MCPP, use_reentrant=False)
            else:
                f_MF = self.backbone(patches_MCPP)
            f_NBF = f_MF.view(-1, B, f_MF.shape[1])  # M = positions × B
            chunk_BF = (f_NBF * inside_NB[start : start + per_chunk, :, None]).sum(dim=0)
            features_BF = chunk_BF if features_BF is None else features_BF + chunk_BF
        return self.head(features_BF)

    def _read_patches(
        self, reader: RegionReader, positions: list[tuple[int, int]], batch: Batch
    ) -> torch.Tensor:
        """The patches at `positions` of every image, position-major: (positions × B)×C×P×P."""
        P, B = self.config.patch_size, batch.labels_B.shape[0]
        patches = []
        for y, x in positions:
            boxes_B4 = torch.tensor([[y, x, y + P, x + P]] * B, dtype=torch.int64)
            patches.extend(reader.read_regions(boxes_B4))
        return torch.stack(patches).to(batch.device)
