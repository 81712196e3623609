"""The one interface every registered model has, so one train loop serves them all.

Shape legend: B batch, C channels, H height, W width, K classes, T glimpses, N objects,
4 = a normalised box (y0, x0, y1, x1) in fractions of the image's height and width.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from model.glimpse import RegionReader, TensorRegionReader
from model.loss import LossParts, ObjectiveConfig, classification_loss


@dataclass(kw_only=True)
class Batch:
    """A batch as every model sees it; a model uses the fields it needs."""

    proxy_BCHW: torch.Tensor  # the proxies, float in [0, 1]
    labels_B: torch.Tensor  # int64 class indices
    reader: RegionReader | None = None  # the originals, read region by region (saccader)
    images_BCHW: torch.Tensor | None = None  # the originals whole, float in [0, 1] (baselines)
    # per element an N×4 tensor of object boxes, normalised (y0, x0, y1, x1) like the glimpse boxes
    gt_boxes: list[torch.Tensor] | None = None
    # per element the N class indices of those objects (int64), where the dataset has them
    gt_classes: list[torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        """Where the batch's tensors (and so the model) live: the proxies' device."""
        return self.proxy_BCHW.device

    def to(self, device: torch.device | str) -> Batch:
        """The tensors moved to `device` (a reader stays where it is: glimpses are moved)."""
        images = None if self.images_BCHW is None else self.images_BCHW.to(device)
        gt = None if self.gt_boxes is None else [b.to(device) for b in self.gt_boxes]
        classes = None if self.gt_classes is None else [c.to(device) for c in self.gt_classes]
        return replace(
            self,
            proxy_BCHW=self.proxy_BCHW.to(device),
            labels_B=self.labels_B.to(device),
            images_BCHW=images,
            gt_boxes=gt,
            gt_classes=classes,
        )

    def region_reader(self) -> RegionReader:
        """The reader, or one over `images_BCHW` when only whole images were given."""
        if self.reader is not None:
            return self.reader
        if self.images_BCHW is None:
            raise ValueError("this model needs the originals: set Batch.reader or images_BCHW")
        return TensorRegionReader(self.images_BCHW)

    def full_images(self) -> torch.Tensor:
        """The whole originals as one tensor (they must be of one size); read (every tile
        decoded) from the reader when not given."""
        if self.images_BCHW is not None:
            return self.images_BCHW
        images = self.whole_images()
        sizes = [tuple(image.shape[1:]) for image in images]
        if len(set(sizes)) != 1:
            raise ValueError(f"the originals differ in size, got {sizes}: use whole_images")
        return torch.stack(images)

    def whole_images(self, level: int = 1) -> list[torch.Tensor]:
        """Each original whole, C×H×W, whatever its size (photos and replay renders differ in
        a batch); `level` > 1 reads the ×level pooled level instead (fewer tiles decoded)."""
        if self.images_BCHW is not None and level == 1:
            return list(self.images_BCHW)
        reader = self.region_reader()
        sizes = reader.image_sizes()
        boxes_B4 = torch.tensor(
            [[0, 0, -(-h // level), -(-w // level)] for h, w in sizes], dtype=torch.int64
        )
        return [image.to(self.device) for image in reader.read_regions(boxes_B4, level=level)]


@dataclass
class Prediction:
    """What a model answers for a batch; the saccader adds where it looked."""

    logits_BK: torch.Tensor  # class scores
    labels_B: torch.Tensor  # argmax class
    boxes_BT4: torch.Tensor | None = None  # the glimpse boxes (saccader only)


class BatchClassifier(nn.Module):
    """Base of the registered models: `loss` for training and `predict` for evaluation.

    Subclasses implement `batch_logits`; the saccader overrides both methods.
    """

    def batch_logits(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, batch: Batch, objective: ObjectiveConfig) -> LossParts:
        """Cross-entropy only: the objective's VAE terms do not exist for a plain classifier."""
        return classification_loss(self.batch_logits(batch), batch.labels_B)

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        logits_BK = self.batch_logits(batch)
        return Prediction(logits_BK=logits_BK, labels_B=logits_BK.argmax(dim=1))
