"""Tier 1: the operations' rules without Ray or MLflow — promotion decisions, regeneration specs
and content hashes, the `latest` pointer and retention, prediction stages, service checks."""

from __future__ import annotations

import io
import json
import math
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from jobs.ops.prediction import REQUEST_SCHEMA, annotation_name, tile_image_files
from jobs.ops.promotion import Decision, Evaluation, Policy, PromotionError, decide
from jobs.ops.regeneration import content_hash, listing_fingerprint, parse_spec
from jobs.ops.services import ServiceError, check_object_store, check_tracking_server
from jobs.store import ModelRef
from pipelines.build import BuildSummary, _manifest, generated_inputs
from pipelines.digits import load_digits
from pipelines.sources import digits_fingerprint, get_source, make_config
from pipelines.staging import StagingPlan
from pipelines.storage import (
    StorageError,
    list_versions,
    prune_versions,
    read_latest,
    write_latest,
)

# --- Promotion rules ------------------------------------------------------------------------------


def _eval(version: str, accuracy: float, latency: float = 5.0, sha: str = "a" * 64) -> Evaluation:
    return Evaluation(
        model=ModelRef("m", version),
        dataset="data/cm/v0001",
        dataset_sha256=sha,
        split="test",
        accuracy=accuracy,
        latency_ms=latency,
        run_id="run",
    )


def test_first_promotion_needs_only_the_gates() -> None:
    assert decide(_eval("1", 0.2), None, Policy()) == Decision(True, [])
    refused = decide(_eval("1", 0.2), None, Policy(min_accuracy=0.5))
    assert not refused.promote and "below the floor 0.5000" in refused.reasons[0]


def test_candidate_must_beat_the_champion_by_the_margin() -> None:
    policy = Policy(margin=0.05)
    assert decide(_eval("2", 0.80), _eval("1", 0.75), policy).promote  # exactly the margin
    worse = decide(_eval("2", 0.70), _eval("1", 0.75), policy)
    assert not worse.promote
    assert "does not beat the champion's (version 1) 0.7500 by the margin 0.05" in worse.reasons[0]
    assert not decide(_eval("2", 0.79), _eval("1", 0.75), policy).promote  # a gain below it


def test_gates_apply_even_to_a_much_better_candidate() -> None:
    slow = decide(_eval("2", 0.99, latency=80.0), _eval("1", 0.5), Policy(max_latency_ms=50))
    assert not slow.promote
    assert slow.reasons == ["latency 80.00 ms exceeds the ceiling 50 ms"]


def test_evaluations_on_different_datasets_are_refused() -> None:
    with pytest.raises(PromotionError, match="evaluated on different datasets"):
        decide(_eval("2", 0.9, sha="b" * 64), _eval("1", 0.1), Policy())


@pytest.mark.parametrize("kwargs", [{"margin": -0.1}, {"min_accuracy": 1.5}, {"max_latency_ms": 0}])
def test_policy_refuses_impossible_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Policy(**kwargs)
    assert Policy().max_latency_ms == math.inf


# --- Regeneration specs and hashes ----------------------------------------------------------------


def _spec(**overrides: object) -> dict:
    entry = {
        "name": "cm",
        "source": "cluttered_mnist",
        "out": "data/cm",
        "counts": {"train": 8, "val": 2, "test": 2},
        "params": {"original_size": 128},
    }
    return {"defaults": {"retention": 3}, "datasets": [{**entry, **overrides}]}


