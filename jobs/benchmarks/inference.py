"""Inference benchmark (issue 3): per-image latency and peak memory of the saccader against the
every-pixel baseline (b) and the resize-224 baseline (a), on images stored as tiles.

    python -m jobs.benchmark inference [--quick] [--json FILE]

Images: cluttered-MNIST canvases at 2528×2528 grey in PNG tiles and photo-like 4000×3000 RGB in
JPEG tiles (q90), 256 px, held encoded in memory as dataset rows are, each with its stored PNG
proxy (longer side 64). Every timed run starts from the encoded tiles and a fresh region reader, so
decoding is part of the latency: the saccader decodes the tiles under its T = 4 boxes (W = 64),
(b) every tile (224-px patches, 16 per forward pass), (a) every tile plus the resize to 224. Weights
are untrained: latency does not depend on them (the saccader's boxes then sit mid-sized near the
centre, as trained ones may not).

Each (image, batch, model) runs in a fresh subprocess. Peak memory is the working set of the timed
runs: after a warm-up run on the same batch, free heap pages go back to the kernel (malloc_trim)
and its peak-RSS mark is reset; the peak minus the resident set at that moment is reported (glibc
is also told to unmap large freed blocks at once, so the resident set follows live memory).
Goal: the saccader ≥ 20× faster and ≥ 10× less peak memory than (b).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.benchmarks._common import (
    goal,
    header,
    photo_like,
    table,
    time_inference,
    worker_json,
    write_json,
)

IMAGES = {  # name: (height, width, channels, tile format)
    "2528×2528 grey": (2528, 2528, 1, "png"),
    "4000×3000 RGB": (3000, 4000, 3, "jpeg"),
}
MODELS = {  # label: registered model name
    "saccader": "saccader",
    "(b) patches": "resnet18_patches",
    "(a) resize224": "resnet18_resize224",
}
TILE_SIZE, PROXY_SIDE = 256, 64
SPEED_GOAL, MEMORY_GOAL = 20.0, 10.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jobs.benchmark inference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes")
    p.add_argument("--images", nargs="+", choices=list(IMAGES), default=list(IMAGES))
    p.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (median)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="stop repeating once a configuration's timed runs took this long (at least 1 run)",
    )
    p.add_argument("--quick", action="store_true", help="1 timed run per configuration")
    p.add_argument("--threads", type=int, default=2, help="torch and tile-decoding threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)  # DATA IMAGE MODEL BATCH
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if args.repeats < 1 or min(args.batches) < 1:
        p.error("--repeats and --batches must be >= 1")
    return args


# ---------------------------------------------------------------------------------------------
# data: made once by the driver, read by every worker


def make_images(name: str, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` images of kind `name` as stored rows: encoded tiles and an encoded proxy."""
    # Imported here (and torch in the workers): the driver that spawns the workers never
    # loads torch, which pipelines.region imports.
    from pipelines.digits import load_digits
    from pipelines.region import TiledImage
    from pipelines.synthetic import ClutteredMnistConfig, generate_cluttered, sample_rng
    from pipelines.tiling import encode_proxy, make_proxy

    height, width, _, tile_format = IMAGES[name]
    digits = load_digits() if tile_format == "png" else None
    rows = []
    for i in range(count):
        if digits is not None:
            config = ClutteredMnistConfig(original_size=height)
            image_HWC = generate_cluttered(config, digits, sample_rng(seed, "test", i)).image
        else:
            image_HWC = photo_like(height, width, seed + i)
        tiled = TiledImage.from_array(image_HWC, tile_size=TILE_SIZE, tile_format=tile_format)
        proxy = encode_proxy(make_proxy(image_HWC, max_side=PROXY_SIDE))
        rows.append({"tiled": tiled, "proxy": proxy})
    return rows


# ---------------------------------------------------------------------------------------------
# worker: one configuration, in its own process


