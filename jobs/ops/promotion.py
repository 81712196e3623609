"""Promotion through the MLflow registry: the `champion` alias moves only to a better model.

A candidate version and the current champion are evaluated on the same held-out dataset version
(or their recorded evaluations are reused, and then must be on the same dataset). The candidate
becomes the champion only if it passes the gates (accuracy floor, latency ceiling) and beats the
champion's accuracy by the margin; the old champion becomes `previous-champion`. Both versions are
tagged with their figures and the dataset they were measured on.

Concurrent promotions: the alias writes happen under a registry lock (`lock.py`), after checking
that the champion is still the version this promotion evaluated against (compare-and-set). A
promotion that evaluated against a champion that has since moved is refused like a losing
candidate (`jobs.promote` exits 1), so the pair (champion, previous-champion) is always a
promotion's (new, old).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from jobs import store
from jobs.ops.lock import registry_lock
from jobs.store import CHAMPION, EVAL_EXPERIMENT, PREVIOUS_CHAMPION, ModelRef, ensure_experiment

HISTORY_TAG = "saccade.champion_history"  # JSON list of champion versions, newest last
HISTORY_LENGTH = 50  # MLflow tag values are limited to a few thousand characters


class PromotionError(ValueError):
    """The promotion cannot be decided or committed as asked (nothing was changed)."""


class ChampionMovedError(PromotionError):
    """Another promotion moved the champion while this one evaluated (it lost the race)."""


@dataclass(frozen=True, kw_only=True)
class Policy:
    """When a candidate may replace the champion."""

    margin: float = 0.01  # the candidate's accuracy must beat the champion's by at least this
    min_accuracy: float = 0.0  # gate: the candidate's accuracy floor
    max_latency_ms: float = math.inf  # gate: the candidate's latency ceiling, ms per image

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 1 or not 0 <= self.min_accuracy <= 1:
            raise ValueError(
                f"margin and min_accuracy are accuracies in [0, 1], got {self.margin}, "
                f"{self.min_accuracy}"
            )
        if not self.max_latency_ms > 0:
            raise ValueError(f"max_latency_ms must be > 0, got {self.max_latency_ms}")


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """One model version measured on one dataset version's split."""

    model: ModelRef
    dataset: str  # the dataset version URL
    dataset_sha256: str  # hash of its manifest: what "the same dataset" means
    split: str
    accuracy: float
    latency_ms: float
    run_id: str  # the evaluation run (experiment saccade-evaluations)

    def tags(self) -> dict[str, str]:
        """What a model version is tagged with after an evaluation."""
        return {
            "eval.accuracy": f"{self.accuracy:.6f}",
            "eval.latency_ms": f"{self.latency_ms:.3f}",
            "eval.dataset": self.dataset,
            "eval.dataset_sha256": self.dataset_sha256,
            "eval.split": self.split,
            "eval.run_id": self.run_id,
        }


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)  # why not (empty when promoted)


def decide(candidate: Evaluation, champion: Evaluation | None, policy: Policy) -> Decision:
    """The promotion rule. Refuses to compare evaluations of different datasets or splits."""
    if champion is not None and (candidate.dataset_sha256, candidate.split) != (
        champion.dataset_sha256,
        champion.split,
    ):
        raise PromotionError(
            f"{candidate.model.uri} and the champion {champion.model.uri} were evaluated on "
            f"different datasets: {candidate.dataset} [{candidate.split}] (manifest "
            f"{candidate.dataset_sha256[:12]}) vs {champion.dataset} [{champion.split}] "
            f"(manifest {champion.dataset_sha256[:12]}); evaluate both on one dataset version"
        )
    reasons = []
    if candidate.accuracy < policy.min_accuracy:
        reasons.append(
            f"accuracy {candidate.accuracy:.4f} is below the floor {policy.min_accuracy:.4f}"
        )
    if candidate.latency_ms > policy.max_latency_ms:
        reasons.append(
            f"latency {candidate.latency_ms:.2f} ms exceeds the ceiling {policy.max_latency_ms} ms"
        )
    # The tolerance keeps a gain of exactly the margin from failing on float rounding.
    if champion is not None and candidate.accuracy - champion.accuracy < policy.margin - 1e-9:
        reasons.append(
            f"accuracy {candidate.accuracy:.4f} does not beat the champion's (version "
            f"{champion.model.version}) {champion.accuracy:.4f} by the margin {policy.margin}"
        )
    return Decision(promote=not reasons, reasons=reasons)