def test_spec_defaults_apply_and_counts_fill_in() -> None:
    (spec,) = parse_spec(_spec())
    assert spec.retention == 3
    assert spec.build_config().counts == {"train": 8, "val": 2, "test": 2}
    (partial,) = parse_spec(_spec(counts={"train": 4}))
    assert partial.build_config().counts == {"train": 4, "val": 128, "test": 128}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"datasets": "cm"}, "a mapping with a `datasets` list"),
        ({"datasets": [], "schedule": "daily"}, "unknown top-level keys \\['schedule'\\]"),
        (_spec(colour="red"), "dataset cm: unknown keys \\['colour'\\]"),
        ({"datasets": [{"name": "x", "source": "cluttered_mnist"}]}, "needs \\['out'\\]"),
        (_spec(source="mnist3d"), "unknown source"),
        (_spec(params={"original_size": 10}), "dataset 'cm'"),
        (_spec(retention=0), "retention must be >= 1"),
    ],
)
def test_bad_specs_name_the_problem(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_two_datasets_cannot_share_an_output_root() -> None:
    raw = _spec()
    raw["datasets"].append({**raw["datasets"][0], "name": "other"})
    with pytest.raises(ValueError, match="share the out \\['data/cm'\\]"):
        parse_spec(raw)


def test_content_hash_follows_inputs_and_parameters_only() -> None:
    (base,) = parse_spec(_spec())
    assert content_hash(base) == content_hash(parse_spec(_spec())[0])
    assert content_hash(base) == content_hash(parse_spec(_spec(rows_per_file=8))[0])
    for change in (
        {"seed": 1},
        {"counts": {"train": 9, "val": 2, "test": 2}},
        {"params": {"original_size": 256}},
        {"tile_size": 128},
    ):
        assert content_hash(parse_spec(_spec(**change))[0]) != content_hash(base), change


def test_regeneration_hashes_what_the_build_writes_as_its_input_hash() -> None:
    """One function makes both: a generated source's manifest (its inputs as the build
    describes them, digit set included) carries the hash regeneration computes beforehand.
    The value is pinned: a change would rebuild every dataset a schedule keeps."""
    (spec,) = parse_spec(_spec())
    config = spec.build_config()
    source = get_source(config.source)
    source_config = make_config(source, config.params)
    digits = digits_fingerprint(load_digits(None))
    plan = StagingPlan(
        ds=None, total=0, splits=[], class_names=[], inputs=generated_inputs(config, digits)
    )
    summary = BuildSummary(url="", version="v0001", rows={}, rejects=0, bytes=0, seconds=0.0)
    manifest = _manifest(config, source_config, source.tile_format, plan, summary, [])
    assert manifest.input_hash == content_hash(spec)
    assert content_hash(spec) == "c2d189e15d74be96e5d0467c490729b782638a3af96ab9b0be5c14a2584f6a92"


def test_listing_fingerprint_sees_changed_added_and_removed_files(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"one")
    first = listing_fingerprint(str(tmp_path))
    assert listing_fingerprint(str(tmp_path)) == first
    (tmp_path / "b.jpg").write_bytes(b"two")
    second = listing_fingerprint(str(tmp_path))
    assert second != first
    (tmp_path / "a.jpg").write_bytes(b"uno!")
    assert listing_fingerprint(str(tmp_path)) != second
    with pytest.raises(FileNotFoundError, match="does not exist"):
        listing_fingerprint(str(tmp_path / "missing"))


# --- The latest pointer and retention -------------------------------------------------------------


def _publish(root: Path, *versions: str) -> None:
    for version in versions:
        (root / version).mkdir(parents=True)
        (root / version / "manifest.json").write_text(json.dumps({"version": version}))


def test_latest_pointer_names_only_published_versions(tmp_path: Path) -> None:
    assert read_latest(str(tmp_path)) is None
    (tmp_path / "v0001").mkdir()  # files moved in, manifest not yet written
    with pytest.raises(StorageError, match="not a published version"):
        write_latest(str(tmp_path), {"version": "v0001"})
    assert read_latest(str(tmp_path)) is None
    (tmp_path / "v0001" / "manifest.json").write_text("{}")
    write_latest(str(tmp_path), {"version": "v0001", "content_hash": "h"})
    assert read_latest(str(tmp_path)) == {"version": "v0001", "content_hash": "h"}
    assert list_versions(str(tmp_path)) == ["v0001"]  # the pointer is not a version
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_retention_deletes_the_oldest_but_never_the_protected(tmp_path: Path) -> None:
    _publish(tmp_path, "v0001", "v0002", "v0009", "v0010")
    assert prune_versions(str(tmp_path), keep=2, protect={"v0001"}) == ["v0002"]
    assert list_versions(str(tmp_path)) == ["v0001", "v0009", "v0010"]
    assert not (tmp_path / "v0002").exists()
    assert prune_versions(str(tmp_path), keep=3) == []
    with pytest.raises(ValueError, match="keep must be >= 1"):
        prune_versions(str(tmp_path), keep=0)


# --- Prediction stages ----------------------------------------------------------------------------


def _png(mode: str, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 128).save(out, format="PNG")
    return out.getvalue()


def test_image_files_are_tiled_to_the_models_channels(tmp_path: Path) -> None:
    (tmp_path / "rgb.png").write_bytes(_png("RGB", (300, 200)))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    batch = pa.table(
        {
            "url": [str(tmp_path / "rgb.png"), str(tmp_path / "broken.jpg")],
            "ref": ["rgb.png", "broken.jpg"],
        }
    )
    out = tile_image_files(batch, tile_size=128, tile_format="png", proxy_max_side=64, channels=1)
    assert out.schema == REQUEST_SCHEMA
    good, bad = out.to_pylist()
    assert (good["height"], good["width"], good["channels"]) == (200, 300, 1)
    assert len(good["tiles"]) == 6 and good["error"] is None  # 2 rows × 3 columns of tiles
    assert (good["proxy_height"], good["proxy_width"]) == (43, 64)
    assert bad["image_id"] == "broken.jpg" and "cannot decode image" in bad["error"]
    assert bad["tiles"] is None


def test_annotation_names_stay_inside_the_folder() -> None:
    assert annotation_name("train/cat 1.jpg") == "train/cat_1.jpg.png"
    assert annotation_name("../../etc/passwd") == "etc/passwd.png"


# --- Services -------------------------------------------------------------------------------------


def test_unreachable_tracking_server_is_named_quickly() -> None:
    start = time.monotonic()
    with pytest.raises(ServiceError, match=r"MLflow tracking server http://127\.0\.0\.1:1 "):
        check_tracking_server("http://127.0.0.1:1")
    assert time.monotonic() - start < 10
    with pytest.raises(ServiceError, match="directory /nonexistent does not exist"):
        check_tracking_server("sqlite:////nonexistent/mlflow.db")


def test_unreachable_object_store_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    start = time.monotonic()
    with pytest.raises(ServiceError, match=r"object store http://127\.0\.0\.1:1 .* is unreachable"):
        check_object_store("s3://datasets/cm/v0001")
    assert time.monotonic() - start < 15
    check_object_store("data/cm/v0001")  # local paths are not the object store's business


def test_jobs_name_an_unreachable_service_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from jobs import predict, promote, regenerate

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec(out="s3://datasets/cm")))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    tracking = r"MLflow tracking server http://127\.0\.0\.1:1 \(MLFLOW_TRACKING_URI\)"
    for main, argv in (
        (predict.main, ["--model", "models:/m@champion", "--images", "x", "--out", "p.parquet"]),
        (promote.main, ["--model", "m", "--candidate", "1", "--dataset", "data/cm/v0001"]),
        (promote.main, ["--model", "m", "--rollback"]),
        (regenerate.main, ["--spec", str(spec)]),
    ):
        with pytest.raises(ServiceError, match=tracking):
            main(argv)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    store = r"object store http://127\.0\.0\.1:1 \(AWS_ENDPOINT_URL\) is unreachable"
    with pytest.raises(ServiceError, match=store + ".*s3://datasets/cm"):
        regenerate.main(["--spec", str(spec)])
    with pytest.raises(ServiceError, match=store):
        promote.main(["--model", "m", "--candidate", "1", "--dataset", "s3://datasets/cm/v0001"])
    assert not (tmp_path / "mlflow.db").exists()  # nothing was started or written


