"""Shared helpers for the benchmarks: header, timing, tables, JSON, photo-like test images, and
the per-request inference measurement (latency and working-set memory from encoded tiles)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image, ImageDraw


def machine() -> dict[str, Any]:
    """CPU model, usable cores and versions: what a reader needs to compare two runs."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),  # what nproc prints: the cores we may use
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def header(name: str, argv: Sequence[str]) -> dict[str, Any]:
    """Print the run's header (command, UTC date, machine) and return it for the JSON file."""
    info = {
        "benchmark": name,
        "command": " ".join(["python -m jobs.benchmark", name, *argv]),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
    }
    m = info["machine"]
    print(f"$ {info['command']}")
    print(f"date: {info['date_utc']}")
    print(
        f"machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, Pillow {m['pillow']}, "
        f"numpy {m['numpy']}; load average (1 min) at start {m['load_average_1m']}"
    )
    return info


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_ms(seconds: Sequence[float]) -> float:
    """Median of durations in seconds, in milliseconds."""
    return 1000 * statistics.median(seconds)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pastes straight into BENCHMARKS.md); floats get 3 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in text
    ]
    return "\n".join(lines)


def goal(name: str, value: float, target: float, unit: str) -> dict[str, Any]:
    """Print one PASS/FAIL line for a ≥ goal and return it for the JSON file."""
    ok = value >= target
    print(f"goal {name}: {value:.3g}{unit} (goal >= {target:g}{unit}): {'PASS' if ok else 'FAIL'}")
    return {"name": name, "value": value, "target": target, "pass": ok}


def write_json(path: str | None, figures: dict[str, Any]) -> None:
    """Write the figures to ``path`` when one was given."""
    if path:
        Path(path).write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        print(f"figures written to {path}", file=sys.stderr)


def photo_like(height: int, width: int, seed: int) -> np.ndarray:
    """A uint8 RGB image that compresses like a camera photo, not like flat colour.

    Smooth colour gradients (sky, walls), mid-frequency texture (foliage, fabric), flat-ish objects
    with hard edges, and sensor-like noise: a 4000×3000 one is ~3–4 MB as JPEG q90, within the
    range of 12 MP phone photos.
    """
    rng = np.random.default_rng(seed)

    def smooth(cells_h: int, cells_w: int) -> Image.Image:
        cells = rng.integers(0, 256, (cells_h, cells_w, 3), dtype=np.uint8)
        return Image.fromarray(cells).resize((width, height), Image.BICUBIC)

    pil = Image.blend(smooth(3, 4), smooth(height // 6, width // 6), 0.35)
    pil = Image.blend(pil, smooth(height // 2, width // 2), 0.15)
    draw = ImageDraw.Draw(pil)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = (
            int(rng.integers(width // 40, width // 5)),
            int(rng.integers(height // 40, height // 5)),
        )
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.integers(2) else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=colour, outline=(0, 0, 0), width=3)
    array = np.asarray(pil).astype(np.int16)
    array += rng.integers(-6, 7, array.shape, dtype=np.int16)
    return array.clip(0, 255).astype(np.uint8)


def jpeg_bytes(array_HWC: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB array as a JPEG file in memory (what a camera writes)."""
    out = io.BytesIO()
    Image.fromarray(array_HWC).save(out, format="JPEG", quality=quality)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Inference from encoded tiles: one request at a time, each in a worker process of its own

# A fixed mmap threshold returns every large freed block to the kernel at once (glibc's dynamic
# threshold would keep them resident), so the resident set follows live memory.
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def worker_json(cmd: Sequence[str], what: str) -> dict[str, Any]:
    """Run a measuring worker process (``WORKER_ENV`` set) and return the JSON object it prints
    last; a failure raises with the worker's stderr."""
    done = subprocess.run(
        list(cmd), capture_output=True, text=True, check=False, env={**os.environ, **WORKER_ENV}
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_kb() -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident set of this process, in kB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            fields[key] = int(value.split()[0])
    return fields


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the kernel (glibc `malloc_trim`), so that the
    resident set is live memory and memory reused by the next run counts again."""
    # Not glibc (no malloc_trim): the resident set then includes free heap pages.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_memory() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ≥ 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def infer_stored(model: Any, rows: Sequence[dict[str, Any]], threads: int) -> tuple[Any, list[int]]:
    """One request from stored rows (``{"tiled": TiledImage, "proxy": encoded bytes}``) to the
    model's prediction, through a fresh region reader; returns the prediction and the tiles
    decoded per image (full resolution and level). The reader and its tile cache go with the
    call, so two requests never hold two caches."""
    # Imported here: this module serves the data benchmarks too, which never load torch.
    import torch

    from model.interface import Batch
    from pipelines.region import TileRegionReader
    from pipelines.tiling import decode_proxy

    reader = TileRegionReader([r["tiled"] for r in rows], threads=threads)
    proxies_BHWC = np.stack([decode_proxy(r["proxy"]) for r in rows])
    proxy_BCHW = torch.from_numpy(proxies_BHWC).permute(0, 3, 1, 2).float() / 255
    labels_B = torch.zeros(len(rows), dtype=torch.int64)
    prediction = model.predict(Batch(proxy_BCHW=proxy_BCHW, labels_B=labels_B, reader=reader))
    return prediction, reader.tiles_decoded_by_image


def time_inference(
    model: Any, rows: Sequence[dict[str, Any]], *, threads: int, repeats: int, max_seconds: float
) -> dict[str, Any]:
    """Median latency per image and the working set of requests of ``len(rows)`` images.

    A warm-up request pays lazy initialisation and per-shape kernel caches (per process, not per
    request); then free heap pages go back to the kernel and the peak-RSS mark is reset, so the
    peak minus the resident set at that moment is what the timed requests needed. Requests repeat
    until ``repeats`` ran or they took ``max_seconds`` (at least one).
    """
    infer_stored(model, rows, threads)
    gc.collect()
    release_free_memory()
    exact_peak = reset_peak_memory()
    before = memory_kb()
    times: list[float] = []
    while len(times) < repeats and sum(times) < max_seconds:
        start = time.perf_counter()
        _, decoded = infer_stored(model, rows, threads)
        times.append(time.perf_counter() - start)
    after = memory_kb()
    return {
        "ms_per_image": 1000 * statistics.median(times) / len(rows),
        "runs": len(times),
        "peak_mb": (after["VmHWM"] - (before["VmRSS"] if exact_peak else 0)) / 1024,
        "peak_is_working_set": exact_peak,
        "tiles_decoded_per_image": sum(decoded) / len(rows),
    }