def history(name: str) -> list[str]:
    raw = (store.registered_model(name).tags or {}).get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def commit(candidate: ModelRef, expected_champion: str | None, *, owner: str) -> None:
    """Make `candidate` the champion, if the champion is still `expected_champion`.

    Write order: previous-champion first, then champion. Interrupted in between, the aliases
    name the old champion twice (never a pair that skips a version); the same promotion run again
    completes it.
    """
    name = candidate.name
    client = store.client()
    with registry_lock(name, owner=owner):
        current = store.alias_version(name, CHAMPION)
        if current != expected_champion:
            raise ChampionMovedError(
                f"the champion of {name!r} moved from version {expected_champion} to {current} "
                f"while this promotion evaluated; run it again to compare against {current}"
            )
        if expected_champion is not None:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, expected_champion)
        client.set_registered_model_alias(name, CHAMPION, candidate.version)
        past = history(name)
        if expected_champion is not None and past[-1:] != [expected_champion]:
            past.append(expected_champion)  # a champion set by hand: keep it in the history
        past = [*past, candidate.version][-HISTORY_LENGTH:]
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(past))


def rollback(name: str, *, owner: str) -> tuple[str, str | None]:
    """The previous champion becomes the champion again; returns (demoted, restored).

    `previous-champion` then names the champion before it (from the history), or is removed.
    """
    client = store.client()
    with registry_lock(name, owner=owner):
        current = store.alias_version(name, CHAMPION)
        previous = store.alias_version(name, PREVIOUS_CHAMPION)
        if current is None or previous is None:
            raise PromotionError(
                f"{name!r} has no {'champion' if current is None else 'previous-champion'} "
                "alias: nothing to roll back to"
            )
        past = history(name)
        if past[-2:] != [previous, current]:  # aliases set by hand: they are the truth
            past = [previous, current]
        past = past[:-1]
        client.set_registered_model_alias(name, CHAMPION, previous)
        if len(past) >= 2:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, past[-2])
        else:
            client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(past))
        client.set_model_version_tag(name, current, "promotion.rolled_back_at", _now())
    return current, previous


def tag_decision(evaluation: Evaluation, decision: Decision | None, extra: dict[str, Any]) -> None:
    """Record an evaluation (and, for the candidate, the decision) on the model version."""
    client = store.client()
    tags = evaluation.tags()
    if decision is not None:
        tags["promotion.decision"] = "promoted" if decision.promote else "refused"
        tags["promotion.reasons"] = "; ".join(decision.reasons)[:4000]
        tags["promotion.decided_at"] = _now()
    tags.update({k: str(v) for k, v in extra.items()})
    for key, value in tags.items():
        client.set_model_version_tag(evaluation.model.name, evaluation.model.version, key, value)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- Running a promotion ---------------------------------------------------------------------


@dataclass(kw_only=True)
class PromotionRequest:
    """One promotion as `python -m jobs.promote` asks for it."""

    model: str  # registered model name
    candidate: str  # the candidate's version number
    dataset: str | None  # held-out dataset version URL; optional only with reuse_evaluations
    policy: Policy
    split: str = "test"  # the held-out split
    reuse_evaluations: bool = False  # use recorded evaluations instead of evaluating again
    batch_size: int = 16  # evaluation batch size

    def __post_init__(self) -> None:
        if self.dataset is None and not self.reuse_evaluations:
            raise ValueError("--dataset is required unless --reuse-evaluations is given")


@dataclass
class Outcome:
    candidate: Evaluation
    champion: Evaluation | None
    decision: Decision

    def format(self) -> str:
        def line(role: str, e: Evaluation) -> str:
            return (
                f"  {role} {e.model.uri}: accuracy {e.accuracy:.4f}, latency "
                f"{e.latency_ms:.2f} ms/image on {e.dataset} [{e.split}] (run {e.run_id})"
            )

        lines = [line("candidate", self.candidate)]
        if self.champion is not None:
            lines.append(line("champion ", self.champion))
        verdict = (
            f"promoted: {self.candidate.model.uri} is now @{CHAMPION}"
            if self.decision.promote
            else "refused: " + "; ".join(self.decision.reasons)
        )
        return "\n".join([*lines, verdict])


