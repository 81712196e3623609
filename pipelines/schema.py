"""The Parquet contract between pipelines and training: schema version 3.

One row per image; the image is stored as encoded row-major tiles plus an encoded proxy. Version 2
added a pooled level of the original (``level_factor``, ``level_tiles``: the image area-pooled by
a power of two, raw tiles of the same tile size; ``pipelines.pyramid``), from which the model reads
its large glimpses. Version 3 adds ``digest``, the SHA-256 of what the row stores
(``pipelines.integrity``), checked whenever the row is read. Datasets of earlier versions must be
rebuilt. The schema version travels in the Parquet
schema metadata under ``saccade.schema_version`` so that a reader can refuse data it does not
understand before touching a row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 3
SCHEMA_VERSION_KEY = b"saccade.schema_version"
SPLITS = ("train", "val", "test")

# What a label is, as the manifest's ``label_kind`` says: a class, or a count whose class names are
# the counts themselves ("0", "1", ...), so that evaluation can also score how far off a predicted
# count is (mean absolute error, share within one). A manifest without the field holds classes.
CLASS_LABEL, COUNT_LABEL = "class", "count"
LABEL_KINDS = (CLASS_LABEL, COUNT_LABEL)

# An object's box: fractions of the image's width (x) and height (y), with its object class. The
# model's tensors hold boxes as (y0, x0, y1, x1), row-major like its images; `box_to_model` and
# `box_from_model` are the only crossings between the two orders.
BOX_TYPE = pa.struct(
    [
        ("x0", pa.float32()),
        ("y0", pa.float32()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("cls", pa.int32()),
    ]
)

IMAGE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("label", pa.int32()),
        ("label_name", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("channels", pa.int32()),
        ("tile_size", pa.int32()),
        ("tile_format", pa.string()),
        ("tiles", pa.list_(pa.binary())),
        ("level_factor", pa.int32()),  # the stored level's pooling factor; 0: none stored
        ("level_tiles", pa.list_(pa.binary())),  # its raw tiles, row-major, tile_size each
        ("proxy", pa.binary()),
        ("proxy_height", pa.int32()),
        ("proxy_width", pa.int32()),
        ("boxes", pa.list_(BOX_TYPE)),  # the image's objects (BOX_TYPE), [] when none known
        ("meta", pa.string()),
        ("digest", pa.string()),  # hex SHA-256 of the row's stored bytes (pipelines.integrity)
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)

# Records that could not be used: counted, never silently dropped.
REJECT_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("ref", pa.string()),  # source path or generator parameters (JSON)
        ("reason", pa.string()),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)


class SchemaError(ValueError):
    """Data does not follow the saccade Parquet contract."""


def schema_version(schema: pa.Schema) -> int | None:
    """The contract version recorded in a schema's metadata, or None when absent."""
    raw = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    return int(raw) if raw is not None else None


def validate_schema(schema: pa.Schema, *, expected: pa.Schema = IMAGE_SCHEMA) -> None:
    """Raise SchemaError naming the first problem: version, missing column or wrong type."""
    version = schema_version(schema)
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"schema version {version} is not supported (this code reads version "
            f"{SCHEMA_VERSION}); rebuild the dataset with this version of the pipelines"
        )
    for column in expected:
        if column.name not in schema.names:
            raise SchemaError(f"column {column.name!r} is missing")
        actual = schema.field(column.name).type
        if actual != column.type:
            raise SchemaError(f"column {column.name!r} has type {actual}, expected {column.type}")


def empty_table(schema: pa.Schema = IMAGE_SCHEMA) -> pa.Table:
    """A zero-row table of ``schema`` (keeps the metadata)."""
    return schema.empty_table()


def make_row(columns: Mapping[str, Any]) -> dict[str, Any]:
    """One image's row of IMAGE_SCHEMA, the one row builder: every source ends here (generated
    and rendered images through `pipelines.tiling.image_row`, photos through
    `pipelines.dslr.photo_row`). A column not given is null, so a column added to the schema
    needs no other edit to flow through a build; a name the schema lacks is refused; `meta` may
    be a dict (stored as sorted JSON). ``digest`` is stamped later, when the row is written."""
    unknown = sorted(set(columns) - set(IMAGE_SCHEMA.names))
    if unknown:
        raise SchemaError(f"{unknown} are not columns of the image schema")
    row = {name: columns.get(name) for name in IMAGE_SCHEMA.names}
    row["meta"] = _meta_json(row["meta"])
    return row


def _meta_json(meta: Any) -> str | None:
    return meta if isinstance(meta, str) or meta is None else json.dumps(meta, sort_keys=True)


def rows_to_table(rows: Sequence[dict[str, Any]], schema: pa.Schema = IMAGE_SCHEMA) -> pa.Table:
    """Build a table of ``schema`` from row dicts; ``meta`` dicts are serialised to JSON."""
    columns = {field.name: [row.get(field.name) for row in rows] for field in schema}
    if "meta" in columns:
        columns["meta"] = [_meta_json(m) for m in columns["meta"]]
    return pa.Table.from_pydict(columns, schema=schema)


MODEL_BOX_ORDER = ("y0", "x0", "y1", "x1")  # the model's box tensors (model/glimpse.py)


def box_to_model(box: Mapping[str, float]) -> list[float]:
    """A stored box (BOX_TYPE's named fields) in the model's (y0, x0, y1, x1) order."""
    return [float(box[k]) for k in MODEL_BOX_ORDER]


def box_from_model(values: Sequence[float]) -> dict[str, float]:
    """A model box (y0, x0, y1, x1) as BOX_TYPE's named fields (without a class)."""
    return {k: float(v) for k, v in zip(MODEL_BOX_ORDER, values, strict=True)}


