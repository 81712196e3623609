"""Tier 1: DSLR ingest stages on literal files — the bad-input matrix, modes, layouts, splits."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import dslr_support
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipelines.build import BuildConfig, preflight
from pipelines.codec import decode_full
from pipelines.dslr import (
    INPUT_SCHEMA,
    DslrConfig,
    hash_candidates,
    hash_files,
    in_mixed_order,
    list_photos,
    mark_duplicates,
)
from pipelines.inputs import hash_split
from pipelines.staging import STAGING_SCHEMA
from pipelines.tiling import REJECT_REASON, decode_proxy

REPO_ROOT = Path(__file__).resolve().parents[2]
H, W = 90, 120  # small photos: the matrix is about reasons and modes, not size


def photo(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Smooth colours plus noise, with a bright top-left block that shows orientation."""
    rng = np.random.default_rng(seed)
    x = np.mgrid[0:h, 0:w][1]
    image = np.stack([(x * 2 + 40 * c) % 256 for c in range(3)], -1) + rng.normal(0, 3, (h, w, 3))
    image[:20, :30] = 250
    return image.clip(0, 255).astype(np.uint8)


def encoded(image: Image.Image, fmt: str, **save: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def png16_rgb(a: np.ndarray) -> bytes:
    """A 48-bit RGB PNG (Pillow cannot write one)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[r].astype(">u2").tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def tiff16_rgb(a: np.ndarray) -> bytes:
    """A 48-bit RGB baseline TIFF, little-endian, one strip (Pillow cannot write one)."""
    h, w, _ = a.shape
    data = a.astype("<u2").tobytes()
    tags = [
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, 3, None),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, None),
        (277, 3, 1, 3),
        (278, 3, 1, h),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),
    ]
    bits_at = 8 + 2 + 12 * len(tags) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    for tag, kind, count, value in tags:
        value = {258: bits_at, 273: bits_at + 6}.get(tag, value)
        packed = (
            struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        )
        out += struct.pack("<HHI", tag, kind, count) + packed
    return out + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + data


def write(root: Path, ref: str, data: bytes) -> Path:
    path = root / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run_stages(cfg: DslrConfig, tile_format: str = "jpeg") -> tuple[pa.Table, list[str], int]:
    """The DSLR pipeline without Ray, in 64-px tiles."""
    return dslr_support.run_stages(cfg, tile_format=tile_format)


def by_ref(staged: pa.Table) -> dict[str, dict]:
    out = {}
    for row in staged.to_pylist():
        ref = row["reject_ref"] or json.loads(row["meta"])["path"]
        out[ref] = row
    return out


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict], list[str], int]:
    """One folder holding every bad-input case and every supported mode, run through the stages."""
    root = tmp_path_factory.mktemp("photos")
    rgb = Image.fromarray(photo())
    good = encoded(rgb, "JPEG", quality=92)
    write(root, "train/30/good.jpg", good)
    write(root, "val/30/copy-of-good.jpg", good)
    write(root, "train/30/cmyk.jpg", encoded(rgb.convert("CMYK"), "JPEG", quality=95))
    write(root, "train/30/palette.png", encoded(rgb.quantize(64), "PNG"))
    write(root, "train/50/grey-alpha.png", encoded(rgb.convert("LA"), "PNG"))
    ramp = (np.arange(H * W).reshape(H, W) * (65535 // (H * W))).astype(np.uint16)
    write(root, "train/50/grey16.png", encoded(Image.fromarray(ramp), "PNG"))
    write(root, "val/30/grey16.tif", encoded(Image.fromarray(ramp), "TIFF"))
    rgb16 = np.random.default_rng(1).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    write(root, "val/50/rgb16.png", png16_rgb(rgb16))
    write(root, "val/50/rgb16.tif", tiff16_rgb(rgb16))
    write(root, "val/30/rgb8.tif", encoded(Image.fromarray(photo(seed=2)), "TIFF"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    write(root, "test/30/rotated.jpg", encoded(Image.fromarray(photo(seed=3)), "JPEG", exif=exif))
    # The bad inputs.
    write(root, "train/30/corrupt.jpg", good[:600] + bytes(range(256)) * 20 + good[-2:])
    write(root, "train/30/truncated.jpg", good[: len(good) // 2])
    write(root, "train/30/empty.jpg", b"")
    write(root, "train/30/notes.jpg", b"these are my holiday notes, not a photo\n")
    bomb = encoded(Image.new("L", (1200, 1000)), "PNG")  # 1.2 MP of zeros: a few kB
    write(root, "train/50/bomb.png", bomb)
    (root / "train/50/broken.jpg").symlink_to(root / "nowhere.jpg")
    write(root, "README.txt", b"a stray file outside the layout")
    write(root, "train/loose.jpg", encoded(Image.fromarray(photo(seed=4)), "JPEG"))
    cfg = DslrConfig(input=str(root), max_pixels=1_000_000)
    staged, class_names, n_inputs = run_stages(cfg)
    assert staged.schema.equals(STAGING_SCHEMA)
    return by_ref(staged), class_names, n_inputs


BAD = {
    "train/30/corrupt.jpg": "corrupt: ",
    "train/30/truncated.jpg": "truncated: image file is truncated",
    "train/30/empty.jpg": "empty file",
    "train/30/notes.jpg": "not an image: ",
    "train/50/bomb.png": "over the pixel limit: 1200×1000 = 1200000 pixels > max_pixels=1000000",
    "train/50/broken.jpg": "unreadable: FileNotFoundError",
    "val/30/copy-of-good.jpg": "duplicate of train/30/good.jpg",
    "README.txt": "not in the <split>/<class>/<file> layout",
    "train/loose.jpg": "not in the <split>/<class>/<file> layout",
}
GOOD = [
    "train/30/good.jpg",
    "train/30/cmyk.jpg",
    "train/30/palette.png",
    "train/50/grey-alpha.png",
    "train/50/grey16.png",
    "val/30/grey16.tif",
    "val/50/rgb16.png",
    "val/50/rgb16.tif",
    "val/30/rgb8.tif",
    "test/30/rotated.jpg",
]


@pytest.mark.parametrize(("ref", "reason"), sorted(BAD.items()))
def test_each_bad_input_is_rejected_with_its_reason(matrix, ref: str, reason: str) -> None:
    rows, _, _ = matrix
    assert rows[ref][REJECT_REASON] is not None, f"{ref} was not rejected"
    assert rows[ref][REJECT_REASON].startswith(reason), rows[ref][REJECT_REASON]
    assert rows[ref]["source"] == "dslr"


def test_nothing_else_is_lost(matrix) -> None:
    rows, class_names, n_inputs = matrix
    assert n_inputs == len(BAD) + len(GOOD) == len(rows)
    good = {ref for ref, row in rows.items() if row[REJECT_REASON] is None}
    assert good == set(GOOD)
    assert class_names == ["30", "50"]


@pytest.mark.parametrize("ref", GOOD)
def test_every_mode_becomes_8_bit_rgb(matrix, ref: str) -> None:
    row = matrix[0][ref]
    assert row["channels"] == 3 and row["tile_format"] == "jpeg"
    assert row["label_name"] == ref.split("/")[1] and row["split"] == ref.split("/")[0]
    image = decode_full(
        row["tiles"],
        height=row["height"],
        width=row["width"],
        channels=3,
        tile_size=64,
        tile_format="jpeg",
    )
    assert image.shape == (row["height"], row["width"], 3)
    assert decode_proxy(row["proxy"]).shape == (row["proxy_height"], row["proxy_width"], 3)
    assert row["image_id"] == "dslr-" + json.loads(row["meta"])["sha256"][:24]


def test_exif_rotation_swaps_the_dimensions(matrix) -> None:
    row = matrix[0]["test/30/rotated.jpg"]
    assert (row["height"], row["width"]) == (W, H)
    assert json.loads(row["meta"])["exif_orientation"] == 6
    image = decode_full(
        row["tiles"], height=W, width=H, channels=3, tile_size=64, tile_format="jpeg"
    )
    # Rotated 90° clockwise: the bright top-left block is now top-right.
    assert image[:25, -15:].mean() > 200 and image[:25, :15].mean() < 200


def test_colour_conversions_keep_the_picture(matrix) -> None:
    rows = matrix[0]
    reference = photo().astype(int)
    for ref in ("train/30/good.jpg", "train/30/cmyk.jpg", "train/30/palette.png"):
        row = rows[ref]
        image = decode_full(
            row["tiles"], height=H, width=W, channels=3, tile_size=64, tile_format="jpeg"
        )
        assert np.abs(image.astype(int) - reference).mean() < 12, ref


def test_16_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)
    write(tmp_path, "a/grey16.png", encoded(Image.fromarray(ramp), "PNG"))
    rgb16 = np.random.default_rng(2).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    write(tmp_path, "a/rgb16.tif", tiff16_rgb(rgb16))
    staged, _, _ = run_stages(DslrConfig(input=str(tmp_path)), tile_format="png")
    rows = by_ref(staged)
    for ref, expected in (
        ("a/grey16.png", np.repeat((ramp >> 8)[:, :, None], 3, 2)),
        ("a/rgb16.tif", rgb16 >> 8),
    ):
        row = rows[ref]
        image = decode_full(
            row["tiles"], height=H, width=W, channels=3, tile_size=64, tile_format="png"
        )
        assert np.array_equal(image, expected.astype(np.uint8)), ref


def test_pillow_guard_is_restored(matrix) -> None:
    assert Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's default, untouched after the stage


def test_labels_csv_with_unreadable_and_bad_entries(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write(images, "a.jpg", encoded(Image.fromarray(photo()), "JPEG"))
    write(images, "b.png", encoded(Image.fromarray(photo(seed=5)), "PNG"))
    (images / "folder.jpg").mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,label,split\n"
        "a.jpg,cat,train\n"
        "b.png,dog,\n"  # no split: assigned by hash
        "folder.jpg,dog,train\n"
        "missing.jpg,cat,test\n"
        "a.jpg,cat,val\n"  # the same file again
        "b.png,,train\n"
        "b.png,cat,holdout\n"
    )
    staged, class_names, n = run_stages(DslrConfig(input=str(images), labels=str(labels)))
    reasons = [r[REJECT_REASON] for r in staged.to_pylist()]
    assert n == 7 == staged.num_rows
    assert class_names == ["cat", "dog"]
    assert reasons[0] is None and reasons[1] is None
    assert reasons[2].startswith("unreadable: IsADirectoryError")
    assert reasons[3].startswith("unreadable: FileNotFoundError")
    assert reasons[4] == "duplicate of a.jpg"
    assert reasons[5] == "no label in the labels file"
    assert reasons[6].startswith("unknown split 'holdout'")
    rows = staged.to_pylist()
    assert rows[1]["split"] == hash_split("b.png", val_fraction=0.1, test_fraction=0.1)
    assert (rows[0]["label"], rows[1]["label"]) == (0, 1)


def test_identical_photos_with_conflicting_labels_are_all_rejected(tmp_path: Path) -> None:
    data = encoded(Image.fromarray(photo()), "PNG")
    for ref in ("cat/a.png", "cat/b.png", "dog/c.png"):
        write(tmp_path, ref, data)
    write(tmp_path, "dog/d.png", encoded(Image.fromarray(photo(seed=3)), "PNG"))
    staged = by_ref(run_stages(DslrConfig(input=str(tmp_path)))[0])
    assert staged["cat/a.png"][REJECT_REASON] == "identical to dog/c.png with another label"
    assert staged["cat/b.png"][REJECT_REASON] == "identical to dog/c.png with another label"
    assert staged["dog/c.png"][REJECT_REASON] == "identical to cat/a.png with another label"
    assert staged["dog/d.png"][REJECT_REASON] is None


@pytest.mark.parametrize(
    "ref", ["../outside.png", "cats/../../outside.png", "{outside}", "file://{outside}"]
)
def test_labels_paths_outside_the_input_are_never_read(tmp_path: Path, ref: str) -> None:
    images, outside = tmp_path / "images", tmp_path / "outside.png"
    write(images, "a.png", encoded(Image.fromarray(photo()), "PNG"))
    write(tmp_path, "outside.png", encoded(Image.fromarray(photo(seed=1)), "PNG"))
    outside.chmod(0)  # a read would be an "unreadable: PermissionError" reject, not this one
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"path,label,split\na.png,cat,train\n{ref.format(outside=outside)},dog,train\n"
    )
    items, _ = list_photos(DslrConfig(input=str(images), labels=str(labels)))
    assert items[1]["url"] is None and items[1]["label_name"] is None
    staged, class_names, _ = run_stages(DslrConfig(input=str(images), labels=str(labels)))
    rows = staged.to_pylist()
    assert rows[1][REJECT_REASON].startswith("path outside the input folder")
    assert not any(ch.isdigit() for ch in rows[1][REJECT_REASON])  # no size, no detail of it
    assert rows[0][REJECT_REASON] is None and class_names == ["cat"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"path,label,split\n", "lists no files"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", r"is not UTF-8 text \(byte 0xff\)"),
        (b"file,class\na.png,cat\n", "needs a header with 'path' and 'label'"),
    ],
)
def test_an_unusable_labels_file_fails_the_preflight_naming_it(
    tmp_path: Path, content: bytes, message: str
) -> None:
    write(tmp_path / "images", "a.png", encoded(Image.fromarray(photo()), "PNG"))
    labels = tmp_path / "labels.csv"
    labels.write_bytes(content)
    config = BuildConfig(
        source="dslr",
        out=str(tmp_path / "out"),
        params={"input": str(tmp_path / "images"), "labels": str(labels)},
    )
    with pytest.raises(ValueError, match=f"labels file {labels} {message}"):
        preflight(config)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.parquet"))


def test_a_labels_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    write(tmp_path / "images", "a.png", encoded(Image.fromarray(photo()), "PNG"))
    labels = tmp_path / "labels.csv"
    labels.write_bytes("path,label\na.png,cat\n".encode("utf-8-sig"))
    items, class_names = list_photos(DslrConfig(input=str(tmp_path / "images"), labels=str(labels)))
    assert class_names == ["cat"] and items[0]["reason"] is None


def test_class_folders_without_splits_are_hash_split(tmp_path: Path) -> None:
    for i in range(6):
        write(
            tmp_path,
            f"{20 + 80 * (i % 2)}/img{i}.png",
            encoded(Image.fromarray(photo(seed=i)), "PNG"),
        )
    cfg = DslrConfig(input=str(tmp_path), val_fraction=0.3, test_fraction=0.3)
    items, class_names = list_photos(cfg)
    assert class_names == ["20", "100"]  # numeric order, not "100" < "20"
    assert [i["split"] for i in items] == [cfg.split_of(i["ref"]) for i in items]
    assert all(i["reason"] is None for i in items)


def test_hash_split_is_deterministic_and_proportional() -> None:
    refs = [f"photos/{i:05d}.jpg" for i in range(4000)]
    splits = [hash_split(r, val_fraction=0.1, test_fraction=0.2) for r in refs]
    assert splits == [hash_split(r, val_fraction=0.1, test_fraction=0.2) for r in refs]
    assert abs(splits.count("test") / 4000 - 0.2) < 0.03
    assert abs(splits.count("val") / 4000 - 0.1) < 0.03


def test_config_and_preflight_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"source 'dslr' needs \['input'\] \(on the command line: --input\)"
    ):
        BuildConfig(source="dslr", out=str(tmp_path))
    with pytest.raises(ValueError, match="max_pixels=0 must be >= 1"):
        BuildConfig(source="dslr", out=str(tmp_path), params={"input": "x", "max_pixels": "0"})
    config = BuildConfig(
        source="dslr", out=str(tmp_path / "out"), params={"input": str(tmp_path / "none")}
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        preflight(config)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_names_a_flag_the_source_does_not_take(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.build_dataset",
            "--source",
            "sc2_replays",
            "--out",
            str(tmp_path),
            "--input",
            str(tmp_path),
            "--max-pixels",
            "5",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "RAY_ADDRESS": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "unknown parameter(s) ['max_pixels'] for source 'sc2_replays'" in result.stderr


def test_only_possible_duplicates_are_hashed_before_tiling(tmp_path: Path) -> None:
    same = encoded(Image.fromarray(photo()), "JPEG")
    write(tmp_path, "c/a.jpg", same)
    write(tmp_path, "c/b.jpg", same)  # same size as a.jpg: may be a copy
    write(tmp_path, "c/d.png", encoded(Image.fromarray(photo(seed=9)), "PNG"))
    write(tmp_path, "c/e.png", encoded(Image.fromarray(photo(seed=8)), "PNG"))  # unique size
    write(tmp_path, "c/empty.jpg", b"")
    (tmp_path / "c/link.jpg").symlink_to(tmp_path / "c/d.png")  # a link: its target's size
    (tmp_path / "c/broken.jpg").symlink_to(tmp_path / "c/nowhere.png")  # no size
    to_hash, rest = hash_candidates(list_photos(DslrConfig(input=str(tmp_path)))[0])
    assert sorted(i["ref"] for i in to_hash) == [
        "c/a.jpg",
        "c/b.jpg",
        "c/broken.jpg",
        "c/d.png",
        "c/link.jpg",
    ]
    assert sorted(i["ref"] for i in rest) == ["c/e.png", "c/empty.jpg"]
    reasons = {
        r["ref"]: r["reason"]
        for r in mark_duplicates(
            rest + hash_files(pa.Table.from_pylist(to_hash, schema=INPUT_SCHEMA)).to_pylist()
        )
    }
    assert reasons == {
        "c/a.jpg": None,
        "c/b.jpg": "duplicate of c/a.jpg",
        "c/broken.jpg": "unreadable: FileNotFoundError: [Errno 2] No such file or directory: "
        f"'{tmp_path}/c/broken.jpg'",
        "c/d.png": None,
        "c/e.png": None,
        "c/empty.jpg": "empty file",
        "c/link.jpg": "duplicate of c/d.png",
    }


def test_rows_are_written_in_an_order_seeded_by_the_inputs() -> None:
    """A permutation, the same whatever order the records arrive in (Ray's hash pass returns
    them in any order), another for other inputs."""
    records = [
        {
            "_index": i,
            "ref": f"train/{c}/{i}.jpg",
            "size": 100 + i,
            "label_name": c,
            "split": "train",
            "box": None,
        }
        for i, c in enumerate(["cat"] * 10 + ["dog"] * 10)
    ]
    mixed = in_mixed_order(records)
    assert sorted(r["_index"] for r in mixed) == list(range(20))
    assert [r["_index"] for r in mixed] != list(range(20))
    assert in_mixed_order(list(reversed(records))) == mixed
    other = in_mixed_order([{**r, "size": r["size"] + 1} for r in records])
    assert [r["_index"] for r in other] != [r["_index"] for r in mixed]
