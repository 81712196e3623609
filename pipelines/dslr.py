"""DSLR photographs from a folder or bucket → schema-v2 rows (source ``dslr``, data set 2).

Inputs (``DslrConfig.input``, any ``pipelines.storage`` URL, so ``s3://`` works):
- ``<split>/<class>/<file>`` (split = train / val / test; deeper folders belong to their class);
- ``<class>/<file>``: splits assigned by hash;
- any files plus a labels CSV (``labels``, UTF-8) with a header ``path,label[,split]`` and at
  least one row; paths relative to the input root (an absolute path, a URL or a ``..`` above the
  root is a reject, never read); without a split column, splits are assigned by hash.
  Optional columns ``x0,y0,x1,y1`` give one ground-truth box of the labelled object per photo
  (fractions of the stored, EXIF-oriented image's width and height; class = the label), which
  scores where a model looks; empty cells: no box.
Hash split: sha256 of the path relative to the root (``pipelines.inputs.hash_split``), so adding
files never moves others between splits. Class indices follow the sorted class names (numerically
when every name is an integer: ``20, 30, 100``).

Every listed file is an input: **inputs = rows + rejects**. The stages:
1. ``list_photos`` (driver): the listing (with sizes), labels and splits; layout problems are
   rejects already.
2. ``hash_files`` (Ray), only on ``hash_candidates``: files whose size another file shares, or
   whose size the listing does not give (labels-file entries, links). Two files of different
   sizes cannot be duplicates, so in the common case no file is read twice (the fdupes trick).
3. ``mark_duplicates`` (driver, small): empty files, unreadable files, and the second and later
   copies of the same content ("duplicate of <first path>", first in listing order) become rejects;
   copies that carry different labels are all rejected ("identical to <path> with another label").
   Duplicates are found before tiling, across all splits, so no copy of a test photo trains.
4. ``tile_files`` (Ray): read, sha256 (the image id), decode once with EXIF orientation and tile
   (``pipelines.photos.tile_encoded_image``), or reject with the reason.
A candidate is read twice (hash, then tile) rather than shipping its bytes through the object
store: the second read is from the page cache or one more GET.

Image handling: JPEG, PNG, TIFF and whatever else Pillow reads. Every image becomes 8-bit RGB:
CMYK, palette, RGBA (alpha dropped) go through ``tile_encoded_image`` directly; grey, grey+alpha,
1-bit and 16/32-bit grey are converted here first (16-bit scaled by 1/256, not clipped — Pillow's
own I;16→RGB conversion clips everything above 255 to white), then handed over as a lossless PPM.
16-bit RGB PNG/TIFF are read by Pillow as 8-bit RGB (high bytes) already.
Decompression-bomb guard: the header's width × height is checked against ``max_pixels`` before
any decode; Pillow's own global guard is switched off during the stage so that this configurable
limit is the one that applies.

Reject reasons (prefixes are stable; the rest names the detail): ``empty file``,
``unreadable: ...``, ``not an image: ...``, ``corrupt: ...``, ``truncated: ...``,
``over the pixel limit: ...``, ``duplicate of <path>``, ``identical to <path> with another label``,
``path outside the input folder: ...``, ``bad path in the labels file: ...``,
``not in the ... layout``, ``no label``,
``unknown split ...``, ``bad box ...``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.inputs import (
    NotRegularFileError,
    RefusedPathError,
    check_fractions,
    hash_split,
    list_files,
    read_bytes,
    resolve,
)
from pipelines.schema import SPLITS, make_row
from pipelines.staging import StagingPlan, staging_table
from pipelines.storage import filesystem
from pipelines.tiling import reject_row

if TYPE_CHECKING:  # the build composes this module's stages; nothing of it runs here
    from pipelines.build import BuildConfig

SOURCE = "dslr"
# Modes that tile_encoded_image would keep grey or clip (16/32-bit): converted here to 8-bit RGB.
_CONVERT_HERE = ("L", "LA", "La", "1", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")

# The listing after hashing: one record per input, carried through both Ray stages.
INPUT_SCHEMA = pa.schema(
    [
        ("_index", pa.int64()),
        ("url", pa.string()),
        ("ref", pa.string()),  # path relative to the input root (or as written in the CSV)
        ("split", pa.string()),
        ("label", pa.int32()),
        ("label_name", pa.string()),
        ("sha256", pa.string()),
        ("size", pa.int64()),
        ("reason", pa.string()),  # set when the input is already known to be unusable
        ("box", pa.string()),  # JSON [x0, y0, x1, y1] from the labels file, or null
    ]
)


@dataclass(frozen=True, kw_only=True)
class DslrConfig:
    """A photo folder or bucket to ingest."""

    input: str  # folder or bucket prefix (layouts in the module docstring)
    # labels CSV URL (path,label[,split][,x0,y0,x1,y1]); None = labels from folders
    labels: str | None = None
    max_pixels: int = 120_000_000  # decompression-bomb guard: larger images are rejected
    proxy_max_side: int = 256  # proxy's longer side, px
    jpeg_quality: int = 90  # quality of the JPEG tiles
    val_fraction: float = 0.1  # share of hash-assigned inputs in val
    test_fraction: float = 0.1  # share of hash-assigned inputs in test

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ValueError(f"DslrConfig.max_pixels={self.max_pixels} must be >= 1")
        if self.proxy_max_side < 8 or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(
                f"DslrConfig needs proxy_max_side >= 8 and jpeg_quality in 1..100, got "
                f"{self.proxy_max_side} and {self.jpeg_quality}"
            )
        check_fractions("DslrConfig", self.val_fraction, self.test_fraction)

    def split_of(self, ref: str) -> str:
        return hash_split(ref, val_fraction=self.val_fraction, test_fraction=self.test_fraction)


# --- 1. Listing -----------------------------------------------------------------------------------


def list_photos(cfg: DslrConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """Every input with its split and label (or a reject reason); and the class names."""
    entries = _csv_entries(cfg) if cfg.labels else _folder_entries(cfg)
    class_names = _sorted_classes({e["label_name"] for e in entries if e["reason"] is None})
    index = {name: i for i, name in enumerate(class_names)}
    items = [
        {**e, "_index": i, "label": index.get(e["label_name"]), "sha256": None, "box": e.get("box")}
        for i, e in enumerate(entries)
    ]
    return items, class_names


def _sorted_classes(names: set[str]) -> list[str]:
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _folder_entries(cfg: DslrConfig) -> list[dict[str, Any]]:
    files = list_files(cfg.input)
    by_split = any(f.ref.split("/")[0] in SPLITS and f.ref.count("/") >= 1 for f in files)
    entries = []
    for url, ref, size, reason in files:
        parts = ref.split("/")
        entry = {
            "url": url,
            "ref": ref,
            "split": cfg.split_of(ref),
            "label_name": None,
            "size": size,
        }
        if reason is not None:  # a special file or an undecodable name: never opened
            entry["reason"] = reason
        elif by_split and (parts[0] not in SPLITS or len(parts) < 3):
            entry["reason"] = "not in the <split>/<class>/<file> layout"
        elif not by_split and len(parts) < 2:
            entry["reason"] = "not in a <class>/ folder (the <class>/<file> layout)"
        else:
            entry["reason"] = None
            entry["label_name"] = parts[1] if by_split else parts[0]
            entry["split"] = parts[0] if by_split else entry["split"]
        entries.append(entry)
    return entries


def read_labels(cfg: DslrConfig) -> list[dict[str, str | None]]:
    """The labels file's rows. A ValueError naming the file when it is no usable labels CSV: not
    UTF-8 text, no ``path`` and ``label`` columns, or no rows (a header only would publish an
    empty version). The build's preflight calls this before any work."""
    fs, path = filesystem(cfg.labels)
    try:
        # utf-8-sig: spreadsheet programs start a UTF-8 CSV with a byte-order mark
        with fs.open(path, "rt", encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or ())
            if not {"path", "label"} <= columns:
                raise ValueError(
                    f"labels file {cfg.labels} needs a header with 'path' and 'label' (and "
                    f"optionally 'split'); found {sorted(columns)}"
                )
            rows = list(reader)
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        raise ValueError(
            f"labels file {cfg.labels} is not UTF-8 text (byte 0x{byte}); pass a CSV saved as UTF-8"
        ) from None
    except csv.Error as exc:
        raise ValueError(f"labels file {cfg.labels} is not a readable CSV: {exc}") from None
    if not rows:
        raise ValueError(
            f"labels file {cfg.labels} lists no files (a header only); add one line "
            "path,label[,split] per photo"
        )
    return rows