# The column sets every reader takes from IMAGE_SCHEMA: a column added to the schema is read by
# training and, unless it names or labels the row, given to the model, with no other edit.
# Training and evaluation read everything but `meta` (free-form JSON: the source's own notes); a
# model's input (registered model, prediction) is the image itself: not who the row is, not its
# label or ground truth, not its notes or digest.
ROW_ID_COLUMNS = ("image_id", "split", "source")
LABEL_COLUMNS = ("label", "label_name", "boxes")
NOTE_COLUMNS = ("meta", "digest")
TRAIN_COLUMNS = [name for name in IMAGE_SCHEMA.names if name != "meta"]
MODEL_INPUT_COLUMNS = [
    name for name in IMAGE_SCHEMA.names if name not in ROW_ID_COLUMNS + LABEL_COLUMNS + NOTE_COLUMNS
]


class ManifestError(SchemaError):
    """A version's manifest.json lacks a field or holds one of the wrong kind."""


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A published version's ``manifest.json``: what it holds and how it was built. The build
    writes it (`to_json`), every reader gets it through `DatasetVersion.manifest` (`from_json`),
    and `sha256` is what "the same dataset" means to training, evaluation and promotion."""

    schema_version: int
    version: str  # the version's name, e.g. v0003
    source: str  # the registered source that built it (pipelines.sources)
    class_names: list[str]  # index = label
    counts: dict[str, int]  # rows per split (file sources: only splits that received rows)
    rejects: int  # records in the rejects table
    bytes: int  # bytes of Parquet written
    tile_size: int
    tile_format: str
    seed: int
    params: dict[str, Any]  # the source's resolved parameters
    inputs: dict[str, Any]  # the source's input description, hashed into `input_hash`
    input_hash: str  # pipelines.build.input_hash: regeneration skips a build whose inputs match
    created_at: str  # ISO 8601, UTC
    build_seconds: float
    label_kind: str | None = None  # CLASS_LABEL or COUNT_LABEL; None: written before the field
    class_parts: list[list[int]] | None = None  # per class, its object classes (if any)
    data_digests: dict[str, str] | None = None  # per split (pipelines.integrity.split_digest)
    # fields this code does not know (a later writer's): kept, so the hash survives a round trip
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label_counts(self) -> list[int] | None:
        """For a count label, what each class counts (its name read as a number); None for
        classes."""
        kind = self.label_kind or CLASS_LABEL
        if kind not in LABEL_KINDS:
            raise ManifestError(f"label_kind {kind!r} is not one of {list(LABEL_KINDS)}")
        if kind == CLASS_LABEL:
            return None
        try:
            return [int(name) for name in self.class_names]
        except ValueError:
            raise ManifestError(
                f"a count label needs numeric class names, got {self.class_names[:5]}..."
            ) from None

    def to_json(self) -> dict[str, Any]:
        """The JSON object written as manifest.json (the optional fields only when set)."""
        out = {f.name: getattr(self, f.name) for f in _FIELDS if f.name != "extra"}
        out = {k: v for k, v in out.items() if not (k in _OPTIONAL and v is None)}
        out["num_classes"] = self.num_classes  # derived, kept for readers of the file itself
        if "digits" in self.inputs:  # also at the top level, where readers first found it
            out["digits"] = self.inputs["digits"]
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, values: Mapping[str, Any], where: str = "manifest.json") -> Manifest:
        """Read a manifest object; a missing or mistyped field is a ManifestError naming it."""
        known = {f.name for f in _FIELDS}
        for f in _FIELDS:
            if f.name in _OPTIONAL or f.name == "extra":
                continue
            if f.name not in values:
                raise ManifestError(f"{where} has no {f.name!r}: rebuild the version")
        for name, kinds in _KINDS.items():
            value = values.get(name)
            if value is not None and not isinstance(value, kinds):
                raise ManifestError(
                    f"{where}: {name!r} is a {type(value).__name__}, expected "
                    f"{' or '.join(k.__name__ for k in kinds)}: rebuild the version"
                )
        derived = {"num_classes", "digits"}
        extra = {k: v for k, v in values.items() if k not in known | derived}
        manifest = cls(**{k: v for k, v in values.items() if k in known - {"extra"}}, extra=extra)
        if values.get("num_classes", manifest.num_classes) != manifest.num_classes:
            raise ManifestError(
                f"{where}: num_classes {values['num_classes']} but {manifest.num_classes} "
                "class names: rebuild the version"
            )
        return manifest

    def sha256(self) -> str:
        """A stable hash of the manifest (logged with every run that read the version)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def with_digests(self, observed: Mapping[str, str]) -> Manifest:
        """This manifest with `data_digests` of the splits read replaced by the digests
        recomputed from their rows: equal to itself for an intact copy; a copy whose bytes
        changed gets another manifest, hence another hash. A version without data digests has
        nothing to compare against: itself."""
        if not self.data_digests:
            return self
        return dataclasses.replace(self, data_digests={**self.data_digests, **observed})


_FIELDS = dataclasses.fields(Manifest)
_OPTIONAL = {"label_kind", "class_parts", "data_digests"}
# the JSON kinds of the fields a reader indexes (the others are only passed along)
_KINDS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "version": (str,),
    "source": (str,),
    "class_names": (list,),
    "counts": (dict,),
    "rejects": (int,),
    "tile_size": (int,),
    "tile_format": (str,),
    "params": (dict,),
    "inputs": (dict,),
    "input_hash": (str,),
    "label_kind": (str,),
    "class_parts": (list,),
    "data_digests": (dict,),
}
