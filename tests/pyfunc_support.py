"""Helpers for the model-input tests: a tiny saccader saved as an MLflow pyfunc (no Ray, no
registry) and prediction requests tiled from image files, as `jobs.predict --images` makes them.

A model made with `reads="full"` never reads the stored pooled level (`pooled_level=1`), one with
`reads="level"` reads only the level: its boxes span the whole image (fraction 1), 64 px = 8
windows of 8 px, pooled by k = 8 = the level's factor. Either way every box touches every tile
of a 64-px image, so a tile that reaches the model damaged fails the prediction.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from jobs.core.packaging import save_pyfunc
from jobs.ops.prediction import tile_image_files
from jobs.training.recipes import DataSpec, build_model, make_recipe

SIDE = 64  # image side, px
TILE = 16  # full-resolution tile side: 16 tiles per image; the ×8 level is one 8×8 tile
READS = {"full": "1", "level": "8"}  # the model's pooled_level for each kind of read


def save_tiny_pyfunc(path: Path, *, reads: str, example: pa.Table, channels: int = 3) -> None:
    """A tiny saccader (3 classes) reading `reads` ("full" or "level") tiles, saved at `path`."""
    overrides = {
        "model_cfg.pooled_level": READS[reads],
        "model_cfg.min_image_fraction": "1.0",
        "model_cfg.max_image_fraction": "1.0",
    }
    config = make_recipe("tiny_cpu", "unused", overrides)
    data = DataSpec(num_classes=3, class_names=["a", "b", "c"], channels=channels)
    torch.manual_seed(0)
    model = build_model(config, data)
    state = {"model": model.state_dict(), "train": config.to_dict(), "data": data.to_dict()}
    save_pyfunc(state, example, str(path))


def solid_image(value: int, channels: int = 3) -> np.ndarray:
    """A SIDE × SIDE image of one grey value (0: all black, 255: all white)."""
    return np.full((SIDE, SIDE, channels), value, dtype=np.uint8)


def image_requests(folder: Path, images: dict[str, np.ndarray], tile_format: str) -> pa.Table:
    """Prediction requests for `images` (name → uint8 HWC array) written as PNG files into
    `folder`, tiled with `tile_format` (the level is raw whatever the format)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for name, pixels in images.items():
        grey = pixels.shape[2] == 1
        Image.fromarray(pixels[:, :, 0] if grey else pixels).save(folder / name, format="PNG")
        items.append({"url": str(folder / name), "ref": name})
    return tile_image_files(
        pa.Table.from_pylist(items),
        tile_size=TILE,
        tile_format=tile_format,
        proxy_max_side=16,
        channels=3,
    )


def free_port() -> int:
    """A loopback port nothing listens on (the OS's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answers(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    """Until the server `process` started answers 200 at `url` (its /ping or /health)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args} exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:  # refused, reset, timed out: not up yet
            time.sleep(0.5)
    raise TimeoutError(f"nothing answered on {url} in {timeout_s} s")
