"""Tier 2: promotion through a real MLflow registry — a worse candidate is refused, a better one
promoted, rollback restores the previous champion, evaluations of different datasets are refused,
and concurrent promotions leave a consistent (champion, previous-champion) pair."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from ops_support import derived_dataset, label_counts, register_constant_model

from jobs import predict, promote, store
from jobs.core.assess import assess
from jobs.ops import promotion
from jobs.ops.lock import LockTimeoutError, lock_name, registry_lock
from jobs.ops.promotion import HISTORY_TAG, PromotionError, commit, history
from jobs.store import CHAMPION, PREVIOUS_CHAMPION, ModelRef

pytestmark = pytest.mark.tier2


def _aliases(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (store.registered_model(name).aliases or {}).items()}


def _tags(name: str, version: str) -> dict[str, str]:
    return store.client().get_model_version(name, version).tags


def test_promotion_refuses_worse_promotes_better_and_rolls_back(
    mlflow_uri: str, tiny_dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Held-out set: all 48 images of the tiny dataset, where some classes repeat.
    held_out = derived_dataset(tiny_dataset, tmp_path / "held", splits=("train", "val", "test"))
    counts = label_counts(held_out).most_common()
    (common, n_common), (rare, n_rare) = counts[0], counts[-1]
    assert n_common >= 2 and n_rare == 1, counts  # the tiny dataset's labels are deterministic
    absent = next(k for k in range(55) if k not in dict(counts))
    mid = register_constant_model("promo", held_out, rare)  # accuracy 1/48
    worse = register_constant_model("promo", held_out, absent)  # accuracy 0
    better = register_constant_model("promo", held_out, common)  # accuracy n_common/48
    args = ["--model", "promo", "--dataset", held_out, "--margin", "0.01"]

    assert promote.main([*args, "--candidate", mid]) == 0  # first champion: the gates only
    assert _aliases("promo") == {CHAMPION: mid}

    assert promote.main([*args, "--candidate", worse]) == 1
    assert "does not beat the champion's (version 1)" in capsys.readouterr().out
    assert _aliases("promo") == {CHAMPION: mid}
    assert _tags("promo", worse)["promotion.decision"] == "refused"
    assert float(_tags("promo", worse)["eval.accuracy"]) == 0.0

    # Better, but slower than the gate allows.
    assert promote.main([*args, "--candidate", better, "--max-latency-ms", "0.000001"]) == 1
    assert "exceeds the ceiling" in capsys.readouterr().out
    assert _aliases("promo") == {CHAMPION: mid}

    assert promote.main([*args, "--candidate", better]) == 0
    assert _aliases("promo") == {CHAMPION: better, PREVIOUS_CHAMPION: mid}
    tags, champion_tags = _tags("promo", better), _tags("promo", mid)
    assert float(tags["eval.accuracy"]) == pytest.approx(n_common / 48, abs=1e-6)
    assert float(champion_tags["eval.accuracy"]) == pytest.approx(1 / 48, abs=1e-6)
    assert tags["eval.dataset_sha256"] == champion_tags["eval.dataset_sha256"]
    assert tags["eval.dataset"] == held_out and tags["promotion.champion_before"] == mid
    assert history("promo") == [mid, better]

    assert promote.main(["--model", "promo", "--rollback"]) == 0
    assert _aliases("promo") == {CHAMPION: mid}
    assert history("promo") == [mid]
    with pytest.raises(PromotionError, match="no previous-champion alias"):
        promote.main(["--model", "promo", "--rollback"])

    # Recorded evaluations are reused only when they are on the same dataset: the candidate's
    # newest one is now on another dataset version than the champion's.
    assess(f"models:/promo/{better}", tiny_dataset, split="test")
    with pytest.raises(PromotionError, match="evaluated on different datasets"):
        promote.main(["--model", "promo", "--candidate", better, "--reuse-evaluations"])
    reused = ["--model", "promo", "--candidate", better, "--reuse-evaluations"]
    assert promote.main([*reused, "--dataset", held_out]) == 0
    assert _aliases("promo") == {CHAMPION: better, PREVIOUS_CHAMPION: mid}


def _bare_versions(name: str, n: int) -> list[str]:
    """Registry versions without model files: enough for alias bookkeeping."""
    client = store.client()
    client.create_registered_model(name)
    return [
        str(client.create_model_version(name, source=f"file:///nowhere/{i}").version)
        for i in range(n)
    ]


def test_concurrent_promotions_leave_a_consistent_pair(mlflow_uri: str) -> None:
    versions = _bare_versions("race", 7)
    commit(ModelRef("race", versions[0]), None, owner="setup")
    for round_ in range(3):
        before = _aliases("race")[CHAMPION]
        a, b = versions[1 + 2 * round_], versions[2 + 2 * round_]
        start, outcomes = threading.Barrier(2), {}

        def attempt(version: str, expected: str, start: threading.Barrier, outcomes: dict) -> None:
            start.wait()
            try:
                commit(ModelRef("race", version), expected, owner=f"thread-{version}")
                outcomes[version] = "promoted"
            except PromotionError as exc:
                outcomes[version] = str(exc)

        threads = [
            threading.Thread(target=attempt, args=(v, before, start, outcomes)) for v in (a, b)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [v for v, outcome in outcomes.items() if outcome == "promoted"]
        assert len(winners) == 1, outcomes
        loser = (set(outcomes) - set(winners)).pop()
        assert f"moved from version {before} to {winners[0]}" in outcomes[loser]
        assert _aliases("race") == {CHAMPION: winners[0], PREVIOUS_CHAMPION: before}
        assert history("race")[-2:] == [before, winners[0]]
    assert store.client().get_registered_model("race").tags[HISTORY_TAG]
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):  # every lock was released
        store.client().get_registered_model(lock_name("race"))


def test_a_promotion_that_loses_the_race_is_refused_with_exit_1(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old, mine, theirs = _bare_versions("raced", 3)
    commit(ModelRef("raced", old), None, owner="setup")

    def another_promotion_wins_meanwhile(
        request: object, candidate: ModelRef, champion: ModelRef
    ) -> tuple:
        commit(ModelRef("raced", theirs), old, owner="the other promotion")
        return _evaluation(candidate, 0.9), _evaluation(champion, 0.1)

    monkeypatch.setattr(promotion, "_evaluations", another_promotion_wins_meanwhile)
    assert promote.main(["--model", "raced", "--candidate", mine, "--dataset", "held"]) == 1
    assert f"refused: the champion of 'raced' moved from version {old} to {theirs}" in (
        capsys.readouterr().out
    )
    assert _aliases("raced") == {CHAMPION: theirs, PREVIOUS_CHAMPION: old}
    assert _tags("raced", mine)["promotion.decision"] == "refused"


def _evaluation(model: ModelRef, accuracy: float) -> promotion.Evaluation:
    return promotion.Evaluation(
        model=model,
        dataset="held",
        dataset_sha256="0" * 64,
        split="test",
        accuracy=accuracy,
        latency_ms=1.0,
        run_id="-",
    )


def test_lock_waits_for_its_holder_and_breaks_an_expired_one(mlflow_uri: str) -> None:
    with (
        registry_lock("locked", owner="holder"),
        pytest.raises(LockTimeoutError, match=r"\(holder\) held the lock"),
        registry_lock("locked", owner="second", wait_s=0.5),
    ):
        pass
    # A crashed holder's lock: expired, so the next promotion takes it over.
    store.client().create_registered_model(
        lock_name("locked"), tags={"owner": "crashed", "expires": "0"}
    )
    with registry_lock("locked", owner="third", wait_s=2):
        tags = store.client().get_registered_model(lock_name("locked")).tags
        assert tags["owner"] == "third"


def test_missing_model_version_or_alias_is_named_before_any_work(mlflow_uri: str) -> None:
    _bare_versions("no-champion", 1)
    out = ["--out", "/tmp/never-written.parquet", "--dataset", "/nowhere/v0001"]
    with pytest.raises(ValueError, match="registered model 'ghost' does not exist"):
        predict.main(["--model", "models:/ghost@champion", *out])
    with pytest.raises(ValueError, match="'no-champion' has no alias 'champion'"):
        predict.main(["--model", "models:/no-champion@champion", *out])
    with pytest.raises(ValueError, match="has no version 9; versions: \\[1\\]"):
        promote.main(["--model", "no-champion", "--candidate", "9", "--dataset", "/nowhere"])
