"""Pictures logged with a run: where the saccader looked, and the confusion matrix.

Drawn with matplotlib (the Agg backend, no display needed) and returned as Pillow images, so
callers save them as they like. Boxes are normalised (y0, x0, y1, x1), the model's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.interface import Batch

# Glimpse t is drawn in colour t (cycled); white is kept for the ground truth.
COLOURS = ["#ff4040", "#40c840", "#4080ff", "#ffc800", "#ff00ff", "#00dcdc", "#ff8000", "#a060ff"]
TRUTH = "white"
BACKGROUND = "#202020"  # dark, so white ground-truth boxes and their legend entry show
RIGHT, WRONG = "#7ee07e", "#ff7070"  # caption colour: prediction right / wrong


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    """A class index as its name (the index itself when the names are unknown)."""
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def _figure(width_in: float, height_in: float, facecolor: str) -> Any:
    from matplotlib.figure import Figure

    # A bare Figure (not pyplot): no global state, safe in Ray workers and threads.
    return Figure(figsize=(width_in, height_in), dpi=100, facecolor=facecolor)


def _to_image(fig: Any) -> Image.Image:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def _show(
    ax: Any, image_CHW: torch.Tensor, boxes_T4: torch.Tensor, truth_N4: torch.Tensor | None
) -> None:
    """One image in normalised coordinates, its ground-truth boxes and numbered glimpses."""
    from matplotlib.patches import Rectangle

    array = image_CHW.clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    grey = array.shape[2] == 1
    ax.imshow(
        array[:, :, 0] if grey else array,
        cmap="gray" if grey else None,
        vmin=0,
        vmax=1,
        extent=(0, 1, 1, 0),
        interpolation="nearest",
    )
    for y0, x0, y1, x1 in truth_N4.tolist() if truth_N4 is not None else []:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=TRUTH, lw=1))
    for t, (y0, x0, y1, x1) in enumerate(boxes_T4.tolist()):
        colour = COLOURS[t % len(COLOURS)]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.6))
        ax.text(x0 + 0.01, y0 + 0.01, str(t + 1), color=colour, fontsize=7, va="top")
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _caption(predicted: str | None, truth: str | None) -> tuple[str, str]:
    parts = []
    if predicted is not None:
        parts.append(f"predicted {predicted}")
    if truth is not None:
        parts.append(f"true {truth}")
    right = predicted is None or truth is None or predicted == truth
    return " · ".join(parts), (RIGHT if right else WRONG)


def _legend(fig: Any, glimpses: int) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=COLOURS[t % len(COLOURS)], lw=2, label=f"glimpse {t + 1}")
        for t in range(glimpses)
    ]
    handles.append(Line2D([], [], color=TRUTH, lw=1, label="ground truth"))
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.4 / fig.get_figheight()),
        ncol=min(len(handles), 5),
        fontsize=8,
        frameon=False,
        labelcolor="white",
    )


def glimpse_picture(batch: Batch, boxes_BT4: torch.Tensor, **labels: Any) -> Image.Image:
    """`glimpse_figure` drawn as an image."""
    return _to_image(glimpse_figure(batch, boxes_BT4, **labels))


def prediction_picture(
    batch: Batch, prediction: Any, class_names: Sequence[str] | None, title: str
) -> Image.Image:
    """`glimpse_picture` of a saccader's `prediction` on `batch`, each image captioned with its
    predicted and true class names."""
    return glimpse_picture(
        batch,
        prediction.boxes_BT4.cpu(),
        predicted=[class_name(int(k), class_names) for k in prediction.labels_B],
        truth=[class_name(int(k), class_names) for k in batch.labels_B],
        title=title,
    )


def confusion_picture(confusion_KK: np.ndarray, **labels: Any) -> Image.Image:
    """`confusion_figure` drawn as an image."""
    return _to_image(confusion_figure(confusion_KK, **labels))


# The stored pooled level's factor (pipelines.pyramid): a panel of an image at least this many times
# its side is drawn from that level, 1/64 of the pixels, instead of every full-resolution tile
PICTURE_LEVEL = 8


def glimpse_figure(
    batch: Batch,
    boxes_BT4: torch.Tensor,
    *,
    predicted: Sequence[str] | None = None,
    truth: Sequence[str] | None = None,
    title: str = "",
    side: int = 256,
) -> Any:
    """Per image, the proxy and the original side by side, each with the T numbered glimpse
    boxes (colour = glimpse order, see the legend) and the ground-truth boxes in white; under
    each pair its predicted and true class names (green when they agree, red when not).
    `side`: pixels per image panel."""
    sizes = batch.region_reader().image_sizes()
    small = min(min(size) for size in sizes) >= PICTURE_LEVEL * side
    originals = batch.whole_images(PICTURE_LEVEL if small else 1)
    count, glimpses = boxes_BT4.shape[0], boxes_BT4.shape[1]
    pairs_per_row = 1 if count <= 2 else 2
    rows = -(-count // pairs_per_row)
    panel = side / 100  # inches at 100 dpi
    head, caption = 0.9, 0.32  # inches: title + legend; caption under each row
    fig = _figure(2 * pairs_per_row * panel, head + rows * (panel + caption), BACKGROUND)
    grid = fig.add_gridspec(
        rows,
        pairs_per_row,
        left=0.01,
        right=0.99,
        bottom=caption / fig.get_figheight(),
        top=1 - head / fig.get_figheight(),
        wspace=0.06,  # pairs further apart than the two images of a pair
        hspace=caption / panel,
    )
    for b in range(count):
        r, c = divmod(b, pairs_per_row)
        pair = grid[r, c].subgridspec(1, 2, wspace=0.03)
        gt = batch.gt_boxes[b] if batch.gt_boxes is not None else None
        for k, image in enumerate((batch.proxy_BCHW[b], originals[b])):
            ax = fig.add_subplot(pair[0, k])
            _show(ax, image, boxes_BT4[b], gt)
            if r == 0:
                ax.set_title(("proxy", "original")[k], color="#b0b0b0", fontsize=8, pad=3)
        text, colour = _caption(
            predicted[b] if predicted is not None else None, truth[b] if truth is not None else None
        )
        # centred under the pair: x in the original's axes, left of it is the gap to the proxy
        ax.text(
            -0.02,
            -0.03,
            text,
            color=colour,
            fontsize=8,
            ha="center",
            va="top",
            transform=ax.transAxes,
        )
    fig.suptitle(title, color="white", fontsize=10, y=1 - 0.08 / fig.get_figheight(), va="top")
    _legend(fig, glimpses)
    return fig


def confusion_figure(
    confusion_KK: np.ndarray, *, class_names: Sequence[str] | None = None, title: str = ""
) -> Any:
    """The confusion matrix: rows the true class, columns the predicted one, each cell's count
    written in it (non-zero cells only, so 55 classes stay readable) and shaded by its share of
    the true class's images."""
    k = confusion_KK.shape[0]
    names = [class_name(i, class_names) for i in range(k)]
    totals = confusion_KK.sum(axis=1, keepdims=True).clip(min=1)
    share = confusion_KK / totals
    cell = 0.42 if k <= 12 else 0.24  # inches per cell
    font = 9 if k <= 12 else 6
    margin = 0.15 + 0.07 * max(len(n) for n in names)
    fig = _figure(k * cell + margin + 1.4, k * cell + margin + 0.9, "white")
    ax = fig.add_axes(
        (
            (margin + 0.5) / fig.get_figwidth(),
            (margin + 0.4) / fig.get_figheight(),
            k * cell / fig.get_figwidth(),
            k * cell / fig.get_figheight(),
        )
    )
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    for (i, j), n in np.ndenumerate(confusion_KK):
        if n:
            colour = "white" if share[i, j] > 0.55 else "black"
            ax.text(j, i, str(n), ha="center", va="center", fontsize=font, color=colour)
    ax.set_xticks(range(k), names, rotation=90, fontsize=font)
    ax.set_yticks(range(k), names, fontsize=font)
    # faint cell borders: a row or column is easy to follow across 55 classes
    ax.set_xticks(np.arange(k + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="#d8d8d8", lw=0.4)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix", fontsize=10)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("share of the true class's images", fontsize=8)
    return fig
