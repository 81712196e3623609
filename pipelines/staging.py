"""The staging record every source stage emits, before ``pipelines.build.write_shard`` splits it.

A staging row is a schema-v2 row (``pipelines.tiling.image_row``) or a reject
(``pipelines.tiling.reject_row``), plus the global index ``_index`` that names the output files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipelines.schema import IMAGE_SCHEMA
from pipelines.tiling import REJECT_REASON, REJECT_REF

# IMAGE_SCHEMA plus what the writer needs: the global index (file names) and reject fields.
STAGING_SCHEMA = (
    IMAGE_SCHEMA.append(pa.field("_index", pa.int64()))
    .append(pa.field(REJECT_REASON, pa.string()))
    .append(pa.field(REJECT_REF, pa.string()))
)


@dataclass
class StagingPlan:
    """A source's staging rows as a (lazy) Ray dataset, and what the manifest says of its inputs.
    A generated source's plan is `pipelines.build`'s; a file source carries its own
    (`pipelines.sources.FileSource.plan`)."""

    ds: Any  # ray.data.Dataset of STAGING_SCHEMA rows
    total: int  # records in: the build checks rows + rejects == total
    splits: list[str]  # splits in output order
    class_names: list[str]
    inputs: dict[str, Any]  # input description, hashed into the manifest's input_hash
    class_parts: tuple[tuple[int, ...], ...] = ()  # per class, its object classes (if any)


def staging_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Staging rows (dicts with ``_index``) as a table of STAGING_SCHEMA."""
    columns = {f.name: [r.get(f.name) for r in rows] for f in STAGING_SCHEMA}
    return pa.Table.from_pydict(columns, schema=STAGING_SCHEMA)