def run_worker(data_file: str, image: str, model_label: str, batch: int, args: Any) -> dict:
    import torch

    from model.variants import create_model  # torch: in the worker only, as above

    torch.set_num_threads(args.threads)
    rows = pickle.loads(Path(data_file).read_bytes())[:batch]
    channels = IMAGES[image][2]
    torch.manual_seed(0)
    model = create_model(MODELS[model_label], num_classes=10, in_channels=channels).eval()
    timed = time_inference(
        model, rows, threads=args.threads, repeats=args.repeats, max_seconds=args.max_seconds
    )
    return {
        "image": image,
        "model": model_label,
        "batch": batch,
        **timed,
        "tiles_per_image": len(rows[0]["tiled"].tiles),
    }


# ---------------------------------------------------------------------------------------------
# driver


def run_config(data_file: str, image: str, model_label: str, batch: int, args: Any) -> dict:
    cmd = [sys.executable, "-m", "jobs.benchmarks.inference", "--worker", data_file, image]
    cmd += [model_label, str(batch), "--repeats", str(args.repeats)]
    cmd += ["--max-seconds", str(args.max_seconds), "--threads", str(args.threads)]
    return worker_json(cmd, f"{image} / {model_label} / {batch}")


def report(results: list[dict]) -> list[dict[str, Any]]:
    """Print the table and the goals; return the goals."""
    rows, goals = [], []
    for r in results:
        b = next(
            x
            for x in results
            if (x["image"], x["batch"], x["model"]) == (r["image"], r["batch"], "(b) patches")
        )
        r["speedup_vs_b"] = b["ms_per_image"] / r["ms_per_image"]
        r["memory_ratio_vs_b"] = b["peak_mb"] / max(r["peak_mb"], 1e-3)
        tiles = f"{r['tiles_decoded_per_image']:.0f}/{r['tiles_per_image']}"
        rows.append(
            [
                r["image"],
                r["batch"],
                r["model"],
                r["ms_per_image"],
                r["peak_mb"],
                r["runs"],
                tiles,
                r["speedup_vs_b"],
                r["memory_ratio_vs_b"],
            ]
        )
        if r["model"] == "saccader":
            where = f"{r['image']}, batch {r['batch']}"
            goals.append(goal(f"{where}: (b) ms / saccader ms", r["speedup_vs_b"], SPEED_GOAL, "×"))
            goals.append(
                goal(f"{where}: (b) MB / saccader MB", r["memory_ratio_vs_b"], MEMORY_GOAL, "×")
            )
    headers = [
        "image",
        "batch",
        "model",
        "ms/image",
        "peak MB",
        "runs",
        "tiles decoded",
        "(b)÷this time",
        "(b)÷this memory",
    ]
    print(table(headers, rows))
    return goals


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        data_file, image, model_label, batch = args.worker
        print(json.dumps(run_worker(data_file, image, model_label, int(batch), args)))
        return 0
    figures: dict[str, Any] = header("inference", list(argv or []))
    print(
        f"torch threads {args.threads}; up to {args.repeats} timed runs (median) per row, "
        f"{args.max_seconds:g} s cap; peak MB = working set of the timed runs"
    )
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for image in args.images:
            data_file = os.path.join(directory, "images.pkl")
            rows = make_images(image, max(args.batches), args.seed)
            Path(data_file).write_bytes(pickle.dumps(rows))
            del rows
            for batch in args.batches:
                for model_label in MODELS:
                    results.append(run_config(data_file, image, model_label, batch, args))
                    r = results[-1]
                    print(
                        f"  {image}, batch {batch}, {model_label}: "
                        f"{r['ms_per_image']:.1f} ms/image, {r['peak_mb']:.0f} MB",
                        file=sys.stderr,
                        flush=True,
                    )
    figures["results"] = results
    figures["goals"] = report(results)
    figures["seconds"] = time.perf_counter() - start
    print(f"total {figures['seconds']:.0f} s")
    write_json(args.json, figures)
    missed = not all(g["pass"] for g in figures["goals"])
    return 1 if args.check and missed else 0


if __name__ == "__main__":  # the workers: python -m jobs.benchmarks.inference --worker ...
    sys.exit(main())
