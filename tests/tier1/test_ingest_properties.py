"""Tier 1, property-based (hypothesis): whatever a photo folder or a labels file holds, the DSLR
ingest stages (listing → hashing → duplicates → tiling, the functions Ray composes) turn every
input into a row or a reject with a reason. Random bytes, truncated and mutated real images (PNG,
JPEG, TIFF, BMP, GIF, small, in several modes), odd and undecodable names, FIFOs, and labels
files with arbitrary paths: never an exception, never a hang (a watchdog fails the example)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from dslr_support import run_stages
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines.dslr import (
    DslrConfig,
)
from pipelines.inputs import printable
from pipelines.tiling import REJECT_REASON, REJECT_REF

HANG_S = 10  # one example's stages take well under a second; more than this is a hang
# Small limits keep each example fast; a mutated header claiming a huge image meets the guard.
CONFIG = {"max_pixels": 200_000, "proxy_max_side": 8}
SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI failure reproduces locally
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FORMATS = {"PNG": ("RGB", "L", "RGBA", "P", "I;16"), "JPEG": ("RGB", "L", "CMYK")}
FORMATS |= {"TIFF": ("RGB", "L", "1"), "BMP": ("RGB", "P"), "GIF": ("P", "L")}


@st.composite
def real_images(draw: st.DrawFn) -> bytes:
    """A small, valid encoded image of a random format, mode and size."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    pixels = np.random.default_rng(draw(st.integers(0, 2**16))).integers(
        0, 256, (height, width, 3), np.uint8
    )
    image = Image.fromarray(pixels, "RGB")
    image = image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    data = draw(real_images())
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real image with a few bytes overwritten (headers included) or a run of bytes removed."""
    data = bytearray(draw(real_images()))
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data) - 1))
        del data[start : start + draw(st.integers(1, 64))]
    return bytes(data)


CONTENTS = st.one_of(
    st.binary(max_size=512),
    real_images(),
    truncated(),
    mutated(),
    st.just(b""),
    st.just("FIFO"),  # a special file: listed with its reason, never opened
)
# Names: any characters a POSIX name may hold, spaces, newlines, dashes, percent signs, emoji.
NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=40,
).filter(lambda name: name not in (".", "..") and len(name.encode()) < 200)
RAW_NAMES = st.binary(min_size=1, max_size=30).filter(
    lambda name: b"/" not in name and b"\x00" not in name and name not in (b".", b"..")
)


@contextlib.contextmanager
def watchdog(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: a blocked open() or read() is interrupted by the alarm."""

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"the ingest stages hung for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def ingest(cfg: DslrConfig) -> tuple[pa.Table, int]:
    """The DSLR stages without Ray, in 16-px png tiles, under the hang watchdog."""
    with watchdog(HANG_S):
        staged, _, listed = run_stages(cfg, tile_size=16, tile_format="png")
    return staged, listed


def assert_row_or_reject(staged: pa.Table, refs: set[str]) -> None:
    """Every input is exactly one row: an image with its label and tiles, or a reject with a
    non-empty reason, under the name it was given."""
    assert staged.num_rows == len(refs)
    seen = set()
    for row in staged.to_pylist():
        if row[REJECT_REASON] is None:
            assert row["label"] is not None and row["tiles"] and row["proxy"], row["image_id"]
            seen.add(json.loads(row["meta"])["path"])
        else:
            assert isinstance(row[REJECT_REASON], str) and row[REJECT_REASON].strip()
            seen.add(row[REJECT_REF])
    assert seen == refs


def write(root: Path, name: bytes, content: bytes | str) -> None:
    path = os.path.join(os.fsencode(root), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if content == "FIFO":
        os.mkfifo(path)
    else:
        with open(path, "wb") as f:
            f.write(content)


@settings(SETTINGS, max_examples=300)
@given(files=st.lists(CONTENTS, min_size=1, max_size=4))
def test_any_file_content_is_a_row_or_a_reject(files: list[bytes | str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        refs = set()
        for i, content in enumerate(files):
            ref = f"{'cats' if i % 2 else 'dogs'}/{i}.img"
            write(Path(tmp), ref.encode(), content)
            refs.add(ref)
        staged, n = ingest(DslrConfig(input=tmp, **CONFIG))
        assert n == len(files)
        assert_row_or_reject(staged, refs)


@settings(SETTINGS, max_examples=150)
@given(
    names=st.lists(
        st.one_of(NAMES.map(str.encode), RAW_NAMES), min_size=1, max_size=4, unique=True
    ),
    contents=st.lists(st.one_of(real_images(), st.binary(max_size=64)), min_size=4, max_size=4),
    depth=st.sampled_from(["", "cats/", "train/dogs/", "a b/ünï/"]),
)
def test_any_file_name_is_a_row_or_a_reject(
    names: list[bytes], contents: list[bytes], depth: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        refs = set()
        for name, content in zip(names, contents, strict=False):
            write(Path(tmp), depth.encode() + name, content)
            refs.add(printable(os.fsdecode(depth.encode() + name)))
        staged, _ = ingest(DslrConfig(input=tmp, **CONFIG))
        assert_row_or_reject(staged, refs)


CSV_PATHS = st.one_of(
    NAMES,
    st.sampled_from(["a.png", "../a.png", "/etc/passwd", "file:///etc/hostname", "s3://b/a.png"]),
    st.sampled_from(["sub/../a.png", "./a.png", "sub", "", " ", "a.png/", "fifo", "%2e%2e/a.png"]),
    st.sampled_from(["a\x00.png", "sub/b.png\x00", "\x00"]),  # no file name holds a NUL
    st.text(max_size=20),  # anything at all, control characters included
)


@settings(SETTINGS, max_examples=100)
@given(
    rows=st.lists(
        st.tuples(CSV_PATHS, st.sampled_from(["cat", "dog", ""]), st.sampled_from(["", "val"])),
        min_size=1,
        max_size=5,
    )
)
def test_any_labels_file_path_is_a_row_or_a_reject(rows: list[tuple[str, str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        write(images, b"a.png", png_bytes())
        write(images, b"sub/b.png", png_bytes(seed=1))
        write(images, b"fifo", "FIFO")
        labels = Path(tmp) / "labels.csv"
        with open(labels, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "split"])
            writer.writerows(rows)
        cfg = DslrConfig(input=str(images), labels=str(labels), **CONFIG)
        with open(labels, newline="", encoding="utf-8") as f:
            written = [r["path"].strip() for r in csv.DictReader(f)]
        if not written:  # a path of only a newline can make the CSV header-only
            with pytest.raises(ValueError, match="lists no files"):
                ingest(cfg)
            return
        staged, n = ingest(cfg)
        assert n == len(written) == staged.num_rows
        for row in staged.to_pylist():
            assert row[REJECT_REASON] is None or row[REJECT_REASON].strip()
        outside = [r for r in staged.to_pylist() if (r[REJECT_REF] or "").startswith(("/", "s3:"))]
        assert all(r[REJECT_REASON].startswith("path outside the input") for r in outside)


def png_bytes(seed: int = 0) -> bytes:
    out = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), np.uint8)).save(out, format="PNG")
    return out.getvalue()
