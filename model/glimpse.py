"""Localized spatial transformer: from a latent z to a box, and from a box to a W×W glimpse.

Shape legend: B batch, C channels, H height, W width (of an image or region, in pixels),
N = the glimpse window side, 3 = z = (scale, x, y), 4 = a box.

Boxes. A normalised box is (y0, x0, y1, x1) as fractions of the image's height and width (inside
the image: in [0, 1]); the same order as the readers' integer pixel boxes and torch's H-before-W.
A box's side is a fraction of the image's *shorter* side, so every box is square in pixels and a
glimpse keeps the content's aspect on non-square images (a 4000×3000 photo gets 900×900-px boxes at
fraction 0.3, never 1200×900 squeezed into a square window).

Glimpses. The reference is `full_image_glimpse`: `F.grid_sample` (bilinear, zeros padding,
align_corners=False) over the whole image. `read_glimpses` gives the same numbers while reading
only each box's pixel region (plus one pixel of bilinear support) through a `RegionReader`, with the
sampling grid in the region's own normalised coordinates. The grid is a differentiable function of
the box (so of z) and the pixels are constants, so the gradient w.r.t. z is the exact
spatial-transformer gradient. When the box is k ≥ 2 times the window, both paths first average-pool
the image by k (pooling cells aligned to multiples of k, pixels past the image counting as zeros),
so a large box is not sampled with gaps (aliasing). The batch's pooled regions are zero-padded at
the bottom and right to one size (no bilinear tap reaches the padding) and sampled in one call.

Pooled level. With `level` L > 1 (a power of two), a box with k ≥ L is pooled by L·⌊k/L⌋ instead,
in two steps: the image's ×L level — defined in integers as the stored level of
`pipelines/pyramid.py` (pixels on the 1/255 grid, zero-padded L×L cells, sum rounded half up) —
then a float average by ⌊k/L⌋. A reader serves the level region directly (`read_regions(...,
level=L)`): stored datasets decode a few small level tiles instead of the full-resolution region.

Blending. One factor per box makes the glimpse jump where the factor changes (k = 1 → 2, …, and
most at the switch to the level). With `blend`, the glimpse is the mix of the two usable factors
around the box's side, weighted by where the side lies between them: continuous in the scale,
with the exact gradient of the mix, for twice the reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class RegionReader(Protocol):
    """A batch of original images read region by region (the images need never be whole)."""

    def image_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each batch element."""
        ...

    def read_regions(self, boxes_B4: torch.Tensor, *, level: int = 1) -> list[torch.Tensor]:
        """Read box b of image b, from the image's ×`level` pooled level (1: the image itself).

        boxes_B4: int64 [y0, x0, y1, x1], half-open ranges of the level's pixels, may extend
        outside it (outside pixels are zeros). Returns one float32 C×(y1−y0)×(x1−x0) tensor in
        [0, 1] per element.
        """
        ...


class TensorRegionReader:
    """`RegionReader` over images already in memory (tests, small images, the baselines' batches).

    Regions keep the images' dtype, so float64 images give float64 regions (gradient checks).
    """

    def __init__(self, images_BCHW: torch.Tensor) -> None:
        if images_BCHW.ndim != 4:
            raise ValueError(
                f"expected images of shape (B, C, H, W), got {tuple(images_BCHW.shape)}"
            )
        self.images_BCHW = images_BCHW

    def image_sizes(self) -> list[tuple[int, int]]:
        _, _, H, W = self.images_BCHW.shape
        return [(H, W)] * self.images_BCHW.shape[0]

    def read_regions(self, boxes_B4: torch.Tensor, *, level: int = 1) -> list[torch.Tensor]:
        _, C, H, W = self.images_BCHW.shape
        regions = []
        for image_CHW, box in zip(self.images_BCHW, boxes_B4.tolist(), strict=True):
            y0, x0, y1, x1 = (v * level for v in box)  # the level's cells, in image pixels
            region_CHW = image_CHW.new_zeros(C, y1 - y0, x1 - x0)
            ys, ye, xs, xe = max(y0, 0), min(y1, H), max(x0, 0), min(x1, W)
            if ys < ye and xs < xe:
                region_CHW[:, ys - y0 : ye - y0, xs - x0 : xe - x0] = image_CHW[:, ys:ye, xs:xe]
            regions.append(pool_level(region_CHW, level) if level > 1 else region_CHW)
        return regions


