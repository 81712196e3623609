"""Tier 1: the digit source and the synthetic generators (numpy + Pillow only, no Ray)."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from pipelines.digits import DigitSet, load_digits, read_idx, split_digits
from pipelines.synthetic import (
    ClutteredMnistConfig,
    GenerationError,
    MegapixelMnistConfig,
    Sample,
    cluttered_class_names,
    generate_cluttered,
    generate_megapixel,
    line_patterns,
    pair_label,
    sample_rng,
)

SMALL_CLUTTERED = {"original_size": 128}
SMALL_MEGAPIXEL = {"canvas_size": 300}


@pytest.fixture(scope="module")
def digits() -> DigitSet:
    return load_digits()


@pytest.fixture(scope="module")
def train_digits(digits: DigitSet) -> DigitSet:
    return split_digits(digits, seed=0)["train"]


def _cluttered(train_digits: DigitSet, index: int, **kw) -> Sample:
    cfg = ClutteredMnistConfig(**{**SMALL_CLUTTERED, **kw})
    return generate_cluttered(cfg, train_digits, sample_rng(0, "train", index))


def _megapixel(train_digits: DigitSet, index: int, **kw) -> Sample:
    cfg = MegapixelMnistConfig(**{**SMALL_MEGAPIXEL, **kw})
    return generate_megapixel(cfg, train_digits, sample_rng(0, "train", index))


def _boxes_overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _check_boxes(sample: Sample) -> None:
    for box in sample.boxes:
        x0, y0, x1, y1, _ = box
        assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
    for i, a in enumerate(sample.boxes):
        for b in sample.boxes[i + 1 :]:
            assert not _boxes_overlap(a, b), (a, b)


def _box_mean(image: np.ndarray, box) -> float:
    h, w = image.shape[:2]
    x0, y0, x1, y1, _ = box
    return float(image[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)].mean())


# ---------------------------------------------------------------------------------------------
# Digit source
# ---------------------------------------------------------------------------------------------


def test_embedded_digits(digits: DigitSet) -> None:
    assert len(digits) == 5000
    assert digits.images.shape == (5000, 28, 28) and digits.images.dtype == np.uint8
    assert digits.labels.dtype == np.int64
    assert np.bincount(digits.labels).tolist() == [500] * 10
    assert digits.images.max() == 255 and digits.images.mean() > 20  # real ink, not blanks


def test_split_disjoint_balanced_reproducible(digits: DigitSet) -> None:
    a = split_digits(digits, seed=3)
    b = split_digits(digits, seed=3)
    c = split_digits(digits, seed=4)
    assert {k: len(v) for k, v in a.items()} == {"train": 4000, "val": 500, "test": 500}
    flat = {k: v.images.reshape(len(v), -1) for k, v in a.items()}
    # Disjoint as images: no test digit's pixels appear in train (hash rows to compare sets).
    rows = {k: {r.tobytes() for r in v} for k, v in flat.items()}
    assert not rows["train"] & rows["test"] and not rows["train"] & rows["val"]
    assert not rows["val"] & rows["test"]
    assert np.bincount(a["test"].labels).tolist() == [50] * 10
    assert not np.all(np.diff(a["train"].labels) >= 0)  # shuffled, no longer sorted by class
    for k in a:
        assert np.array_equal(a[k].images, b[k].images)
        assert np.array_equal(a[k].labels, b[k].labels)
    assert not np.array_equal(a["test"].images, c["test"].images)


def test_split_partial_fractions(digits: DigitSet) -> None:
    parts = split_digits(digits, seed=0, fractions={"a": 0.1, "b": 0.2})
    assert len(parts["a"]) == 500 and len(parts["b"]) == 1000


@pytest.mark.parametrize(
    ("fractions", "match"),
    [
        ({}, "empty"),
        ({"train": 0.0, "test": 0.5}, r"must each lie in \(0, 1\]"),
        ({"train": -0.1}, r"must each lie in \(0, 1\]"),
        ({"train": 0.8, "test": 0.3}, "sum to 1.1000 > 1"),
        ({"train": 0.9999, "test": 0.0001}, "split 'test' gets no digits"),
    ],
)
def test_split_bad_fractions(digits: DigitSet, fractions, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_digits(digits, seed=0, fractions=fractions)


def test_digitset_validation() -> None:
    with pytest.raises(ValueError, match="uint8"):
        DigitSet(images=np.zeros((2, 28, 28), np.float32), labels=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="one label per image"):
        DigitSet(images=np.zeros((2, 28, 28), np.uint8), labels=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"0\.\.9"):
        DigitSet(images=np.zeros((1, 28, 28), np.uint8), labels=np.array([10]))


def _idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = (0x08 << 8) | array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _write_pair(directory: Path, prefix: str, images, labels, *, gz: bool) -> None:
    ext = ".gz" if gz else ""
    _write(directory / f"{prefix}-images-idx3-ubyte{ext}", _idx_bytes(images))
    _write(directory / f"{prefix}-labels-idx1-ubyte{ext}", _idx_bytes(labels))


def test_idx_round_trip_plain_and_gz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    train_y = rng.integers(0, 10, size=7)
    test_x = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    test_y = rng.integers(0, 10, size=3)
    _write_pair(tmp_path, "train", train_x, train_y, gz=True)
    _write_pair(tmp_path, "t10k", test_x, test_y, gz=False)
    loaded = load_digits(str(tmp_path))
    assert loaded.images.dtype == np.uint8 and loaded.labels.dtype == np.int64
    assert np.array_equal(loaded.images, np.concatenate([train_x, test_x]))
    assert np.array_equal(loaded.labels, np.concatenate([train_y, test_y]))


def test_idx_only_train(tmp_path: Path) -> None:
    images = np.full((2, 28, 28), 9, np.uint8)
    _write_pair(tmp_path, "train", images, np.array([1, 2]), gz=False)
    assert np.array_equal(load_digits(str(tmp_path)).labels, [1, 2])


def test_idx_missing_dir_and_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_digits(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"no MNIST IDX files in .*train-images-idx3-ubyte"):
        load_digits(str(tmp_path))
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(np.zeros((1, 28, 28))))
    with pytest.raises(FileNotFoundError, match=r"train-labels-idx1-ubyte.*come in pairs"):
        load_digits(str(tmp_path))


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "x"
    _write(path, _idx_bytes(np.zeros(4), magic=0x00000D01))  # float type code
    with pytest.raises(ValueError, match=r"magic number 0x00000d01, expected 0x00000801"):
        read_idx(path, ndim=1)
    # Images where labels are expected (wrong ndim) is a magic mismatch too.
    _write(path, _idx_bytes(np.zeros((1, 2, 2))))
    with pytest.raises(ValueError, match="expected 0x00000801"):
        read_idx(path, ndim=1)


def test_idx_truncated_and_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x"
    _write(path, _idx_bytes(np.zeros((2, 28, 28)))[:-5])
    with pytest.raises(ValueError, match=r"declares shape \(2, 28, 28\).*truncated"):
        read_idx(path, ndim=3)
    _write(path, b"\x00\x00")
    with pytest.raises(ValueError, match="shorter than an IDX header"):
        read_idx(path, ndim=3)
    bad_gz = tmp_path / "y.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a valid gzip file"):
        read_idx(bad_gz, ndim=1)


def test_idx_count_mismatch(tmp_path: Path) -> None:
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(np.zeros((3, 28, 28))))
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(2)))
    with pytest.raises(ValueError, match=r"holds 3 images but .* holds 2 labels"):
        load_digits(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Randomness and class names
# ---------------------------------------------------------------------------------------------


def test_sample_rng_streams() -> None:
    draw = lambda *a: sample_rng(*a).integers(0, 2**62, size=4).tolist()  # noqa: E731
    assert draw(1, "train", 5) == draw(1, "train", 5)
    others = [draw(2, "train", 5), draw(1, "test", 5), draw(1, "train", 6)]
    assert all(o != draw(1, "train", 5) for o in others)
    with pytest.raises(ValueError, match=r"index \(-1\) must be >= 0"):
        sample_rng(0, "train", -1)


def test_class_names_and_pair_label() -> None:
    names = cluttered_class_names("pair")
    assert len(names) == 55 and len(set(names)) == 55
    assert names[:3] == ["0-0", "0-1", "0-2"] and names[-1] == "9-9"
    for a in range(10):
        for b in range(10):
            assert names[pair_label(a, b)] == f"{min(a, b)}-{max(a, b)}"
    assert cluttered_class_names("sum") == [str(s) for s in range(19)]
    assert cluttered_class_names("single") == [str(d) for d in range(10)]
    with pytest.raises(ValueError, match=r"digits must lie in 0..9"):
        pair_label(3, 10)
    with pytest.raises(ValueError, match="unknown task 'triple'"):
        cluttered_class_names("triple")


# ---------------------------------------------------------------------------------------------
# Cluttered MNIST
# ---------------------------------------------------------------------------------------------


def test_cluttered_deterministic(train_digits: DigitSet) -> None:
    a, b, c = (_cluttered(train_digits, i) for i in (4, 4, 5))
    assert a.image.tobytes() == b.image.tobytes() and a.proxy.tobytes() == b.proxy.tobytes()
    assert a.boxes == b.boxes and a.meta == b.meta and a.label == b.label
    assert a.image.tobytes() != c.image.tobytes()


@pytest.mark.parametrize("task", ["pair", "sum", "single"])
def test_cluttered_labels_boxes_pixels(train_digits: DigitSet, task: str) -> None:
    names = cluttered_class_names(task)
    for index in range(12):
        sample = _cluttered(train_digits, index, task=task)
        classes = [box[4] for box in sample.boxes]
        assert len(sample.boxes) == (1 if task == "single" else 2)
        if task == "pair":
            assert sample.label == pair_label(classes[0], classes[1])
        else:  # the sum of the digits; for "single", the one digit itself
            assert sample.label == sum(classes)
        assert sample.label_name == names[sample.label]
        assert classes == [int(train_digits.labels[i]) for i in sample.meta["digit_indices"]]
        _check_boxes(sample)
        for box in sample.boxes:
            assert _box_mean(sample.image, box) > 3 * sample.image.mean()
        json.dumps(sample.meta)


def test_cluttered_shapes_and_clutter(train_digits: DigitSet) -> None:
    sample = _cluttered(train_digits, 0, proxy_size=64, downsample_scale=4)
    assert sample.image.shape == (128, 128, 1) and sample.image.dtype == np.uint8
    assert sample.proxy.shape == (64, 64, 1) and sample.proxy.dtype == np.uint8
    assert sample.meta["clutter"] == 8
    sources = {f["source"] for f in sample.meta["clutter_fragments"]}
    assert not sources & set(sample.meta["digit_indices"])  # clutter from OTHER digits
    assert ClutteredMnistConfig(task="sum").clutter == 0  # the paper's clutter-free variant
    assert _cluttered(train_digits, 0, task="sum").meta["clutter"] == 0


def test_cluttered_proxy_is_blurred(train_digits: DigitSet) -> None:
    # Same scene, sharper proxy without downsampling: blur lowers the high-frequency energy.
    sharp = _cluttered(train_digits, 2, downsample_scale=1).proxy.astype(float)
    blurred = _cluttered(train_digits, 2, downsample_scale=5).proxy.astype(float)
    assert (
        np.abs(np.diff(blurred[:, :, 0], axis=1)).mean()
        < 0.7 * np.abs(np.diff(sharp[:, :, 0], axis=1)).mean()
    )


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"task": "triple"}, "task='triple' is unknown"),
        ({"canvas_size": 50}, r"canvas_size=50 cannot hold 2 .* use canvas_size >= 56"),
        ({"original_size": 64}, "original_size=64 is below canvas_size=100"),
        ({"downsample_scale": 0}, "downsample_scale=0 must lie in 1..canvas_size"),
        ({"clutter": -1}, "clutter=-1 is below 0; use at least 0"),
        ({"clutter_size": 30}, "clutter_size=30 must lie in 1..digit_size"),
        ({"proxy_size": 0}, "proxy_size=0"),
        ({"max_place_tries": 0}, "max_place_tries=0"),
    ],
)
def test_cluttered_config_validation(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClutteredMnistConfig(**kw)


def test_cluttered_generation_errors(train_digits: DigitSet) -> None:
    # 56 px canvas: two 28 px digits fit only side by side, almost never hit at random in 1 try.
    cfg = ClutteredMnistConfig(canvas_size=56, original_size=56, max_place_tries=1)
    failures = 0
    for index in range(20):
        try:
            generate_cluttered(cfg, train_digits, sample_rng(0, "train", index))
        except GenerationError as err:
            assert "no room for digit 2 of 2" in str(err)
            failures += 1
    assert failures > 0
    tiny = DigitSet(images=train_digits.images[:2], labels=train_digits.labels[:2])
    with pytest.raises(GenerationError, match="clutter needs digits other than the 2 placed"):
        generate_cluttered(ClutteredMnistConfig(), tiny, sample_rng(0, "train", 0))


# ---------------------------------------------------------------------------------------------
# Megapixel MNIST
# ---------------------------------------------------------------------------------------------


def test_megapixel_deterministic(train_digits: DigitSet) -> None:
    a, b, c = (_megapixel(train_digits, i) for i in (1, 1, 2))
    assert a.image.tobytes() == b.image.tobytes() and a.proxy.tobytes() == b.proxy.tobytes()
    assert a.boxes == b.boxes and a.meta == b.meta
    assert a.image.tobytes() != c.image.tobytes()


# This project's earlier, easier variant, still reachable by options.
LEGACY_MEGAPIXEL = {"noise_over_digits": False, "distinct_others": True, "noise_style": "segments"}


def test_megapixel_labels_boxes_pixels(train_digits: DigitSet) -> None:
    shared = 0
    for index in range(40):
        sample = _megapixel(train_digits, index)
        assert sample.image.shape == (300, 300, 1) and sample.proxy.shape == (36, 36, 1)
        classes = [box[4] for box in sample.boxes]
        assert len(classes) == 5 and classes.count(sample.label) == 3
        others = [c for c in classes if c != sample.label]
        assert len(others) == 2  # any other class: they may share one, as in the reference
        shared += others[0] == others[1]
        assert sample.label_name == str(sample.label)
        _check_boxes(sample)
        json.dumps(sample.meta)
    assert shared > 0


def test_megapixel_legacy_variant_keeps_digits_clean_and_distinct(train_digits: DigitSet) -> None:
    for index in range(10):
        sample = _megapixel(train_digits, index, **LEGACY_MEGAPIXEL)
        classes = [box[4] for box in sample.boxes]
        others = [c for c in classes if c != sample.label]
        assert classes.count(sample.label) == 3 and len(set(others)) == len(others) == 2
        # The canvas is the original and noise never covers a digit: each box holds its digit.
        for box, digit in zip(sample.boxes, sample.meta["digit_indices"], strict=True):
            row, col = round(box[1] * 300), round(box[0] * 300)
            assert np.array_equal(
                sample.image[row : row + 28, col : col + 28, 0], train_digits.images[digit]
            )


def test_megapixel_noise_covers_digits_by_overwriting_its_block(train_digits: DigitSet) -> None:
    erased = 0
    for index in range(10):
        quiet = _megapixel(train_digits, index, noise_patches=0)
        noisy = _megapixel(train_digits, index)
        assert noisy.boxes == quiet.boxes  # the rng stream diverges after the digits
        assert (noisy.image > 0).sum() > (quiet.image > 0).sum() + 50 * 20
        # A patch replaces its block, zeros included: digit pixels under it go dark.
        erased += int(((quiet.image > 0) & (noisy.image == 0)).sum())
        # Patch corners lie in [28, 300 - 28) (the reference's positions): the top and left
        # 28 px and the last row and column hold digit pixels only.
        margin = np.ones((300, 300), dtype=bool)
        margin[28:-1, 28:-1] = False
        assert np.array_equal(noisy.image[margin], quiet.image[margin])
    assert erased > 0


@pytest.mark.parametrize("bank_size", [50, 1])
def test_megapixel_noise_patch_is_a_whole_bank_pattern(
    train_digits: DigitSet, bank_size: int
) -> None:
    bank = line_patterns(bank_size, 28, 0)
    for index in range(5):
        quiet = _megapixel(train_digits, index, noise_patches=0)
        noisy = _megapixel(train_digits, index, noise_patches=1, noise_bank=bank_size)
        rows, cols = np.nonzero(noisy.image[:, :, 0] != quiet.image[:, :, 0])
        # Every pattern's first line starts at its top-left pixel: that is the block's corner.
        r, c = rows.min(), cols.min()
        block = noisy.image[r : r + 28, c : c + 28, 0]
        assert any(np.array_equal(block, pattern) for pattern in bank)


def test_megapixel_line_patterns() -> None:
    bank = line_patterns(50, 28, 0)
    assert bank.shape == (50, 28, 28) and bank.dtype == np.uint8
    assert np.array_equal(bank, line_patterns(50, 28, 0))
    assert not np.array_equal(bank, line_patterns(50, 28, 1))
    lit = bank[bank > 0]
    assert lit.min() >= 204 and lit.max() <= 255  # 0.8–1.0 of full brightness
    assert lit.min() < 210 and lit.max() > 250  # drawn per pixel over that range
    assert (bank[:, 0, 0] > 0).all()  # every first line leaves the top-left corner
    # Thin lines, not blobs: two 1-px lines light at most ~2·2·28 pixels of 784.
    assert ((bank > 0).sum(axis=(1, 2)) <= 4 * 28).all()
    # Some second lines are mirrored: they leave the top-right corner.
    assert 0 < (bank[:, 0, -1] > 0).sum() < 50


def test_megapixel_legacy_noise_present_and_off_digits(train_digits: DigitSet) -> None:
    quiet = _megapixel(train_digits, 0, noise_patches=0, **LEGACY_MEGAPIXEL)
    noisy = _megapixel(train_digits, 0, **LEGACY_MEGAPIXEL)
    assert (noisy.image > 0).sum() > (quiet.image > 0).sum() + 50 * 20
    # Noise never lands on a digit, so each digit's box reads the same with or without noise
    # (the rng stream diverges only after the digits are placed).
    for box in noisy.boxes:
        assert _box_mean(noisy.image, box) == _box_mean(quiet.image, box)


def test_megapixel_segments_style(train_digits: DigitSet) -> None:
    def noise_values(sample: Sample) -> set[int]:
        off_digits = np.ones(sample.image.shape[:2], dtype=bool)
        for r, c in sample.meta["digit_positions"]:
            off_digits[r : r + 28, c : c + 28] = False
        return set(np.unique(sample.image[off_digits, 0]).tolist())

    lines = _megapixel(train_digits, 0, noise_over_digits=False)
    segments = _megapixel(train_digits, 0, noise_over_digits=False, noise_style="segments")
    assert lines.boxes == segments.boxes
    # Pillow's 2-px segments are pure white; the bank's lines are 204–255 per pixel.
    assert noise_values(segments) == {0, 255}
    assert len(noise_values(lines)) > 20 and min(noise_values(lines) - {0}) >= 204


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"target_count": 0}, "target_count=0 must lie in 1..digits_per_image"),
        ({"target_count": 6}, "target_count=6 must lie in 1..digits_per_image"),
        (
            {"digits_per_image": 13, "target_count": 3, "distinct_others": True},
            "10 non-target digits need",
        ),
        ({"digits_per_image": 6, "target_count": 3}, "could tie or outnumber the target_count=3"),
        ({"noise_style": "dots"}, "noise_style='dots' is unknown"),
        ({"noise_bank": 0}, "noise_bank=0"),
        (
            {"canvas_size": 56, "digits_per_image": 1, "target_count": 1},
            "no room for noise inside a 28 px margin",
        ),
        ({"canvas_size": 80}, r"canvas_size=80 cannot hold 5 .* use canvas_size >= 84"),
        ({"noise_patches": -1}, "noise_patches=-1"),
        ({"proxy_scale": 0.0}, r"proxy_scale=0.0 must lie in \(0, 1\]"),
        ({"proxy_scale": 1.5}, r"proxy_scale=1.5 must lie in \(0, 1\]"),
        ({"max_place_tries": 0}, "max_place_tries=0"),
    ],
)
def test_megapixel_config_validation(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MegapixelMnistConfig(**kw)


def test_megapixel_generation_errors(train_digits: DigitSet) -> None:
    cfg = MegapixelMnistConfig(canvas_size=84, noise_patches=0, max_place_tries=1)
    with pytest.raises(GenerationError, match="no room for a digit"):
        for index in range(20):
            generate_megapixel(cfg, train_digits, sample_rng(0, "train", index))
    ones = train_digits.labels == 1
    only_ones = DigitSet(images=train_digits.images[ones], labels=train_digits.labels[ones])
    with pytest.raises(GenerationError, match=r"has 0 digits|has no digits|holds 0 digits"):
        generate_megapixel(
            MegapixelMnistConfig(**SMALL_MEGAPIXEL), only_ones, sample_rng(0, "a", 0)
        )