def test_every_job_names_an_unreachable_object_store_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One `error:` line naming the store and the URL, in seconds, not a traceback after retries."""
    from jobs import build_dataset, evaluate, train, verify

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    store = r"object store http://127\.0\.0\.1:1 \(AWS_ENDPOINT_URL\) is unreachable"
    dataset = "s3://datasets/cm/v0001"
    for main, argv in (
        (build_dataset.main, ["--source", "cluttered_mnist", "--out", "s3://datasets/cm"]),
        (build_dataset.main, ["--source", "dslr", "--input", "s3://raw/x", "--out", str(tmp_path)]),
        (train.main, ["--recipe", "tiny_cpu", "--dataset", dataset]),
        (evaluate.main, ["--model", "models:/m/1", "--dataset", dataset]),
        (verify.main, ["--dataset", dataset]),
    ):
        start = time.monotonic()
        with pytest.raises(ServiceError, match=store + ".*s3://"):
            main(argv)
        assert time.monotonic() - start < 15
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.iterdir())


def test_a_ray_address_where_nothing_answers_is_named_at_once(tmp_path: Path) -> None:
    """`ray.init(address=...)` waits for minutes, silently, where no cluster answers; the jobs
    name such a RAY_ADDRESS in seconds (the build here: it starts Ray before any other work)."""
    import subprocess
    import sys

    from cli_support import REPO_ROOT

    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "PYTHONPATH": str(REPO_ROOT)}
    start = time.monotonic()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "jobs.build_dataset", "--source", "cluttered_mnist"),
            *("--out", str(tmp_path / "cm"), "--train", "4", "--val", "2", "--test", "2"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - start < 60
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: RAY_ADDRESS=127.0.0.1:1: no Ray cluster answers there" in result.stderr
    assert not list((tmp_path / "cm").glob("v*"))  # nothing published