def fresh_evaluation(model: ModelRef, dataset: str, split: str, batch_size: int) -> Evaluation:
    """A version evaluated now (logged to the evaluations experiment, where
    `recorded_evaluation` finds it later)."""
    # Imported here: jobs.core imports torch (~2 s), which a refused or --reuse-evaluations
    # promotion never needs.
    from jobs.core.assess import assess

    result = assess(model.uri, dataset, split=split, batch_size=batch_size)
    run = store.client().get_run(result.run_id)
    return _evaluation(model, run)


def _evaluation(model: ModelRef, run: Any) -> Evaluation:
    split = run.data.params["split"]
    return Evaluation(
        model=model,
        dataset=run.data.tags["dataset.version"],
        dataset_sha256=run.data.tags["dataset.manifest_sha256"],
        split=split,
        accuracy=float(run.data.metrics[f"{split}/accuracy"]),
        latency_ms=float(run.data.metrics[f"{split}/latency_ms"]),
        run_id=run.info.run_id,
    )


def recorded_evaluation(model: ModelRef, split: str, dataset_sha256: str | None) -> Evaluation:
    """The newest recorded evaluation of a version on `split` (of that dataset, if given)."""

    filters = [
        f"tags.`model.name` = '{model.name}'",
        f"tags.`model.version` = '{model.version}'",
        f"params.split = '{split}'",
    ]
    if dataset_sha256 is not None:
        filters.append(f"tags.`dataset.manifest_sha256` = '{dataset_sha256}'")
    runs = store.client().search_runs(
        [ensure_experiment(EVAL_EXPERIMENT)],
        filter_string=" and ".join(filters),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        where = "" if dataset_sha256 is None else " of that dataset"
        raise PromotionError(
            f"no recorded evaluation of {model.uri} on the {split!r} split{where}; run "
            f"`python -m jobs.evaluate --model {model.uri} ...` or promote without "
            "--reuse-evaluations"
        )
    return _evaluation(model, runs[0])


def _evaluations(
    request: PromotionRequest, candidate: ModelRef, champion: ModelRef | None
) -> tuple[Evaluation, Evaluation | None]:
    if request.reuse_evaluations:
        sha = None
        if request.dataset is not None:
            # Imported here, as in `fresh_evaluation` above: torch, which a rollback never needs.
            from jobs.core.data import open_dataset

            sha = open_dataset(request.dataset).manifest.sha256()
        found = [recorded_evaluation(m, request.split, sha) for m in (candidate, champion) if m]
    else:
        assert request.dataset is not None  # checked by PromotionRequest
        found = [
            fresh_evaluation(m, request.dataset, request.split, request.batch_size)
            for m in (candidate, champion)
            if m
        ]
    return found[0], (found[1] if len(found) > 1 else None)


def promote(request: PromotionRequest, *, owner: str) -> Outcome:
    """Evaluate, decide, tag both versions, and move the aliases if the candidate wins."""
    candidate = store.model_version(request.model, request.candidate)
    champion_version = store.alias_version(request.model, CHAMPION)
    if champion_version == candidate.version:
        raise PromotionError(f"{candidate.uri} is already the champion")
    champion = ModelRef(request.model, champion_version) if champion_version else None
    candidate_eval, champion_eval = _evaluations(request, candidate, champion)
    decision = decide(candidate_eval, champion_eval, request.policy)
    if champion_eval is not None:
        tag_decision(champion_eval, None, {})
    if decision.promote:
        try:
            commit(candidate, champion_version, owner=owner)
        except ChampionMovedError as exc:  # lost the race: refused, nothing changed
            decision = Decision(False, [str(exc)])
    tag_decision(candidate_eval, decision, {"promotion.champion_before": champion_version or ""})
    return Outcome(candidate_eval, champion_eval, decision)
