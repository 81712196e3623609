"""Helpers for the operations tests: registry versions of known accuracy, derived datasets.

A "constant" model is the tiny saccader with its classifier's last layer set to always answer one
class: its accuracy on a split is exactly that class's share, so promotion tests can order models
by quality without training them.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import torch

from jobs.core.packaging import log_and_register
from jobs.store import ensure_experiment, tracking_uri
from jobs.training.recipes import DataSpec, build_model, make_recipe
from pipelines.integrity import DIGEST_COLUMN, digest_of, split_digest
from pipelines.schema import TRAIN_COLUMNS
from pipelines.storage import DatasetVersion, Staging, write_parquet

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARD = "part-00000000.parquet"


def register_constant_model(
    name: str, dataset: str, answer: int, overrides: dict[str, str] | None = None
) -> str:
    """Register a version of `name` that always predicts class `answer` (the tiny_cpu recipe
    with `overrides`); returns its version."""
    from mlflow.tracking import MlflowClient

    version = DatasetVersion.open(dataset)
    manifest = version.manifest
    config = make_recipe("tiny_cpu", dataset, overrides or {})
    data = DataSpec.of(manifest, channels=1)
    torch.manual_seed(0)
    model = build_model(config, data)
    last = model.classifier[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)
        last.bias[answer] = 10.0
    state = {"model": model.state_dict(), "train": config.to_dict(), "data": data.to_dict()}
    client = MlflowClient(tracking_uri())
    run = client.create_run(ensure_experiment("ops-tests"), run_name=f"{name} answers {answer}")
    example = version.read_head("test", 2, columns=TRAIN_COLUMNS)
    registered = log_and_register(
        state, example, run_id=run.info.run_id, registered_model=name, validation={}
    )
    client.set_terminated(run.info.run_id)
    return registered


def derived_dataset(source: str, root: Path, *, splits: tuple[str, ...]) -> str:
    """A new published version of `source`'s training split, whose test split is the rows of
    `splits` together (a larger held-out set, where classes repeat); returns its URL."""
    version = DatasetVersion.open(source)
    test = pa.concat_tables([version.read(s) for s in splits])
    test = test.set_column(
        test.schema.get_field_index("split"), "split", pa.array(["test"] * test.num_rows)
    )
    staging = Staging.create(str(root), "v0001")
    counts, digests = {}, {}
    for split, table in (("train", version.read("train")), ("test", test)):
        directory = f"{staging.path}/split={split}"
        staging.fs.makedirs(directory, exist_ok=True)
        write_parquet(staging.fs, f"{directory}/{SHARD}", table)
        counts[split] = table.num_rows
        # The rows keep their stored digests; the split's digest is over this version's files.
        digests[split] = split_digest({SHARD: digest_of(table.column(DIGEST_COLUMN).to_pylist())})
    derived = dataclasses.replace(
        version.manifest,
        counts=counts,
        data_digests=digests,
        extra={**version.manifest.extra, "derived_from": source},
    )
    staging.publish(derived)
    return str(root / "v0001")


def label_counts(dataset: str, split: str = "test") -> Counter:
    labels = DatasetVersion.open(dataset).read(split, ["label"]).column("label").to_pylist()
    return Counter(labels)


def free_port_block(size: int) -> int:
    """The first port of `size` consecutive free loopback ports (below the ephemeral range and
    above Ray's default worker ports 10002-19999)."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - size)
        try:
            for port in range(base, base + size):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no block of {size} free ports found")


def run_stack(*args: str, state_dir: Path) -> subprocess.CompletedProcess:
    """`python -m infra.stack ARGS --state-dir DIR`, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "infra.stack", *args, "--state-dir", str(state_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def exported(stdout: str) -> dict[str, str]:
    """The variables of `export K=V` lines."""
    env = {}
    for line in stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def submit(address: str, env: dict[str, str], *entrypoint: str, timeout: int = 300) -> str:
    """`ray job submit` of `python -m ENTRYPOINT` with the repository's runtime environment."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            "--address",
            address,
            "--runtime-env",
            "infra/runtime_env.yaml",
            "--",
            "python",
            "-m",
            *entrypoint,
        ],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    return result.stdout
