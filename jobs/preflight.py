"""The checks every job runs before it asks Ray for anything: what the job needs (CPUs, GPUs)
against what the cluster it will use can give, so that an impossible request is one `error:`
line instead of a placement that waits forever.

A job states its `Demand` and starts Ray through `start_ray`. Without ``RAY_ADDRESS`` the local
Ray will have ``--num-cpus`` (default: this machine's CPUs) and this machine's GPUs, which are
known before Ray starts. A cluster named by ``RAY_ADDRESS`` is checked right after joining it and
before any work is submitted: against the most its autoscaler may reach where it has one (a
KubeRay group that scales from zero GPUs is not refused), else against its current resources.

Settings (types, ranges, consistency with the dataset) are checked where they are parsed:
`jobs.training.recipes.make_recipe` and `check_against_dataset` below.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs import console
from jobs.common import init_ray

if TYPE_CHECKING:  # the recipes import torch; preflight runs before anything heavy
    from jobs.training.recipes import DataSpec

# A Ray Data read or map task asks for one whole CPU: a job whose actors or trainer workers hold
# every CPU starves its own input and waits forever (measured on 2 cores, ENVIRONMENT.md).
DATA_CPUS = 1.0


@dataclass(frozen=True)
class Demand:
    """What a job asks of Ray at its peak, and what to say when it is too much."""

    cpus: float  # CPUs held at once
    cpus_what: str  # how they add up: "2 training workers × 0.5 CPU + 1 CPU for the data read"
    fix: str  # what to change when the CPUs fall short
    gpus: float = 0.0  # GPUs held at once
    gpus_what: str = ""  # where they come from: "use_gpu=true, 1 GPU per worker × 2 workers"
    gpu_fix: str = ""  # what to change when the GPUs fall short


@dataclass(frozen=True)
class Capacity:
    """What the Ray the job will use can give."""

    where: str  # for the message: "this machine" or "the cluster at <address>"
    cpus: float
    gpus: float


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def training_demand(num_workers: int, cpus_per_worker: float, use_gpu: bool) -> Demand:
    """A TorchTrainer's workers plus the Ray Data read that feeds them."""
    return Demand(
        cpus=num_workers * cpus_per_worker + DATA_CPUS,
        cpus_what=(
            f"num_workers={num_workers} × cpus_per_worker={cpus_per_worker:g} + "
            f"{DATA_CPUS:g} CPU for the data read"
        ),
        fix="lower --set num_workers or --set cpus_per_worker, or give Ray more CPUs",
        gpus=float(num_workers) if use_gpu else 0.0,
        gpus_what=f"use_gpu=true with num_workers={num_workers} (one GPU per worker)",
        gpu_fix="--set use_gpu=false, or run it where there are GPUs",
    )


def prediction_demand(actors: int, actor_cpus: float, actor_gpus: float = 0.0) -> Demand:
    """The model actors plus the read/tile tasks that feed them."""
    return Demand(
        cpus=actors * actor_cpus + DATA_CPUS,
        cpus_what=f"--actors {actors} × --actor-cpus {actor_cpus:g} + {DATA_CPUS:g} CPU for "
        "reading the inputs",
        fix="lower --actors or --actor-cpus, or give Ray more CPUs",
        gpus=actors * actor_gpus,
        gpus_what=f"--actors {actors} × --actor-gpus {actor_gpus:g}",
        gpu_fix="leave out --actor-gpus (the model runs on the CPU), or run where there are GPUs",
    )


BUILD_DEMAND = Demand(
    cpus=DATA_CPUS,
    cpus_what="the build's Ray Data tasks (1 CPU each)",
    fix="give Ray at least one CPU",
)


def local_capacity(num_cpus: int | None) -> Capacity:
    """The local Ray `init_ray(num_cpus)` would start: ``num_cpus`` (default: the CPUs this
    process may use, as Ray counts them) and this machine's GPUs."""
    if num_cpus is not None and num_cpus < 1:
        raise ValueError(f"--num-cpus must be >= 1, got {num_cpus}")
    cpus = num_cpus if num_cpus is not None else _machine_cpus()
    return Capacity(where="this machine", cpus=float(cpus), gpus=float(_machine_gpus()))


def _machine_cpus() -> int:
    try:
        from ray._private.utils import get_num_cpus  # cgroup-aware, as `ray.init` counts

        return int(get_num_cpus())
    except Exception:  # a Ray without this helper: the scheduler affinity is the next best
        return len(os.sched_getaffinity(0))


def _machine_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def cluster_capacity() -> Capacity:
    """The joined cluster's resources (Ray initialised): the most its autoscaler may reach when
    it has one, else what its nodes have now."""
    import ray

    limits: Mapping[str, Any] | None = None
    try:
        from ray._private.state import state

        limits = state.get_max_resources_from_cluster_config()  # None without an autoscaler
    except Exception:  # the private helper moved: fall back on the nodes there are
        limits = None
    resources = limits or ray.cluster_resources()
    address = os.environ.get("RAY_ADDRESS") or "local"
    return Capacity(
        where=f"the cluster at {address}",
        cpus=float(resources.get("CPU", 0)),
        gpus=float(resources.get("GPU", 0)),
    )


def check_demand(demand: Demand, capacity: Capacity) -> None:
    """Raise a ValueError naming the demand, the capacity and the fix when it cannot be met."""
    if demand.gpus > capacity.gpus:
        raise ValueError(
            f"{demand.gpus_what} needs {demand.gpus:g} GPU(s), but {capacity.where} has "
            f"{capacity.gpus:g}: {demand.gpu_fix}"
        )
    # A tolerance for fractional CPUs: 3 × 0.1 + 1 is not exactly 1.3 in floating point.
    if demand.cpus > capacity.cpus + 1e-9:
        raise ValueError(
            f"{demand.cpus_what} = {demand.cpus:g} CPUs, but {capacity.where} has "
            f"{capacity.cpus:g}: {demand.fix}"
        )


def start_ray(num_cpus: int | None, demand: Demand) -> None:
    """Check `demand` against the Ray this job will use, then start or join it.

    Local: checked before Ray starts. ``RAY_ADDRESS``: checked right after joining, before any
    task or actor is submitted (a cluster's size is known only to the cluster)."""
    clustered = bool(os.environ.get("RAY_ADDRESS"))
    if not clustered:
        check_demand(demand, local_capacity(num_cpus))
    dashboard = init_ray(num_cpus)
    if dashboard:
        console.current().say(f"Ray dashboard: {dashboard} (while this job runs)")
    if clustered:
        check_demand(demand, cluster_capacity())


def check_against_dataset(model_cfg: Mapping[str, Any], data: DataSpec, url: str) -> None:
    """Model settings that the dataset fixes (its class count, its images' channels) may be
    given only with the dataset's own value."""
    fixed = {
        "num_classes": (data.num_classes, "classes in its manifest"),
        "in_channels": (data.channels, "channels in its images"),
        "proxy_channels": (data.channels, "channels in its proxies"),
    }
    for key, (expected, what) in fixed.items():
        value = model_cfg.get(key)
        if value is not None and value != expected:
            raise ValueError(
                f"model_cfg.{key}={value} contradicts the dataset {url}, which has {expected} "
                f"{what}; drop --set model_cfg.{key} (the dataset sets it)"
            )