def _csv_entries(cfg: DslrConfig) -> list[dict[str, Any]]:
    rows = read_labels(cfg)
    entries = []
    for row in rows:
        ref = (row["path"] or "").strip()
        label = (row["label"] or "").strip()
        split = (row.get("split") or "").strip() or cfg.split_of(ref)
        entry = {
            "url": None,
            "ref": ref,
            "split": split,
            "reason": None,
            "label_name": label,
            "size": None,  # unknown without a listing: such files are hashed
        }
        try:
            entry["url"] = resolve(cfg.input, ref)
        except RefusedPathError as exc:  # never opened: not even its size reaches the reason
            entry.update(split=cfg.split_of(ref), label_name=None, reason=str(exc))
        else:
            _check_entry(entry, row, cfg)
        entries.append(entry)
    return entries


def _check_entry(entry: dict[str, Any], row: dict[str, str | None], cfg: DslrConfig) -> None:
    """The split, label and box of one labels-file entry, or its reject reason."""
    split, ref = entry["split"], entry["ref"]
    if split not in SPLITS:
        entry.update(
            split=cfg.split_of(ref),
            label_name=None,
            reason=f"unknown split {split!r} in the labels file; use one of {SPLITS}",
        )
    elif not entry["label_name"]:
        entry.update(label_name=None, reason="no label in the labels file")
    else:
        _add_box(entry, row)


