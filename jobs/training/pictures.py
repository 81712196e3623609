"""Pictures logged with a run: where the saccader looked, and the confusion matrix.

Drawn with Pillow only. Boxes are normalised (y0, x0, y1, x1), the model's order.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from model.interface import Batch

_COLOURS = [
    (255, 64, 64),
    (64, 200, 64),
    (64, 128, 255),
    (255, 200, 0),
    (255, 0, 255),
    (0, 220, 220),
    (255, 128, 0),
    (160, 96, 255),
]


def _to_rgb(image_CHW: torch.Tensor, side: int) -> Image.Image:
    array = (image_CHW.clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).convert("RGB")
    scale = side / max(pil.size)
    return pil.resize(
        (max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
        Image.BOX if scale < 1 else Image.NEAREST,
    )


def _draw_boxes(pil: Image.Image, boxes_T4: torch.Tensor, truth_N4: torch.Tensor | None) -> None:
    draw = ImageDraw.Draw(pil)
    w, h = pil.size
    for y0, x0, y1, x1 in truth_N4.tolist() if truth_N4 is not None else []:
        draw.rectangle([x0 * w, y0 * h, x1 * w, y1 * h], outline=(255, 255, 255), width=1)
    for t, (y0, x0, y1, x1) in enumerate(boxes_T4.tolist()):
        colour = _COLOURS[t % len(_COLOURS)]
        draw.rectangle([x0 * w, y0 * h, x1 * w, y1 * h], outline=colour, width=2)
        draw.text((x0 * w + 3, y0 * h + 1), str(t + 1), fill=colour)


def glimpse_picture(batch: Batch, boxes_BT4: torch.Tensor, *, side: int = 256) -> Image.Image:
    """One row per image: the proxy and the original, each with the T numbered glimpse boxes
    (colours in glimpse order) and the ground-truth boxes in white."""
    originals = batch.full_images()
    rows = []
    for b in range(boxes_BT4.shape[0]):
        truth = batch.gt_boxes[b] if batch.gt_boxes is not None else None
        pair = [_to_rgb(batch.proxy_BCHW[b], side), _to_rgb(originals[b], side)]
        for pil in pair:
            _draw_boxes(pil, boxes_BT4[b], truth)
        rows.append(pair)
    cell_w = max(p.width for row in rows for p in row)
    cell_h = max(p.height for row in rows for p in row)
    sheet = Image.new("RGB", (2 * cell_w + 12, len(rows) * (cell_h + 4)), (32, 32, 32))
    for r, row in enumerate(rows):
        for c, pil in enumerate(row):
            sheet.paste(pil, (c * (cell_w + 12), r * (cell_h + 4)))
    return sheet


def confusion_picture(confusion_KK: np.ndarray, *, cell: int = 8) -> Image.Image:
    """Rows: true class; columns: predicted; darker = more (row-normalised)."""
    totals = confusion_KK.sum(axis=1, keepdims=True).clip(min=1)
    share = confusion_KK / totals
    pixels = (255 - share * 255).astype(np.uint8)
    k = confusion_KK.shape[0]
    return Image.fromarray(pixels).resize((k * cell, k * cell), Image.NEAREST)
