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
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class RegionReader(Protocol):
    """A batch of original images read region by region (the images need never be whole)."""

    def image_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each batch element."""
        ...

    def read_regions(self, boxes_B4: torch.Tensor) -> list[torch.Tensor]:
        """Read box b of image b.

        boxes_B4: int64 [y0, x0, y1, x1], half-open pixel ranges, may extend outside the image
        (outside pixels are zeros). Returns one float32 C×(y1−y0)×(x1−x0) tensor in [0, 1] per
        element.
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

    def read_regions(self, boxes_B4: torch.Tensor) -> list[torch.Tensor]:
        _, C, H, W = self.images_BCHW.shape
        regions = []
        for image_CHW, (y0, x0, y1, x1) in zip(self.images_BCHW, boxes_B4.tolist(), strict=True):
            region_CHW = image_CHW.new_zeros(C, y1 - y0, x1 - x0)
            ys, ye, xs, xe = max(y0, 0), min(y1, H), max(x0, 0), min(x1, W)
            if ys < ye and xs < xe:
                region_CHW[:, ys - y0 : ye - y0, xs - x0 : xe - x0] = image_CHW[:, ys:ye, xs:xe]
            regions.append(region_CHW)
        return regions


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
    sizes_B2 = sizes_tensor(sizes, z_B3)
    side_B = min_fraction + (max_fraction - min_fraction) * torch.sigmoid(z_B3[:, 0])
    shorter_B = sizes_B2.min(dim=1).values
    side_h_B = side_B * shorter_B / sizes_B2[:, 0]  # fraction of the height
    side_w_B = side_B * shorter_B / sizes_B2[:, 1]  # fraction of the width
    cx_B = 0.5 + (0.5 - side_w_B / 2) * torch.tanh(z_B3[:, 1])
    cy_B = 0.5 + (0.5 - side_h_B / 2) * torch.tanh(z_B3[:, 2])
    return torch.stack(
        [cy_B - side_h_B / 2, cx_B - side_w_B / 2, cy_B + side_h_B / 2, cx_B + side_w_B / 2], dim=1
    )


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
    sizes_B2 = sizes_tensor(sizes, z_B3)
    side_B = min_fraction + (max_fraction - min_fraction) * torch.sigmoid(z_B3[:, 0])
    shorter_B = sizes_B2.min(dim=1).values
    side_h_B = side_B * shorter_B / sizes_B2[:, 0]
    side_w_B = side_B * shorter_B / sizes_B2[:, 1]
    cx_B = torch.minimum(torch.maximum((z_B3[:, 1] + 1) / 2, side_w_B / 2), 1 - side_w_B / 2)
    cy_B = torch.minimum(torch.maximum((z_B3[:, 2] + 1) / 2, side_h_B / 2), 1 - side_h_B / 2)
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


def _read_pooled(
    reader: RegionReader, regions_px: list[list[int]], ks: list[int], *, like: torch.Tensor
) -> list[torch.Tensor]:
    """Each element's region, k-pooled, on `like`'s device and in its dtype.

    The small regions (k = 1, at most 2N + 2 px a side) are read in one call; each pooled one
    (k ≥ 2) in a call of its own and pooled at once, so memory holds one full-resolution region
    rather than B of them. The other elements of such a call get empty boxes.
    """
    B = len(ks)
    small = [b for b in range(B) if ks[b] == 1]
    groups = ([small] if small else []) + [[b] for b in range(B) if ks[b] > 1]
    sources: list[torch.Tensor] = [like.new_empty(0)] * B
    for group in groups:
        boxes_px = [regions_px[b] if b in group else [0, 0, 0, 0] for b in range(B)]
        regions = reader.read_regions(torch.tensor(boxes_px, dtype=torch.int64))
        for b in group:
            region_CHW = regions[b].to(device=like.device, dtype=like.dtype)
            sources[b] = F.avg_pool2d(region_CHW, ks[b]) if ks[b] > 1 else region_CHW
        del regions, region_CHW  # before the next read, not after it
    return sources


def read_glimpses(reader: RegionReader, boxes_B4: torch.Tensor, window: int) -> torch.Tensor:
    """B×C×N×N glimpses of normalised boxes, reading only each box's region through `reader`.

    The glimpses are on `boxes_B4`'s device and in its dtype; gradients flow to the boxes.
    """
    box_px_B4 = _pixel_boxes(boxes_B4, reader.image_sizes())
    ks, origins, regions_px = [], [], []
    for box_px in box_px_B4.detach().tolist():
        k = pooling_factor(box_px, window)
        region = support_region(box_px, k)
        ks.append(k)
        origins.append(region[:2])
        regions_px.append([v * k for v in region])  # whole pooling cells, in original pixels
    sources = _read_pooled(reader, regions_px, ks, like=boxes_B4)
    as_tensor = {"dtype": torch.float64, "device": boxes_B4.device}
    return _sample(
        _pad_stack(sources),
        box_px_B4,
        k_B=torch.tensor(ks, **as_tensor),
        origin_B2=torch.tensor(origins, **as_tensor),
        window=window,
    )


def full_image_glimpse(
    images_BCHW: torch.Tensor, boxes_B4: torch.Tensor, window: int
) -> torch.Tensor:
    """Reference glimpses: the same sampling as `read_glimpses`, over the whole images."""
    _, _, H, W = images_BCHW.shape
    box_px_B4 = _pixel_boxes(boxes_B4, [(H, W)] * images_BCHW.shape[0])
    as_tensor = {"dtype": torch.float64, "device": boxes_B4.device}
    glimpses = []
    for image_CHW, box_px_4 in zip(images_BCHW, box_px_B4, strict=True):
        k = pooling_factor(box_px_4.tolist(), window)
        source_1CHW = image_CHW.to(boxes_B4.dtype).unsqueeze(0)
        if k > 1:
            # Pad to whole pooling cells with zeros, as a region reader does past the image.
            source_1CHW = F.avg_pool2d(F.pad(source_1CHW, (0, -W % k, 0, -H % k)), k)
        k_1 = torch.tensor([k], **as_tensor)
        origin_12 = torch.zeros(1, 2, **as_tensor)
        glimpses.append(
            _sample(source_1CHW, box_px_4[None], k_B=k_1, origin_B2=origin_12, window=window)
        )
    return torch.cat(glimpses, dim=0)