BOX_COLUMNS = ("x0", "y0", "x1", "y1")


def _add_box(entry: dict[str, Any], row: dict[str, str | None]) -> None:
    """The labels file's box for this entry (JSON in ``box``), or the reject reason."""
    cells = [(row.get(c) or "").strip() for c in BOX_COLUMNS]
    if not any(cells):
        return
    try:
        x0, y0, x1, y1 = (float(c) for c in cells)
    except ValueError:
        entry.update(label_name=None, reason=f"bad box {cells} in the labels file: not 4 numbers")
        return
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        entry.update(
            label_name=None,
            reason=f"bad box {cells} in the labels file: need 0 <= x0 < x1 <= 1 and "
            "0 <= y0 < y1 <= 1 (fractions of the width and height)",
        )
        return
    entry["box"] = json.dumps([x0, y0, x1, y1])


# --- 2. Hashing (Ray stage) and 3. duplicates (driver) --------------------------------------------


def hash_candidates(
    items: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(to hash, not needed): only files of unknown size, or of a non-zero size another file
    shares, can be duplicates; the rest go straight to tiling."""
    sizes = Counter(i["size"] for i in items if i["reason"] is None and i["size"] is not None)
    to_hash, rest = [], []
    for item in items:
        size = item["size"]
        suspect = item["reason"] is None and (size is None or (size > 0 and sizes[size] > 1))
        (to_hash if suspect else rest).append(item)
    return to_hash, rest


def hash_files(batch: pa.Table) -> pa.Table:
    """Stage: read each listed file once: sha256 and size, or why it cannot be read."""
    records = []
    for item in batch.to_pylist():
        if item["reason"] is None:
            try:
                data = read_bytes(item["url"])
                item["sha256"], item["size"] = hashlib.sha256(data).hexdigest(), len(data)
            except OSError as exc:  # missing, a directory, permissions, network
                item["reason"] = _unreadable(exc)
        records.append(item)
    return pa.Table.from_pylist(records, schema=INPUT_SCHEMA)


def _unreadable(exc: OSError) -> str:
    if isinstance(exc, NotRegularFileError):
        return str(exc)  # "not a regular file: ...", the listing's reason for the same file
    return f"unreadable: {type(exc).__name__}: {exc}"


def mark_duplicates(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Empty files and repeated content become rejects; the first copy (listing order) stays.

    Copies of one content under different labels are all rejected ("identical to <ref> with
    another label"): which label is right is the user's call, and keeping one copy would train
    or test on a label that may be wrong.
    """
    ordered = sorted(records, key=lambda r: r["_index"])
    labels = _labels_by_content(ordered)
    first: dict[str, str] = {}
    out = []
    for item in ordered:
        item = dict(item)
        sha = item["sha256"]
        if item["reason"] is None and item["size"] == 0:
            item["reason"] = "empty file"
        elif item["reason"] is None and sha is not None and len(labels[sha]) > 1:
            other = next(ref for name, ref in labels[sha].items() if name != item["label_name"])
            item["reason"] = f"identical to {other} with another label"
        elif item["reason"] is None and sha in first:
            item["reason"] = f"duplicate of {first[sha]}"
        elif item["reason"] is None and sha is not None:
            first[sha] = item["ref"]
        out.append(item)
    return out


def local_records(cfg: DslrConfig) -> tuple[list[dict[str, Any]], list[str], int]:
    """The driver side without Ray (benchmarks, tests): listing, hashing the possible duplicates
    in this process, duplicates marked. Returns the records for `tile_files`, the class names
    and how many files the listing found. The build runs the hash pass on Ray Data instead."""
    items, class_names = list_photos(cfg)
    to_hash, rest = hash_candidates(items)
    hashed = hash_files(pa.Table.from_pylist(to_hash, schema=INPUT_SCHEMA)).to_pylist()
    return mark_duplicates(rest + hashed), class_names, len(items)


def _labels_by_content(ordered: list[dict[str, Any]]) -> dict[str, dict[str | None, str]]:
    """Per content hash of the usable files, each label with the first file that carries it."""
    labels: dict[str, dict[str | None, str]] = {}
    for item in ordered:
        if item["reason"] is None and item["size"] != 0 and item["sha256"] is not None:
            labels.setdefault(item["sha256"], {}).setdefault(item["label_name"], item["ref"])
    return labels


def in_mixed_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`records` in a random order seeded by the inputs, the order their rows are written in.

    Training reads a version's files and rows nearly in order (its shuffle buffer holds a few
    batches), so rows in listing order, which follows the sorted class folders, would make nearly
    single-class batches. Seeded by `inputs_fingerprint`: the same inputs write the same files.
    """
    rng = random.Random(inputs_fingerprint(records))
    mixed = sorted(records, key=lambda r: r["_index"])
    rng.shuffle(mixed)
    return mixed


def inputs_fingerprint(records: list[dict[str, Any]]) -> str:
    """sha256 over every input's path, size, label and split: the manifest's input hash.

    Sizes, not content hashes: most files are not hashed before tiling (``hash_candidates``).
    """
    h = hashlib.sha256()
    for item in sorted(records, key=lambda r: r["_index"]):
        h.update(f"{item['ref']}\0{item['size']}\0{item['label_name']}\0{item['split']}".encode())
        # Only labelled boxes add to the hash: versions built without boxes keep theirs.
        h.update(f"\0{item['box']}\n".encode() if item.get("box") else b"\n")
    return h.hexdigest()


# --- 4. Tiling (Ray stage) ------------------------------------------------------------------------


class PhotoRejectedError(ValueError):
    """A file that is not a usable photo; the message is the reject reason."""


def tile_files(
    batch: pa.Table, *, params: dict[str, Any], tile_size: int, tile_format: str
) -> pa.Table:
    """Stage: hashed inputs → staging rows (tiled photos, or rejects with the reason)."""
    cfg = DslrConfig(**params)
    rows = []
    with _pillow_guard_off():
        for item in batch.to_pylist():
            try:
                if item["reason"] is not None:
                    raise PhotoRejectedError(item["reason"])
                data = read_bytes(item["url"])
                item["sha256"] = hashlib.sha256(data).hexdigest()
                row = photo_row(data, item, cfg, tile_size, tile_format)
            except (PhotoRejectedError, OSError) as exc:
                reason = str(exc) if isinstance(exc, PhotoRejectedError) else _unreadable(exc)
                row = reject_row(
                    image_id=f"dslr-{item['sha256'][:24]}" if item["sha256"] else None,
                    split=item["split"],
                    source=SOURCE,
                    ref=item["ref"],
                    reason=reason,
                )
            rows.append({**row, "_index": item["_index"]})
    return staging_table(rows)


def photo_row(
    data: bytes, item: dict[str, Any], cfg: DslrConfig, tile_size: int, tile_format: str
) -> dict[str, Any]:
    """One file's schema-v2 row; raises PhotoRejectedError (the reason) when it is unusable."""
    mode, source_format, (width, height) = _header(data)
    if width * height > cfg.max_pixels:
        raise PhotoRejectedError(
            f"over the pixel limit: {width}×{height} = {width * height} pixels > "
            f"max_pixels={cfg.max_pixels}"
        )
    # Imported here: pipelines.photos imports torch (via pipelines.region), ~2 s that the listing,
    # the hashing and every command-line preflight would otherwise pay.
    from pipelines.photos import tile_encoded_image

    encoded, orientation = data, None
    if mode in _CONVERT_HERE:
        encoded, orientation = _as_rgb_ppm(data)
    try:
        photo = tile_encoded_image(
            encoded,
            tile_size=tile_size,
            tile_format=tile_format,
            proxy_max_side=cfg.proxy_max_side,
            jpeg_quality=cfg.jpeg_quality,
        )
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise _decode_reject(exc) from exc
    meta = {
        "path": item["ref"],
        "sha256": item["sha256"],
        "bytes": len(data),
        "format": source_format,
        "mode": mode,
        "exif_orientation": photo.exif_orientation if orientation is None else orientation,
    }
    return make_row(
        {
            "image_id": f"dslr-{item['sha256'][:24]}",
            "split": item["split"],
            "source": SOURCE,
            "label": item["label"],
            "label_name": item["label_name"],
            **photo.columns(),
            "boxes": _boxes(item),
            "meta": meta,
        }
    )


