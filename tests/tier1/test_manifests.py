"""Tier 1: the cluster manifests, the image and the runtime environment agree with the code.

Every manifest parses; every job entry point names a real module of this repository and its
arguments parse (recipes, sources and `--set` keys included); every container runs the image the
Dockerfile builds, whose tag is the project's version and whose Ray and Python match the pins; the
jobs' runtime environments are the same everywhere and install nothing.
"""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.common import parse_key_values
from jobs.ops.regeneration import load_spec
from jobs.training.recipes import RECIPES, make_recipe
from pipelines.sources import SOURCES

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in _documents() if d["kind"] == kind]


def _walk(node: Any, key: str) -> list[Any]:
    """Every value stored under `key`, at any depth."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            found += [v] if k == key else []
            found += _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            found += _walk(item, key)
    return found


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dockerfile() -> dict[str, str]:
    text = DOCKERFILE.read_text()
    return {
        "from": re.search(r"^FROM (\S+)", text, re.M).group(1),
        "workdir": re.search(r"^WORKDIR (\S+)", text, re.M).group(1),
        "image": re.search(r'io\.saccade\.image="([^"]+)"', text).group(1),
    }


def _pin(name: str) -> str:
    for dep in _pyproject()["project"]["dependencies"]:
        match = re.fullmatch(rf"{name}(\[[^\]]*\])?==(\S+)", dep)
        if match:
            return match.group(2)
    raise AssertionError(f"{name} is not pinned exactly in pyproject.toml")


def _entrypoints() -> list[tuple[str, list[str]]]:
    """(manifest, argv) of every `python -m jobs.X ...` a manifest runs."""
    found = []
    for name, doc in _documents():
        commands = [shlex.split(e) for e in _walk(doc, "entrypoint")]
        commands += [c for c in _walk(doc, "command") if isinstance(c, list)]
        for argv in commands:
            if "python" in argv:
                found.append((name, argv[argv.index("python") :]))
    return found


def test_every_manifest_parses_and_the_set_is_complete() -> None:
    kinds = sorted(d["kind"] for _, d in _documents())
    assert kinds == ["ConfigMap", "CronJob", "RayCluster", "RayJob", "RayJob", "RayJob"]
    jobs = {e[1][2] for e in _entrypoints()}
    assert jobs == {"jobs.build_dataset", "jobs.train", "jobs.promote", "jobs.regenerate"}


def test_every_container_runs_the_image_the_dockerfile_builds() -> None:
    docker = _dockerfile()
    images = {image for _, doc in _documents() for image in _walk(doc, "image")}
    assert images == {docker["image"]}
    repository, tag = docker["image"].rsplit(":", 1)
    assert repository.endswith("/saccade") and tag == _pyproject()["project"]["version"]
    # The base image carries the pinned Ray and the supported Python.
    assert docker["from"] == f"rayproject/ray:{_pin('ray')}-py311-gpu"
    assert _pyproject()["project"]["requires-python"].startswith(">=3.11")
    (cluster,) = _by_kind("RayCluster")
    assert cluster["spec"]["rayVersion"] == _pin("ray")


@pytest.mark.parametrize(("manifest", "argv"), _entrypoints(), ids=lambda x: str(x)[:40])
def test_entry_points_name_real_modules_and_parse(manifest: str, argv: list[str]) -> None:
    assert argv[:2] == ["python", "-m"], f"{manifest}: {argv}"
    module = argv[2]
    assert (REPO / (module.replace(".", "/") + ".py")).is_file(), f"{manifest}: no {module}"
    args = importlib.import_module(module).parse_args(argv[3:])  # unknown flags exit here
    if getattr(args, "recipe", None):
        assert args.recipe in RECIPES
        config = make_recipe(args.recipe, args.dataset, parse_key_values(args.set, flag="--set"))
        # A GPU recipe runs only on the GPU workers (and they exist).
        assert config.use_gpu
    if getattr(args, "source", None):
        assert args.source in SOURCES
    if getattr(args, "spec", None):
        specs = load_spec(str(REPO / args.spec))  # relative to the working directory, /app
        assert {s.source for s in specs} <= set(SOURCES)


def test_the_cluster_has_a_cpu_head_cpu_and_gpu_workers_and_the_shared_environment() -> None:
    """CPU-only work (builds, evaluation, prediction) has CPU nodes to go to, not GPU ones."""
    (cluster,) = _by_kind("RayCluster")
    (config,) = _by_kind("ConfigMap")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    workers = {k: g["template"]["spec"]["containers"][0] for k, g in groups.items()}
    assert "nvidia.com/gpu" not in workers["cpu"]["resources"]["limits"]
    assert workers["gpu"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for container in [head, *workers.values()]:
        refs = [
            ref["configMapRef"]["name"] for ref in container["envFrom"] if "configMapRef" in ref
        ]
        assert refs == [config["metadata"]["name"]]
    assert {"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"} <= set(config["data"])


def test_jobs_are_submitted_to_this_cluster_with_the_same_runtime_environment() -> None:
    (cluster,) = _by_kind("RayCluster")
    name = cluster["metadata"]["name"]
    local = yaml.safe_load((REPO / "infra" / "runtime_env.yaml").read_text())
    assert local["working_dir"] == "."
    for job in _by_kind("RayJob"):
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": name}
        runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
        assert runtime_env["env_vars"] == local["env_vars"]
        assert runtime_env["working_dir"] == _dockerfile()["workdir"]  # the image's repository
    (cron,) = _by_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["workingDir"] == _dockerfile()["workdir"]
    command = container["command"]
    assert command[:3] == ["ray", "job", "submit"]
    assert command[command.index("--address") + 1] == f"http://{name}-head-svc:8265"
    assert command[command.index("--runtime-env") + 1] == "infra/runtime_env.yaml"
    # Dependencies live in the image: no runtime environment installs packages per job.
    for runtime_env in [
        local,
        *(yaml.safe_load(j["spec"]["runtimeEnvYAML"]) for j in _by_kind("RayJob")),
    ]:
        assert not {"pip", "conda", "uv", "py_modules"} & set(runtime_env)


def test_the_cluster_asks_for_its_token() -> None:
    """Ray token authentication: every Ray API call needs the cluster's token, and the CronJob
    that submits from outside the cluster carries the one KubeRay keeps."""
    (cluster,) = _by_kind("RayCluster")
    assert cluster["spec"]["authOptions"]["mode"] == "token"
    name = cluster["metadata"]["name"]
    for cron in _by_kind("CronJob"):
        env = {e["name"]: e for e in _walk(cron, "env")[0]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        secret = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": name, "key": "auth_token"}
