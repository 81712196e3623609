"""Tier 1: the street-sign generator — determinism, labels, boxes, and what the proxy can show."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.codec import decode_full
from pipelines.sources import generate_rows, get_source
from pipelines.street_signs import (
    SPEED_LIMITS,
    StreetSignsConfig,
    generate_street_sign,
    street_sign_class_names,
)
from pipelines.synthetic import sample_rng

SMALL = StreetSignsConfig(width=1000, height=750, sign_min_frac=0.03, sign_max_frac=0.05)


def test_default_scene_is_a_4000x3000_photo_with_one_boxed_sign() -> None:
    sample = generate_street_sign(StreetSignsConfig(), sample_rng(0, "train", 0))
    assert sample.image.shape == (3000, 4000, 3) and sample.image.dtype == np.uint8
    assert sample.proxy.shape == (192, 256, 3)
    [(x0, y0, x1, y1, cls)] = sample.boxes
    assert cls == sample.label and sample.label_name == str(SPEED_LIMITS[sample.label])
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    side_px = (y1 - y0) * 3000
    assert 40 <= side_px <= 112
    # In the 256 px proxy the sign is a few pixels wide: its digits cannot be read there.
    assert side_px * 256 / 4000 <= 7.2


def test_classes() -> None:
    assert len(street_sign_class_names()) >= 8
    tiny = StreetSignsConfig(width=400, height=300, sign_min_frac=0.03, sign_max_frac=0.05)
    labels = {generate_street_sign(tiny, sample_rng(1, "train", i)).label for i in range(30)}
    assert len(labels) >= 8  # uniform over 10 classes: 30 draws miss at most a couple


def test_deterministic() -> None:
    a = generate_street_sign(SMALL, sample_rng(3, "val", 7))
    b = generate_street_sign(SMALL, sample_rng(3, "val", 7))
    c = generate_street_sign(SMALL, sample_rng(3, "val", 8))
    assert np.array_equal(a.image, b.image) and a.boxes == b.boxes and a.meta == b.meta
    assert not np.array_equal(a.image, c.image)


def test_box_holds_the_red_ring() -> None:
    sample = generate_street_sign(SMALL, sample_rng(0, "test", 4))
    x0, y0, x1, y1, _ = sample.boxes[0]
    crop = sample.image[int(y0 * 750) : int(y1 * 750), int(x0 * 1000) : int(x1 * 1000)].astype(int)
    r, g, b = crop[..., 0], crop[..., 1], crop[..., 2]
    red = (r > g + 40) & (r > b + 40)
    assert red.mean() > 0.15  # the ring (under any lighting)


def test_the_number_shows_in_the_original_but_not_in_the_proxy() -> None:
    """Same scene (default size, a ~100 px sign), two labels: the originals differ across the
    digits, the proxies in a couple of blended pixels from which no digit can be read."""
    a = generate_street_sign(StreetSignsConfig(), sample_rng(0, "train", 2), label=1)  # 30
    b = generate_street_sign(StreetSignsConfig(), sample_rng(0, "train", 2), label=8)  # 100
    assert a.boxes[0][:4] == b.boxes[0][:4]
    x0, y0, x1, y1 = a.meta["sign_box_px"]
    assert y1 - y0 > 90
    crop = np.s_[y0:y1, x0:x1]  # the scenes are identical elsewhere (same random stream)
    changed_original = (np.abs(a.image[crop].astype(int) - b.image[crop]).max(-1) > 20).sum()
    changed_proxy = (np.abs(a.proxy.astype(int) - b.proxy).max(-1) > 20).sum()
    assert changed_original > 500  # digit strokes, 18+ px tall
    assert changed_proxy <= 3


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="sign_min_frac"):
        StreetSignsConfig(sign_min_frac=0.05, sign_max_frac=0.01)
    with pytest.raises(ValueError, match="cannot hold a number"):
        StreetSignsConfig(width=200, height=150)


def test_through_the_registry_stage() -> None:
    assert get_source("street_signs").tile_format == "jpeg"
    table = generate_rows(
        {"id": np.arange(3)},
        source="street_signs",
        params={"width": 600, "height": 450, "sign_min_frac": 0.04, "sign_max_frac": 0.06},
        pools={},
        seed=0,
        counts={"train": 2, "test": 1},
        tile_size=128,
        tile_format="jpeg",
    )
    rows = table.to_pylist()
    assert [r["split"] for r in rows] == ["train", "train", "test"]
    for row in rows:
        assert row["reject_reason"] is None and row["source"] == "street_signs"
        assert row["label_name"] == str(SPEED_LIMITS[row["label"]])
        assert [box["cls"] for box in row["boxes"]] == [row["label"]]
        image = decode_full(
            row["tiles"], height=450, width=600, channels=3, tile_size=128, tile_format="jpeg"
        )
        assert image.shape == (450, 600, 3)