def _boxes(item: dict[str, Any]) -> list[dict[str, float | int]]:
    """The labels file's box as the schema's ``boxes`` (class = the label); none without one."""
    if not item.get("box"):
        return []
    x0, y0, x1, y1 = json.loads(item["box"])
    return [{"x0": x0, "y0": y0, "x1": x1, "y1": y1, "cls": item["label"]}]


def _header(data: bytes) -> tuple[str, str, tuple[int, int]]:
    """(mode, format, (width, height)) from the header alone: nothing is decoded yet."""
    try:
        with Image.open(io.BytesIO(data)) as pil:
            return pil.mode, pil.format or "unknown", pil.size
    except UnidentifiedImageError as exc:
        raise PhotoRejectedError(
            f"not an image: no format recognised in {len(data)} bytes"
        ) from exc
    except Exception as exc:
        raise _decode_reject(exc) from exc


def _decode_reject(exc: Exception) -> PhotoRejectedError:
    message = str(exc.__cause__ or exc)
    kind = "truncated" if "truncated" in message else "corrupt"
    return PhotoRejectedError(f"{kind}: {message}")


def _as_rgb_ppm(data: bytes) -> tuple[bytes, int]:
    """Decode a grey / 16-bit image, orient it, scale it to 8-bit RGB; a lossless PPM."""
    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            orientation = int(pil.getexif().get(0x0112, 1))
            pil = ImageOps.exif_transpose(pil)
            array = np.asarray(pil)
            if array.ndim == 3:  # LA / La: drop alpha (the photo path drops RGBA alpha too)
                array = array[:, :, 0]
    except Exception as exc:
        raise _decode_reject(exc) from exc
    grey = _to_uint8(array, pil.mode)
    out = io.BytesIO()
    Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB").save(out, format="PPM")
    return out.getvalue(), orientation


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Grey levels as uint8: 16-bit (I;16*, I) scaled by 1/256, float scaled to [0, 255]."""
    if array.dtype == np.uint8 or array.dtype == bool:
        return array.astype(np.uint8) * (255 if array.dtype == bool else 1)
    if mode == "F":
        scale = 255.0 if float(array.max(initial=0.0)) <= 1.0 else 1.0
        return np.clip(array * scale, 0, 255).astype(np.uint8)
    return (np.clip(array, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)


@contextlib.contextmanager
def _pillow_guard_off() -> Iterator[None]:
    """Pillow's global bomb guard off while the stage runs: ``max_pixels`` is checked instead."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def plan_photos(
    config: BuildConfig, cfg: DslrConfig, tile_format: str, say: Callable[[str], None]
) -> StagingPlan:
    """The build's plan for a photo folder: listing → hash the possible duplicates (Ray) →
    duplicates (driver) → tile (Ray)."""
    import ray  # only the composition needs Ray; the stages do not

    items, class_names = list_photos(cfg)
    to_hash, rest = hash_candidates(items)
    say(f"[build] {len(items)} input files, {len(class_names)} classes, {len(to_hash)} to hash")
    blocks = max(1, math.ceil(len(items) / config.rows_per_file))
    if to_hash:  # only files that may be duplicates: same size, or size unknown
        hashed = ray.data.from_items(
            to_hash, override_num_blocks=max(1, math.ceil(len(to_hash) / config.rows_per_file))
        ).map_batches(hash_files, batch_size=None, batch_format="pyarrow")
        to_hash = hashed.take_all()
    records = in_mixed_order(mark_duplicates(rest + to_hash))
    ds = ray.data.from_items(records, override_num_blocks=blocks).map_batches(
        tile_files,
        batch_size=None,
        batch_format="pyarrow",
        fn_kwargs={
            "params": dataclasses.asdict(cfg),
            "tile_size": config.tile_size,
            "tile_format": tile_format,
        },
    )
    inputs = {"files": len(records), "sha256": inputs_fingerprint(records)}
    return StagingPlan(ds, len(records), list(SPLITS), class_names, inputs)
