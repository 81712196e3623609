"""Tier 1: count labels (StarCraft II's marines): what the manifest says, the count errors and
object coverage evaluation reports, the per-glimpse count targets, and the trade-off rows and
table that carry them."""

from __future__ import annotations

import pytest
import torch
from manifest_support import manifest

from jobs.benchmarks._tradeoff import evaluated, format_table, tradeoff_row
from jobs.core.evaluation import EvalResult
from model.interface import Batch
from model.loss import ObjectiveConfig, count_targets
from model.step import object_coverage
from model.variants import create_model
from pipelines.inputs import check_fractions, hash_split


def test_label_counts_from_the_manifest() -> None:
    names = [str(n) for n in range(4)]
    assert manifest(class_names=names).label_counts is None  # older manifests hold classes
    assert manifest(class_names=names, label_kind="class").label_counts is None
    assert manifest(class_names=names, label_kind="count").label_counts == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="label_kind 'sum'"):
        _ = manifest(class_names=names, label_kind="sum").label_counts
    with pytest.raises(ValueError, match="numeric class names"):
        _ = manifest(class_names=["cat", "dog"], label_kind="count").label_counts


def test_count_errors_from_the_confusion_matrix() -> None:
    result = EvalResult(num_classes=4)
    # truth → predicted: 0→0, 1→2, 3→0, 2→2
    for truth, predicted in ((0, 0), (1, 2), (3, 0), (2, 2)):
        result.confusion[truth, predicted] += 1
    result.images = 4
    errors = result.count_errors([0, 1, 2, 3])
    assert errors["mae"] == pytest.approx((0 + 1 + 3 + 0) / 4)
    assert errors["within_one"] == pytest.approx(3 / 4)
    # class k need not mean k things: what each class counts is the manifest's
    assert result.count_errors([0, 2, 4, 6])["mae"] == pytest.approx((0 + 2 + 6 + 0) / 4)
    metrics = result.metrics("test", [0, 1, 2, 3])
    assert metrics["test/mae"] == errors["mae"]
    assert "test/mae" not in result.metrics("test")  # a class label has no count errors
    with pytest.raises(ValueError, match="3 counts for 4 classes"):
        result.count_errors([0, 1, 2])


def test_object_coverage_counts_objects_some_glimpse_holds() -> None:
    boxes_BT4 = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])
    objects = torch.tensor(
        [
            [0.1, 0.1, 0.2, 0.2],  # in the first box
            [0.3, 0.3, 0.4, 0.4],  # in the first box too
            [0.6, 0.6, 0.7, 0.7],  # in the second
            [0.1, 0.6, 0.2, 0.7],  # in neither
        ]
    )
    assert object_coverage(boxes_BT4, [objects]) == (4, 3)
    assert object_coverage(boxes_BT4, [torch.zeros(0, 4)]) == (0, 0)


def test_count_targets_are_the_objects_each_glimpse_holds() -> None:
    boxes_BT4 = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]]).repeat(2, 1, 1)
    three_in_first = torch.tensor([[0.1, 0.1, 0.2, 0.2]] * 3 + [[0.6, 0.6, 0.7, 0.7]])
    targets_BTK = count_targets(boxes_BT4, [three_in_first, torch.zeros(0, 4)], K=3)
    assert targets_BTK.shape == (2, 2, 3) and targets_BTK.dtype == torch.bool
    assert targets_BTK[0].int().argmax(dim=1).tolist() == [2, 1]  # 3 capped at K − 1 = 2
    assert targets_BTK[1].int().argmax(dim=1).tolist() == [0, 0]  # no objects: zero each
    assert targets_BTK.sum(dim=2).eq(1).all()


def test_saccader_loss_asks_each_glimpse_its_own_count() -> None:
    """The per-glimpse term of `glimpse_counts` is the cross-entropy against each glimpse's own
    count, not against the image's label."""
    torch.manual_seed(0)
    model = create_model("saccader_heatmap_test", num_classes=5, in_channels=1)
    images = torch.rand(2, 1, 32, 32)
    centre = torch.tensor([[0.45, 0.45, 0.55, 0.55]])
    batch = Batch(
        proxy_BCHW=images,
        labels_B=torch.tensor([4, 4]),  # four objects in each image, only one drawn
        images_BCHW=images,
        gt_boxes=[centre, centre],
    )
    counts = ObjectiveConfig(aux_weight=1.0, glimpse_counts=True)
    labels = ObjectiveConfig(aux_weight=1.0)
    torch.manual_seed(1)
    by_count = model.loss(batch, counts)
    torch.manual_seed(1)
    by_label = model.loss(batch, labels)
    assert by_count.aux_ce.item() != pytest.approx(by_label.aux_ce.item())
    with pytest.raises(ValueError, match="two kinds of glimpse target"):
        ObjectiveConfig(glimpse_counts=True, object_targets=True)


def test_rows_and_table_carry_count_errors_and_coverage() -> None:
    metrics = {"test/accuracy": 0.25, "test/mae": 1.5, "test/within_one": 0.6}
    metrics |= {"test/object_coverage": 0.7, "test/centred_object_coverage": 0.1}
    matrix = [[1, 0], [2, 1]]
    evaluation = evaluated({"metrics": metrics, "confusion": {"matrix": matrix}})
    assert evaluation["mae"] == 1.5 and evaluation["hit_rate"] is None
    assert evaluation["confusion"] == matrix
    row = tradeoff_row(
        model="saccader",
        recipe="sc2_cpu",
        seed=0,
        training={"train_seconds": 10.0, "epochs": 1, "model_uri": "models:/m/1", "run_id": "r"},
        evaluation=evaluation,
        measured={
            "ms_per_image_b1": 3.0,
            "ms_per_image_b16": 1.0,
            "peak_mb_b1": 10.0,
            "peak_mb_b16": 40.0,
            "looked_fraction": 0.01,
            "tiles_decoded_fraction": 0.1,
        },
        train_images=10,
    )
    assert (row["mae"], row["within_one"], row["object_coverage"]) == (1.5, 0.6, 0.7)
    assert row["confusion"] == matrix
    # a class label: no count errors, no confusion matrix in the row
    plain = {"metrics": {"test/accuracy": 0.5}, "confusion": {"matrix": matrix}}
    assert evaluated(plain)["confusion"] is None
    header = format_table([row]).splitlines()[0]
    assert "MAE" in header and "within 1" in header and "covered" in header
    uncounted = dict(row, mae=None, within_one=None)
    assert "MAE" not in format_table([uncounted]).splitlines()[0]


def test_an_evaluation_only_dataset_puts_every_file_in_test() -> None:
    check_fractions("Config", 0.0, 1.0)  # no training split: an evaluation set
    refs = [f"replay-{i}.SC2Replay" for i in range(20)]
    assert {hash_split(r, val_fraction=0.0, test_fraction=1.0) for r in refs} == {"test"}
    with pytest.raises(ValueError, match="sum to at most 1"):
        check_fractions("Config", 0.6, 0.5)
