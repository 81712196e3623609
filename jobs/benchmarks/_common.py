"""Shared helpers for the benchmarks: header, timing, tables, JSON, photo-like test images."""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
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