def pool_level(image_CHW: torch.Tensor, level: int) -> torch.Tensor:
    """The ×`level` pooled level of a [0, 1] image, as `pipelines/pyramid.py` defines and stores it.

    Pixels are taken to the 1/255 grid, cells zero-padded, and each cell's integer sum rounded
    half up: the sums stay below 2^24, so float32 computes them exactly and every reader (stored
    level, level computed from tiles, this) gives the same numbers.
    """
    C, H, W = image_CHW.shape
    if H == 0 or W == 0:
        return image_CHW.new_zeros(C, -(-H // level), -(-W // level))
    padded = F.pad(image_CHW, (0, -W % level, 0, -H % level))
    counts = torch.round(padded * 255).unsqueeze(0)
    sums = F.avg_pool2d(counts, level, divisor_override=1).squeeze(0)
    cells = level * level
    return torch.floor((sums + cells // 2) / cells) / 255


# ---------------------------------------------------------------------------------------------
# z → box


def sizes_tensor(sizes: list[tuple[int, int]], like: torch.Tensor) -> torch.Tensor:
    """(H, W) per element as a B×2 tensor on `like`'s device and dtype."""
    return torch.tensor(sizes, dtype=like.dtype, device=like.device)


def latent_to_boxes(
    z_B3: torch.Tensor,
    sizes: list[tuple[int, int]],
    *,
    min_fraction: float,
    max_fraction: float,
) -> torch.Tensor:
    """Map z = (scale, x, y) to normalised boxes (y0, x0, y1, x1) that lie inside the image.

    side = min + (max − min)·sigmoid(scale), a fraction of the shorter image side; each centre
    coordinate is 1/2 + (1/2 − half side)·tanh(·), so the box never leaves the image. Both maps
    are smooth with non-zero derivatives everywhere: no clamp cuts the gradient (the reference
    clamped the scale with a max(), which zeroed its gradient most of the time).
    """
    side_h_B, side_w_B = _box_sides(z_B3, sizes, min_fraction, max_fraction)
    cx_B = 0.5 + (0.5 - side_w_B / 2) * torch.tanh(z_B3[:, 1])
    cy_B = 0.5 + (0.5 - side_h_B / 2) * torch.tanh(z_B3[:, 2])
    return _centred_on(cy_B, cx_B, side_h_B, side_w_B)


def centre_to_boxes(
    z_B3: torch.Tensor,
    sizes: list[tuple[int, int]],
    *,
    min_fraction: float,
    max_fraction: float,
) -> torch.Tensor:
    """Boxes for z = (scale, x, y) whose x, y in [−1, 1] are the wanted centre itself (the
    heat-map locator's grid cells), not a tanh pre-image: the side as in `latent_to_boxes`, the
    centre clamped so the box stays inside the image."""
    side_h_B, side_w_B = _box_sides(z_B3, sizes, min_fraction, max_fraction)
    cx_B = torch.minimum(torch.maximum((z_B3[:, 1] + 1) / 2, side_w_B / 2), 1 - side_w_B / 2)
    cy_B = torch.minimum(torch.maximum((z_B3[:, 2] + 1) / 2, side_h_B / 2), 1 - side_h_B / 2)
    return _centred_on(cy_B, cx_B, side_h_B, side_w_B)


def _box_sides(
    z_B3: torch.Tensor, sizes: list[tuple[int, int]], min_fraction: float, max_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The box's sides as fractions of the height and of the width: z's scale sets the side as a
    fraction of the shorter image side, min + (max − min)·sigmoid(scale)."""
    sizes_B2 = sizes_tensor(sizes, z_B3)
    side_B = min_fraction + (max_fraction - min_fraction) * torch.sigmoid(z_B3[:, 0])
    shorter_B = sizes_B2.min(dim=1).values
    return side_B * shorter_B / sizes_B2[:, 0], side_B * shorter_B / sizes_B2[:, 1]


def _centred_on(
    cy_B: torch.Tensor, cx_B: torch.Tensor, side_h_B: torch.Tensor, side_w_B: torch.Tensor
) -> torch.Tensor:
    """Normalised (y0, x0, y1, x1) boxes of these sides around these centres."""
    return torch.stack(
        [cy_B - side_h_B / 2, cx_B - side_w_B / 2, cy_B + side_h_B / 2, cx_B + side_w_B / 2], dim=1
    )


def centred_boxes(boxes_B4: torch.Tensor) -> torch.Tensor:
    """Boxes of the same size as `boxes_B4`, centred on the image (the hit-rate yardstick)."""
    half_h_B = (boxes_B4[:, 2] - boxes_B4[:, 0]) / 2
    half_w_B = (boxes_B4[:, 3] - boxes_B4[:, 1]) / 2
    return torch.stack([0.5 - half_h_B, 0.5 - half_w_B, 0.5 + half_h_B, 0.5 + half_w_B], dim=1)


# ---------------------------------------------------------------------------------------------
# box → glimpse


def pooling_factor(box_px: list[float], window: int) -> int:
    """Integer area-pooling factor k: how many times the box's shorter pixel side fits the window.

    Pooling by k before sampling keeps a large box from being sampled with gaps (aliasing).
    """
    y0, x0, y1, x1 = box_px
    return max(1, math.floor(min(y1 - y0, x1 - x0) / window))


def support_region(box_px: list[float], k: int) -> tuple[int, int, int, int]:
    """Pooled-pixel range [py0, px0, py1, px1) holding every bilinear tap of a glimpse of the box.

    Samples lie strictly inside the box; a sample at pooled coordinate X (pixel edges at integers)
    taps pooled pixels floor(X − 1/2) and the one after, hence the −1/2 and the +2.
    """
    y0, x0, y1, x1 = (v / k for v in box_px)
    return (
        math.floor(y0 - 0.5),
        math.floor(x0 - 0.5),
        math.floor(y1 - 0.5) + 2,
        math.floor(x1 - 0.5) + 2,
    )


def _sample(
    sources_BCHW: torch.Tensor,
    box_px_B4: torch.Tensor,
    *,
    k_B: torch.Tensor,
    origin_B2: torch.Tensor,
    window: int,
) -> torch.Tensor:
    """Bilinear N×N glimpses of `box_px_B4` (original pixels) from k-pooled source images.

    `origin_B2` is each source's top-left (y, x) in pooled pixels (0 for a whole image); sources
    may carry zero padding at the bottom and right that no bilinear tap reaches. The grid is
    computed in float64 — region-relative coordinates then agree with whole-image ones to ~1e-12
    of a pixel — and cast to the sources' dtype.
    """
    _, _, H, W = sources_BCHW.shape
    box_B4 = box_px_B4.double() / k_B.unsqueeze(1)
    origin_B2 = origin_B2.double()
    steps_N = (torch.arange(window, dtype=torch.float64, device=box_B4.device) + 0.5) / window
    ys_BN = box_B4[:, 0:1] + steps_N * (box_B4[:, 2:3] - box_B4[:, 0:1]) - origin_B2[:, 0:1]
    xs_BN = box_B4[:, 1:2] + steps_N * (box_B4[:, 3:4] - box_B4[:, 1:2]) - origin_B2[:, 1:2]
    # align_corners=False: normalised −1 and +1 are the outer pixel edges.
    gy_BNN = (2 * ys_BN / H - 1).unsqueeze(2).expand(-1, -1, window)
    gx_BNN = (2 * xs_BN / W - 1).unsqueeze(1).expand(-1, window, -1)
    grid_BNN2 = torch.stack([gx_BNN, gy_BNN], dim=-1).to(sources_BCHW.dtype)
    return F.grid_sample(
        sources_BCHW, grid_BNN2, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def _pixel_boxes(boxes_B4: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
    sizes_B2 = sizes_tensor(sizes, boxes_B4)
    return boxes_B4 * sizes_B2.repeat(1, 2)  # (y0·H, x0·W, y1·H, x1·W)


def _pad_stack(sources: list[torch.Tensor]) -> torch.Tensor:
    """Stack C×h×w sources into B×C×H×W, zero-padding each at the bottom and right."""
    H = max(s.shape[1] for s in sources)
    W = max(s.shape[2] for s in sources)
    return torch.stack([F.pad(s, (0, W - s.shape[2], 0, H - s.shape[1])) for s in sources])


@dataclass(frozen=True)
class _Read:
    """How one glimpse is read: pool by k = level · m; the region in the level's pixels."""

    k: int  # total pooling factor
    level: int  # read from the image's ×level pooled level (1: the image)
    region: tuple[int, int, int, int]  # support region in k-cells (pooled pixels)

    @property
    def m(self) -> int:
        """The float average applied after reading the level."""
        return self.k // self.level

    def level_box(self) -> list[int]:
        """The region in the level's pixels: whole k-cells."""
        return [v * self.m for v in self.region]


def plan_read(box_px: list[float], window: int, level: int, *, factor: int | None = None) -> _Read:
    """The pooling factor, level and support region of a glimpse of `box_px` (original pixels):
    the largest usable factor the box's side allows, or `factor` (one `next_factor` gives)."""
    k = pooling_factor(box_px, window) if factor is None else factor
    read_level = level if 1 < level <= k else 1
    k = read_level * (k // read_level)
    return _Read(k=k, level=read_level, region=support_region(box_px, k))


def next_factor(k: int, level: int) -> int:
    """The usable pooling factor after `k`: 1 … level − 1 step by one, then multiples of level."""
    return k + 1 if k < level else k + level


def _blend_weights(
    box_px_B4: torch.Tensor, lower: list[_Read], upper: list[_Read], window: int
) -> torch.Tensor:
    """B×1×1×1 weight of the upper factor's glimpse: where the box's side (in windows) lies
    between the two factors, 0 at the lower one and below it, 1 at the upper one. A function of
    the box, so the scale's gradient includes the change of factor."""
    sides_B = torch.minimum(box_px_B4[:, 2] - box_px_B4[:, 0], box_px_B4[:, 3] - box_px_B4[:, 1])
    lo_B = box_px_B4.new_tensor([r.k for r in lower])
    hi_B = box_px_B4.new_tensor([r.k for r in upper])
    return ((sides_B / window - lo_B) / (hi_B - lo_B)).clamp(0, 1).view(-1, 1, 1, 1)


def _read_pooled(
    reader: RegionReader, reads: list[_Read], *, like: torch.Tensor
) -> list[torch.Tensor]:
    """Each element's region, k-pooled, on `like`'s device and in its dtype.

    Small regions (at most 2N + 2 level pixels a side: k = 1, or read from a level with k = level)
    are read in one call per level; each other one in a call of its own and pooled at once, so
    memory holds one large region rather than B of them. The other elements of a call get empty
    boxes.
    """
    B = len(reads)
    groups: dict[tuple[int, int], list[int]] = {}
    for b, read in enumerate(reads):
        groups.setdefault((read.level, b if read.m > 1 else -1), []).append(b)
    sources: list[torch.Tensor] = [like.new_empty(0)] * B
    for (level, _), group in groups.items():
        boxes_px = [reads[b].level_box() if b in group else [0, 0, 0, 0] for b in range(B)]
        boxes_B4 = torch.tensor(boxes_px, dtype=torch.int64)
        # level 1 keeps the plain call, so readers without pooled levels work unchanged
        regions = (
            reader.read_regions(boxes_B4, level=level)
            if level > 1
            else reader.read_regions(boxes_B4)
        )
        for b in group:
            region_CHW = regions[b].to(device=like.device, dtype=like.dtype)
            m = reads[b].m
            sources[b] = F.avg_pool2d(region_CHW, m) if m > 1 else region_CHW
        del regions, region_CHW  # before the next read, not after it
    return sources


def read_glimpses(
    reader: RegionReader,
    boxes_B4: torch.Tensor,
    window: int,
    *,
    level: int = 1,
    blend: bool = False,
) -> torch.Tensor:
    """B×C×N×N glimpses of normalised boxes, reading only each box's region through `reader`.

    `level` > 1: boxes pooled by k ≥ level read the reader's ×level pooled level (module doc).
    `blend`: the glimpses of the two usable factors around the box's side, mixed by where the
    side lies between them (`_blend_weights`): continuous in the scale, where one factor jumps
    at each change of factor. The glimpses are on `boxes_B4`'s device and in its dtype;
    gradients flow to the boxes.
    """
    box_px_B4 = _pixel_boxes(boxes_B4, reader.image_sizes())
    return _planned_glimpses(
        lambda reads: _read_and_sample(reader, box_px_B4, reads, window, like=boxes_B4),
        box_px_B4,
        window,
        level=level,
        blend=blend,
    )


def _planned_glimpses(
    sample: Callable[[list[_Read]], torch.Tensor],
    box_px_B4: torch.Tensor,
    window: int,
    *,
    level: int,
    blend: bool,
) -> torch.Tensor:
    """`sample`'s glimpses at each box's own factor, or (`blend`) mixed with the next one's."""
    boxes_px = box_px_B4.detach().tolist()
    reads = [plan_read(box_px, window, level) for box_px in boxes_px]
    glimpses = sample(reads)
    if not blend:
        return glimpses
    upper = [
        plan_read(box_px, window, level, factor=next_factor(read.k, level))
        for box_px, read in zip(boxes_px, reads, strict=True)
    ]
    above = sample(upper)
    weights = _blend_weights(box_px_B4, reads, upper, window).to(glimpses.dtype)
    return glimpses + weights * (above - glimpses)


def _read_and_sample(
    reader: RegionReader,
    box_px_B4: torch.Tensor,
    reads: list[_Read],
    window: int,
    *,
    like: torch.Tensor,
) -> torch.Tensor:
    """The glimpses of `box_px_B4` read as `reads` plan."""
    sources = _read_pooled(reader, reads, like=like)
    as_tensor = {"dtype": torch.float64, "device": like.device}
    return _sample(
        _pad_stack(sources),
        box_px_B4,
        k_B=torch.tensor([r.k for r in reads], **as_tensor),
        origin_B2=torch.tensor([r.region[:2] for r in reads], **as_tensor),
        window=window,
    )


def full_image_glimpse(
    images_BCHW: torch.Tensor,
    boxes_B4: torch.Tensor,
    window: int,
    *,
    level: int = 1,
    blend: bool = False,
) -> torch.Tensor:
    """Reference glimpses: the same sampling as `read_glimpses`, over the whole images."""
    _, _, H, W = images_BCHW.shape
    box_px_B4 = _pixel_boxes(boxes_B4, [(H, W)] * images_BCHW.shape[0])
    return _planned_glimpses(
        lambda reads: _sample_whole(images_BCHW, box_px_B4, reads, window, like=boxes_B4),
        box_px_B4,
        window,
        level=level,
        blend=blend,
    )


def _sample_whole(
    images_BCHW: torch.Tensor,
    box_px_B4: torch.Tensor,
    reads: list[_Read],
    window: int,
    *,
    like: torch.Tensor,
) -> torch.Tensor:
    """Each image pooled whole as its read plans, then sampled (the reference path)."""
    as_tensor = {"dtype": torch.float64, "device": like.device}
    glimpses = []
    for image_CHW, box_px_4, read in zip(images_BCHW, box_px_B4, reads, strict=True):
        source_CHW = image_CHW.to(like.dtype)
        if read.level > 1:
            source_CHW = pool_level(source_CHW, read.level)
        if read.m > 1:
            # Pad to whole pooling cells with zeros, as a region reader does past the image.
            h, w = source_CHW.shape[1:]
            source_CHW = F.avg_pool2d(F.pad(source_CHW, (0, -w % read.m, 0, -h % read.m)), read.m)
        k_1 = torch.tensor([read.k], **as_tensor)
        origin_12 = torch.zeros(1, 2, **as_tensor)
        glimpses.append(
            _sample(source_CHW[None], box_px_4[None], k_B=k_1, origin_B2=origin_12, window=window)
        )
    return torch.cat(glimpses, dim=0)


def centres_inside(boxes_T4: torch.Tensor, objects_N4: torch.Tensor) -> torch.Tensor:
    """T×N: whether glimpse box t holds the centre of object n (both normalised (y0, x0, y1, x1));
    what a glimpse "hit" means throughout (hit-rate, per-glimpse object targets)."""
    cy_N = (objects_N4[:, 0] + objects_N4[:, 2]) / 2
    cx_N = (objects_N4[:, 1] + objects_N4[:, 3]) / 2
    y0, x0, y1, x1 = (boxes_T4[:, i : i + 1] for i in range(4))  # each T×1
    return (y0 <= cy_N) & (cy_N < y1) & (x0 <= cx_N) & (cx_N < x1)
