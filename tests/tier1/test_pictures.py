"""The pictures logged with a run say what they show: titles, legends, class names, counts."""

from __future__ import annotations

import numpy as np
import torch

from jobs.core.pictures import (
    COLOURS,
    RIGHT,
    TRUTH,
    WRONG,
    class_name,
    confusion_figure,
    confusion_picture,
    glimpse_figure,
    glimpse_picture,
)
from model.interface import Batch


def _batch(n: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(
        proxy_BCHW=torch.rand(n, 1, 10, 10, generator=g),
        labels_B=torch.arange(n),
        images_BCHW=torch.rand(n, 1, 50, 50, generator=g),
        gt_boxes=[torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]])] * n,
    )


def _boxes(n: int, glimpses: int) -> torch.Tensor:
    corner = torch.linspace(0.1, 0.6, glimpses).view(1, glimpses, 1).expand(n, glimpses, 2)
    return torch.cat([corner, corner + 0.2], dim=2)


def _texts(fig) -> list:
    texts = [t for ax in fig.axes for t in ax.texts] + list(fig.texts)
    return texts + [t for legend in fig.legends for t in legend.get_texts()]


def test_the_glimpse_figure_has_a_title_a_legend_and_a_caption_per_image() -> None:
    fig = glimpse_figure(
        _batch(3),
        _boxes(3, 2),
        predicted=["2-4", "1-9", "3-3"],
        truth=["2-4", "1-8", "3-3"],
        title="saccader · epoch 4/4 · val accuracy 0.412",
    )
    assert fig._suptitle.get_text() == "saccader · epoch 4/4 · val accuracy 0.412"
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["glimpse 1", "glimpse 2", "ground truth"]
    assert [line.get_color() for line in legend.get_lines()] == [COLOURS[0], COLOURS[1], TRUTH]
    captions = {t.get_text(): t.get_color() for t in _texts(fig) if "predicted" in t.get_text()}
    assert captions == {
        "predicted 2-4 · true 2-4": RIGHT,
        "predicted 1-9 · true 1-8": WRONG,
        "predicted 3-3 · true 3-3": RIGHT,
    }
    assert len(fig.axes) == 6  # proxy and original per image
    for ax in fig.axes:  # two ground-truth boxes in white, then the glimpses in order
        colours = [p.get_edgecolor() for p in ax.patches]
        assert len(colours) == 4
        assert colours[:2] == [(1.0, 1.0, 1.0, 1.0)] * 2
        assert sorted(t.get_text() for t in ax.texts if t.get_text() in "12") == ["1", "2"]


def test_a_prediction_without_ground_truth_shows_the_predicted_class_only() -> None:
    batch = _batch(1)
    batch.gt_boxes = None
    fig = glimpse_figure(batch, _boxes(1, 3), predicted=["30"], title="photo.jpg")
    assert "predicted 30" in [t.get_text() for t in _texts(fig)]
    picture = glimpse_picture(batch, _boxes(1, 3), predicted=["30"], title="photo.jpg")
    assert picture.mode == "RGB" and picture.width >= 2 * 256


def test_the_confusion_figure_names_its_axes_and_classes_and_counts_every_non_zero_cell() -> None:
    names = ["0-1", "0-2", "1-2"]
    confusion = np.array([[5, 1, 0], [0, 3, 0], [2, 0, 4]])
    fig = confusion_figure(confusion, class_names=names, title="val, epoch 2")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert ax.get_title() == "val, epoch 2"
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    cells = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts
    }
    assert cells == {(0, 0): "5", (0, 1): "1", (1, 1): "3", (2, 0): "2", (2, 2): "4"}


def test_fifty_five_classes_stay_readable() -> None:
    k = 55
    rng = np.random.default_rng(0)
    confusion = np.diag(rng.integers(1, 9, k)) + (rng.random((k, k)) < 0.03) * 2
    names = [f"{a}-{b}" for a in range(10) for b in range(a, 10)]
    fig = confusion_figure(confusion, class_names=names)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert len(ax.texts) == int((confusion > 0).sum())
    picture = confusion_picture(confusion, class_names=names)
    assert picture.width / k >= 20 and picture.height / k >= 20  # pixels per cell, at least


def test_class_names_fall_back_to_the_index() -> None:
    assert class_name(2, ["a", "b", "c"]) == "c"
    assert class_name(7, ["a"]) == "7"
    assert class_name(3, None) == "3"


def test_the_glimpse_figure_draws_originals_of_different_sizes() -> None:
    """Photos and replay renders differ in size within a batch: each original is read whole on
    its own (a stacked read of the batch refused them, and the picture crashed)."""
    from model.glimpse import TensorRegionReader

    class MixedSizes:
        """Two images of different sizes behind the region-reader interface."""

        def __init__(self) -> None:
            g = torch.Generator().manual_seed(0)
            self.images = [torch.rand(1, 40, 60, generator=g), torch.rand(1, 50, 30, generator=g)]

        def image_sizes(self) -> list[tuple[int, int]]:
            return [tuple(image.shape[1:]) for image in self.images]

        def read_regions(self, boxes_B4: torch.Tensor, *, level: int = 1) -> list[torch.Tensor]:
            return [
                TensorRegionReader(image[None]).read_regions(box[None], level=level)[0]
                for image, box in zip(self.images, boxes_B4, strict=True)
            ]

    batch = Batch(
        proxy_BCHW=torch.rand(2, 1, 10, 10),
        labels_B=torch.arange(2),
        reader=MixedSizes(),
        gt_boxes=[torch.tensor([[0.1, 0.1, 0.3, 0.3]])] * 2,
    )
    fig = glimpse_figure(batch, _boxes(2, 2), title="mixed")
    shapes = [ax.images[0].get_array().shape for ax in fig.axes if ax.images]
    assert shapes == [(10, 10), (40, 60), (10, 10), (50, 30)]
    # panels of an eighth of the images or less: drawn from the ×8 pooled level
    small = glimpse_figure(batch, _boxes(2, 2), title="mixed", side=3)
    shapes = [ax.images[0].get_array().shape for ax in small.axes if ax.images]
    assert shapes == [(10, 10), (5, 8), (10, 10), (7, 4)]
