"""Region-read benchmark (issue 2): ``python -m jobs.benchmark region [--reads 40] [--json FILE]``.

For a 2528×2528 grey cluttered-MNIST image (png tiles) and a 4000×3000 photo-like RGB image (jpeg
tiles q90, tiled by ``pipelines.photos``), read the pixel region a 64-px glimpse needs — the box
plus bilinear support, in whole pooling cells, from the stored ×8 pooled level when the box is at
least 8 windows wide, exactly as ``model.glimpse.read_glimpses`` asks for it with the model's
default ``pooled_level`` — at seeded random positions, through a fresh ``TileRegionReader`` per
read (no cache hits), and compare with decoding the whole image: all its tiles, and for the photo
also one decode of the original JPEG file. The same boxes read without the level (the model with
``pooled_level=1``) are timed beside. Box sides are fractions of the shorter image side; 0.3 is
the model's maximum.
Goal: a region read at the maximum box >= 20× faster than a full decode.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from jobs.benchmarks._common import goal, header, jpeg_bytes, photo_like, table, timed, write_json
from model.config import SaccaderConfig
from model.glimpse import plan_read
from pipelines.codec import decode_full
from pipelines.digits import load_digits
from pipelines.photos import tile_encoded_image
from pipelines.pyramid import LEVEL_FACTOR
from pipelines.region import TiledImage, TileRegionReader
from pipelines.synthetic import ClutteredMnistConfig, generate_cluttered, sample_rng

WINDOW = 64  # glimpse window W (MODEL.md)
LEVEL = SaccaderConfig(num_classes=2, in_channels=1).pooled_level  # the model's default
TILE_SIZE = 256
MAX_FRACTION = 0.3  # the model's maximum box side, a fraction of the shorter side
SPEEDUP_GOAL = 20.0
# Box sides to sweep: fractions of the shorter side, then the smallest box (one window).
FRACTIONS: tuple[float | str, ...] = (0.3, 0.2, 0.15, 0.1, 0.05, "64 px")


@dataclass(frozen=True)
class Subject:
    """An image under test and its whole-image decodes (name → callable)."""

    name: str
    image: TiledImage
    full_decodes: dict[str, Callable[[], Any]]
    reference: str  # which full decode the goal is measured against


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.benchmark region",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--reads", type=int, default=40, help="random box positions per box size")
    p.add_argument("--full-repeats", type=int, default=10, help="timed whole-image decodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = p.parse_args(argv)
    if args.reads < 1 or args.full_repeats < 1:
        p.error("--reads and --full-repeats must be >= 1")
    return args


def all_tiles(image: TiledImage) -> Callable[[], np.ndarray]:
    return lambda: decode_full(
        list(image.tiles),
        height=image.height,
        width=image.width,
        channels=image.channels,
        tile_size=image.tile_size,
        tile_format=image.tile_format,
    )


def cluttered_subject(seed: int) -> Subject:
    config = ClutteredMnistConfig(original_size=2528)
    sample = generate_cluttered(config, load_digits(), sample_rng(seed, "test", 0))
    image = TiledImage.from_array(sample.image, tile_size=TILE_SIZE, tile_format="png")
    return Subject(
        "cluttered_mnist 2528×2528 grey, png tiles",
        image,
        {"all tiles": all_tiles(image)},
        reference="all tiles",
    )


def photo_subject(seed: int) -> Subject:
    data = jpeg_bytes(photo_like(3000, 4000, seed), quality=90)
    image = tile_encoded_image(data, tile_size=TILE_SIZE, tile_format="jpeg").tiled_image()

    def whole_jpeg() -> Image.Image:
        pil = Image.open(io.BytesIO(data))
        pil.load()  # the decode alone, no numpy copy: the cheapest full decode there is
        return pil

    return Subject(
        "photo-like 4000×3000 RGB, jpeg tiles q90",
        image,
        {"all tiles": all_tiles(image), "original JPEG": whole_jpeg},
        reference="original JPEG",
    )


def box_side(fraction: float | str, image: TiledImage) -> float:
    shorter = min(image.height, image.width)
    return float(WINDOW) if isinstance(fraction, str) else fraction * shorter


def glimpse_regions(
    image: TiledImage, side: float, n: int, seed: int, *, level: int = LEVEL
) -> list[tuple[int, list[int]]]:
    """(level, region in that level's pixels) that read_glimpses asks for, for n boxes of
    ``side`` px inside the image, with the model's ``pooled_level`` = ``level``."""
    rng = np.random.default_rng(seed)
    regions = []
    for y0, x0 in zip(
        rng.uniform(0, image.height - side, n), rng.uniform(0, image.width - side, n), strict=True
    ):
        read = plan_read([float(y0), float(x0), float(y0) + side, float(x0) + side], WINDOW, level)
        regions.append((read.level, read.level_box()))
    return regions


def time_reads(
    image: TiledImage, regions: list[tuple[int, list[int]]], threads: int
) -> tuple[float, float]:
    """(median seconds, mean tiles decoded) of reads through a fresh reader each."""
    seconds, tiles = [], []
    for level, region in regions:
        reader = TileRegionReader([image], threads=threads)
        box = np.asarray([region])
        seconds.append(timed(lambda r=reader, b=box, v=level: r.read_regions_numpy(b, level=v))[0])
        tiles.append(reader.tiles_decoded)
    return statistics.median(seconds), float(np.mean(tiles))


def measure(subject: Subject, args: argparse.Namespace) -> dict[str, Any]:
    full = {}
    for name, fn in subject.full_decodes.items():
        fn()  # warm-up
        full[name] = statistics.median(timed(fn)[0] for _ in range(args.full_repeats))
    rows = []
    for i, fraction in enumerate(FRACTIONS):
        side = box_side(fraction, subject.image)
        regions = glimpse_regions(subject.image, side, args.reads, args.seed + i)
        seconds, tiles = time_reads(subject.image, regions, threads=1)
        # the same boxes without the pooled level (pooled_level = 1): full-resolution regions
        plain = glimpse_regions(subject.image, side, args.reads, args.seed + i, level=1)
        plain_seconds, plain_tiles = time_reads(subject.image, plain, threads=1)
        level, region = regions[0]
        read = plan_read([0, 0, side, side], WINDOW, LEVEL)
        rows.append(
            {
                "box": fraction if isinstance(fraction, str) else f"{fraction:.0%}",
                "fraction": fraction,
                "box_px": side,
                "k": read.k,
                "level": level,
                "region_px": region[2] - region[0],
                "tiles": tiles,
                "tiles_of": len(subject.image.level_tiles if level > 1 else subject.image.tiles),
                "read_ms": 1000 * seconds,
                "full_res_tiles": plain_tiles,
                "full_res_read_ms": 1000 * plain_seconds,
                "speedup": {name: t / seconds for name, t in full.items()},
            }
        )
    return {
        "name": subject.name,
        "full_ms": {k: 1000 * v for k, v in full.items()},
        "reference": subject.reference,
        "rows": rows,
    }


def report(result: dict[str, Any]) -> list[dict[str, Any]]:
    full = result["full_ms"]
    print(
        f"\n## {result['name']}\nfull decode, median ms: "
        + ", ".join(f"{k} {v:.1f}" for k, v in full.items())
    )
    headers = [
        "box side",
        "box px",
        "pool k",
        "level",
        "region px",
        "tiles read",
        "read ms",
        "without level: tiles",
        "without level: ms",
        *(f"× vs {k}" for k in full),
    ]
    print(
        table(
            headers,
            [
                [
                    r["box"],
                    r["box_px"],
                    r["k"],
                    f"×{r['level']}" if r["level"] > 1 else "full",
                    r["region_px"],
                    f"{r['tiles']:.1f}/{r['tiles_of']}",
                    r["read_ms"],
                    f"{r['full_res_tiles']:.1f}",
                    r["full_res_read_ms"],
                    *(r["speedup"][k] for k in full),
                ]
                for r in result["rows"]
            ],
        )
    )
    ref = result["reference"]
    reaching = [r["box"] for r in result["rows"] if r["speedup"][ref] >= SPEEDUP_GOAL]
    print(f"box sides reaching {SPEEDUP_GOAL:g}× against {ref}: {', '.join(reaching) or 'none'}")
    at_max = next(r for r in result["rows"] if r["fraction"] == MAX_FRACTION)
    return [
        goal(
            f"{result['name']}: region at {MAX_FRACTION:.0%} box vs {ref}",
            at_max["speedup"][ref],
            SPEEDUP_GOAL,
            "×",
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    figures: dict[str, Any] = header("region", list(argv or []))
    start = time.perf_counter()
    print(
        f"glimpse window {WINDOW} px, {TILE_SIZE}-px tiles, {args.reads} random positions per "
        f"box size, a fresh TileRegionReader per read (1 thread); boxes of >= {LEVEL} windows "
        f"read the stored ×{LEVEL_FACTOR} level"
    )
    figures["subjects"], figures["goals"] = [], []
    for make in (cluttered_subject, photo_subject):
        result = measure(make(args.seed), args)
        figures["subjects"].append(result)
        figures["goals"] += report(result)
    figures["seconds"] = time.perf_counter() - start
    print(f"\ntotal {figures['seconds']:.0f} s")
    write_json(args.json, figures)
    missed = not all(g["pass"] for g in figures["goals"])
    return 1 if args.check and missed else 0
