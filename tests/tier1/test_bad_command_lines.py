"""Tier 1: a catalogue of bad command lines for every job, run in this process through each job's
`main` as `python -m jobs.<name>` runs it (`jobs.common.run_main`). Each must fail the way the
jobs promise: exit status 2, exactly one `error: ...` line on stderr naming the bad value, no
traceback, and Ray never started."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from manifest_support import manifest

from jobs.common import run_main

# (job, arguments, a fragment the error line must contain). `{ds}` is a valid published dataset
# version, `{tmp}` a scratch folder, `{file}` a regular file, `{spec}` a valid regeneration spec.
UNKNOWN_VALUES = [
    ("build_dataset", "--source imagenet --out {tmp}/o", "unknown source 'imagenet'"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --tile-format webp", "'webp'"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --set task=triple", "'triple'"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --set window=64", "['window']"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --set noequals", "'noequals'"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --colour red", "--colour"),
    ("train", "--recipe huge --dataset {ds}", "unknown recipe 'huge'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set epoch=3", "unknown setting 'epoch'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set objective.kind=sum", "'sum'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model=nosuch", "'nosuch'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.wings=2", "['wings']"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.locator=grid", "'grid'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg=3", "'model_cfg'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set =3", "'=3'"),
    ("evaluate", "--model models:/m/1 --dataset {ds} --split validation", "'validation'"),
    ("predict", "--model models:/m/1 --dataset {ds} --out {tmp}/p.parquet --split x", "'x'"),
    ("predict", "--model models:/m/1 --images {tmp} --out {tmp}/p --tile-format gif", "'gif'"),
    ("promote", "--model m --candidate 1 --dataset {ds} --split train", "'train'"),
    ("quickstart", "--models foo", "'foo'"),
    ("quickstart", "--models ,", "--models ','"),
    ("regenerate", "--spec {spec} --only nosuch", "['nosuch']"),
]
BAD_NUMBERS = [
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --train -5", "'train': -5"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --train many", "'many'"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --tile-size 8", "got 8"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --rows-per-file 0", "got 0"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --seed x", "'x'"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --set canvas_size=40", "40"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --set clutter=lots", "'lots'"),
    ("build_dataset", "--source megapixel_mnist --out {tmp}/o --set canvas_size=60", "60"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --train 0 --val 0 --test 0", "0"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set epochs=many", "epochs='many'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set batch_size=0", "batch_size must be >= 1"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set lr=nan", "lr='nan'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set lr=inf", "lr='inf'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set lr=-1", "got -1"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set objective.kl_weight=-1", "got -1"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set max_failures=-1", "got -1"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set seed=x", "seed='x'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.glimpses=2.5", "'2.5'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.glimpses=0", "got 0"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.window=wide", "'wide'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.pooled_level=3", "got 3"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.encoder_blocks=a,b", "'a,b'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.encoder_blocks=1,0", "(1, 0)"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.max_image_fraction=nan", "nan"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.min_image_fraction=0.9", "0.9"),
    ("train", "--recipe cluttered_cpu --dataset {ds} --set objective.score_weight=0", "weight > 0"),
    ("evaluate", "--model models:/m/1 --dataset {ds} --batch-size 0", "got 0"),
    ("evaluate", "--model models:/m/1 --dataset {ds} --batch-size x", "'x'"),
    ("predict", "--model models:/m/1 --dataset {ds} --out {tmp}/p --batch-size 0", "got 0"),
    ("predict", "--model models:/m/1 --images {tmp} --out {tmp}/p --tile-size 0", "got 0"),
    ("predict", "--model models:/m/1 --images {tmp} --out {tmp}/p --proxy-side -1", "got -1"),
    ("predict", "--model models:/m/1 --dataset {ds} --out {tmp}/p --actors 0", "got 0"),
    ("predict", "--model models:/m/1 --dataset {ds} --out {tmp}/p --actor-cpus 0", "got 0"),
    ("predict", "--model models:/m/1 --dataset {ds} --out {tmp}/p --actor-cpus nan", "nan"),
    ("promote", "--model m --candidate 1 --dataset {ds} --margin 2", "2.0"),
    ("promote", "--model m --candidate 1 --dataset {ds} --margin nan", "nan"),
    ("promote", "--model m --candidate 1 --dataset {ds} --min-accuracy -0.5", "-0.5"),
    ("promote", "--model m --candidate 1 --dataset {ds} --max-latency-ms 0", "got 0"),
    ("promote", "--model m --candidate 1 --dataset {ds} --batch-size 0", "got 0"),
    ("quickstart", "--train 0", "got 0"),
    ("quickstart", "--train abc", "'abc'"),
    ("quickstart", "--epochs 0", "got 0"),
    ("quickstart", "--out {tmp}/q --original-size 50", "--original-size 50"),
    ("verify", "--dataset {ds} --batch-size 0", "got 0"),
]
BAD_PATHS = [
    ("build_dataset", "--source cluttered_mnist --out {file}/data", "{file}/data"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --mnist-idx {tmp}/none", "none"),
    ("build_dataset", "--source dslr --out {tmp}/o --input {tmp}/none", "{tmp}/none"),
    ("build_dataset", "--source dslr --out {tmp}/o --input {tmp} --labels {tmp}/x.csv", "x.csv"),
    ("build_dataset", "--source sc2_replays --out {tmp}/o --input {tmp}/none", "{tmp}/none"),
    ("build_dataset", "--source cluttered_mnist --out {dsroot} --version v0001", "v0001"),
    ("train", "--recipe tiny_cpu --dataset {tmp}/v0009", "{tmp}/v0009"),
    ("train", "--recipe tiny_cpu --dataset {old}", "schema version 2"),
    ("evaluate", "--model models:/m/1 --dataset {tmp}/v0009", "{tmp}/v0009"),
    ("evaluate", "--model models:/no-such/1 --dataset {ds}", "models:/no-such/1"),
    ("predict", "--model models:/m/1 --dataset {ds} --out {tmp}", "--out {tmp} is a directory"),
    ("predict", "--model models:/m/1 --dataset {ds} --out {file}/p/x.parquet", "{file} is a file"),
    ("build_dataset", "--source dslr --out {tmp}/o --input {tmp} --labels {hdr}", "lists no files"),
    ("build_dataset", "--source dslr --out {tmp}/o --input {tmp} --labels {bin}", "{bin} is not"),
    ("predict", "--model models:/no-such@champion --dataset {ds} --out {tmp}/p", "no-such"),
    ("predict", "--model no-such --dataset {ds} --out {tmp}/p", "no-such"),
    ("promote", "--model no-such --candidate 1 --dataset {ds}", "no-such"),
    ("quickstart", "--out {file}/q", "{file}/q"),
    ("regenerate", "--spec {tmp}/none.yaml", "{tmp}/none.yaml"),
    ("regenerate", "--spec {file}", "{file}"),
    ("regenerate", "--spec {badyaml}", "{badyaml} is not valid YAML"),
    ("verify", "--dataset {tmp}/v0009", "{tmp}/v0009"),
    ("verify", "--dataset {old}", "schema version 2"),
]
BAD_SETTINGS = [
    ("train", "--recipe tiny_cpu --dataset {ds} --set use_gpu=maybe", "use_gpu='maybe'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.feed_glimpse=off", "'off'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.inhibit_return=2", "'2'"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.num_classes=3", "num_classes=3"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.in_channels=3", "in_channels=3"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set model_cfg.class_parts=1", "class_parts"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set glimpse_parts=true", "glimpse_parts"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set registered_model=", "registered_model"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --set original_size=50", "50"),
    ("promote", "--model m", "--candidate"),
    ("promote", "--model m --candidate abc --dataset {ds}", "abc"),
    ("predict", "--model models:/m/1 --out {tmp}/p", "--dataset --images"),
    ("predict", "--model models:/m/1 --dataset {ds} --images {tmp} --out {tmp}/p", "--images"),
]
UNMEETABLE_RESOURCES = [
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --num-cpus 0", "got 0"),
    ("build_dataset", "--source cluttered_mnist --out {tmp}/o --num-cpus -2", "got -2"),
    ("train", "--recipe tiny_cpu --dataset {ds} --num-cpus 0", "got 0"),
    ("train", "--recipe tiny_cpu --dataset {ds} --num-cpus -1", "got -1"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set num_workers=64", "num_workers=64"),
    ("train", "--recipe tiny_cpu --dataset {ds} --num-cpus 1", "has 1"),
    (
        "train",
        "--recipe tiny_cpu --dataset {ds} --num-cpus 2 --set num_workers=2 --set cpus_per_worker=1",
        "num_workers=2 × cpus_per_worker=1",
    ),
    ("train", "--recipe tiny_cpu --dataset {ds} --set use_gpu=true", "needs 1 GPU(s)"),
    ("train", "--recipe tiny_cpu --dataset {ds} --set use_gpu=true --set num_workers=64", "GPU"),
    ("predict", "--model models:/m/1 --dataset {ds} --out {tmp}/p --num-cpus 0", "got 0"),
    ("quickstart", "--num-cpus 0", "got 0"),
    ("quickstart", "--out {tmp}/q --num-cpus 1", "has 1"),
    ("regenerate", "--spec {spec} --num-cpus 0", "got 0"),
]
CASES = {
    "unknown value": UNKNOWN_VALUES,
    "bad number": BAD_NUMBERS,
    "bad path or URL": BAD_PATHS,
    "bad setting": BAD_SETTINGS,
    "unmeetable resources": UNMEETABLE_RESOURCES,
}


def _params() -> Iterator[object]:
    for group, cases in CASES.items():
        for job, args, fragment in cases:
            yield pytest.param(job, args, fragment, id=f"{group}: {job} {args}")


def test_the_catalogue_covers_every_job_and_class() -> None:
    assert sum(len(cases) for cases in CASES.values()) >= 60
    jobs = {job for cases in CASES.values() for job, _, _ in cases}
    assert jobs == {
        "build_dataset",
        "train",
        "evaluate",
        "predict",
        "promote",
        "regenerate",
        "quickstart",
        "verify",
    }


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real published dataset (the build's own writer, no Ray), an old-schema one, a file, a
    regeneration spec, a header-only and a binary labels CSV, and a scratch folder."""
    from pipelines.build import _data_digests, write_shard
    from pipelines.digits import load_digits, split_digits
    from pipelines.sources import generate_rows
    from pipelines.storage import Staging

    root = tmp_path_factory.mktemp("bad-cli")
    staging = Staging.create(str(root / "cm"), "v0001")
    table = generate_rows(
        {"id": np.arange(2)},
        source="cluttered_mnist",
        params={"original_size": 128},
        pools=split_digits(load_digits(), seed=0),
        seed=0,
        counts={"train": 1, "test": 1},  # evaluate and predict read the test split
        tile_size=64,
        tile_format="png",
    )
    summary = write_shard(table, staging_url=staging.path).to_pylist()
    staging.publish(
        manifest(
            class_names=[str(i) for i in range(55)],
            counts={"train": 1, "test": 1},
            data_digests=_data_digests(summary),
        )
    )
    Staging.create(str(root / "old"), "v0001").publish(manifest(schema_version=2))
    (root / "file").write_text("not a folder")
    spec = {"datasets": [{"name": "cm", "source": "cluttered_mnist", "out": str(root / "r")}]}
    (root / "spec.json").write_text(json.dumps(spec))
    (root / "bad.yaml").write_text("datasets: [\n  - name: x\n    source: {unclosed\n")
    (root / "scratch").mkdir()
    (root / "header-only.csv").write_text("path,label,split\n")
    (root / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    return {
        "hdr": str(root / "header-only.csv"),
        "bin": str(root / "binary.csv"),
        "ds": str(root / "cm" / "v0001"),
        "dsroot": str(root / "cm"),
        "old": str(root / "old" / "v0001"),
        "file": str(root / "file"),
        "spec": str(root / "spec.json"),
        "badyaml": str(root / "bad.yaml"),
        "tmp": str(root / "scratch"),
    }


@contextlib.contextmanager
def own_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Undo what a job's start-up does to this process, so that what it wrote can be read and
    the next case starts clean: a quiet job points its stdout and stderr descriptors at its log
    file (under fd capture, sys.stdout and sys.stderr are descriptors of their own) and keeps a
    process-wide console."""
    monkeypatch.setenv("SACCADE_LOG_DIR", str(tmp_path / "logs"))
    try:
        console = importlib.import_module("jobs.console")
        monkeypatch.setattr(console, "_current", console._current)
    except ModuleNotFoundError:
        pass
    handlers = list(logging.getLogger().handlers)
    saved = {fd: os.dup(fd) for fd in {1, 2, sys.stdout.fileno(), sys.stderr.fileno()}}
    try:
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        logging.getLogger().handlers[:] = handlers


@pytest.mark.parametrize(("job", "args", "fragment"), list(_params()))
def test_bad_command_line(
    job: str,
    args: str,
    fragment: str,
    places: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import ray

    if "use_gpu=true" in args and "num_workers=64" not in args and torch.cuda.is_available():
        pytest.skip("a GPU request is refused only where there is no GPU")
    monkeypatch.chdir(tmp_path)  # whatever a job writes by default stays in the test's folder
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv = args.format(**places).split()
    module = importlib.import_module(f"jobs.{job}")
    with own_process(monkeypatch, tmp_path), pytest.raises(SystemExit) as exit_info:
        run_main(module.main, argv)
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    assert err.strip().splitlines()[-1] == errors[0], err[-3000:]  # the message is one line
    assert fragment.format(**places) in errors[0], errors[0]
    assert "Traceback" not in err
    assert not ray.is_initialized()


def test_a_local_job_beside_another_takes_the_next_dashboard_port() -> None:
    """Ray refuses a taken dashboard port: a build started while a training's local Ray holds
    the job's port must move to the next free one, not fail at start-up."""
    import socket

    from jobs.common import free_local_port

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        chosen = free_local_port(port, tries=20)
        assert chosen != port and port < chosen < port + 20
