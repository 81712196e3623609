"""The photo tiling stage: round trips, proxy, EXIF orientation, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.codec import CodecError, decode_full, encode_tiles
from pipelines.photos import TiledPhoto, UnreadableImageError, tile_encoded_image
from pipelines.tiling import decode_proxy, make_proxy

HEIGHT, WIDTH = 450, 600  # not multiples of the tile size: edge tiles are smaller


def photo_like(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise, with a bright block in the top-left corner (orientation)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [120 + 60 * np.sin(x / 70 + c) * np.cos(y / 50 - c) for c in range(3)]
    image = np.stack(channels, axis=-1) + rng.normal(0, 4, (height, width, 3))
    image[:40, :80] = 250
    return image.clip(0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, **save: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(
        out, format=fmt, **save
    )
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    array = np.asarray(Image.open(io.BytesIO(data)))
    return array[:, :, None] if array.ndim == 2 else array


def full_image(photo: TiledPhoto) -> np.ndarray:
    return decode_full(
        photo.tiles,
        height=photo.height,
        width=photo.width,
        channels=photo.channels,
        tile_size=photo.tile_size,
        tile_format=photo.tile_format,
    )


def test_jpeg_tiles_round_trip_within_jpeg_tolerance() -> None:
    data = encode(photo_like(), "JPEG", quality=95)
    photo = tile_encoded_image(data, tile_size=128, tile_format="jpeg", jpeg_quality=90)
    assert (photo.height, photo.width, photo.channels) == (HEIGHT, WIDTH, 3)
    assert len(photo.tiles) == 4 * 5
    error = np.abs(full_image(photo).astype(int) - decoded(data).astype(int))
    assert error.mean() < 3.0
    assert np.percentile(error, 99) < 16


@pytest.mark.parametrize("tile_format", ["png", "raw"])
def test_lossless_tiles_round_trip_exactly(tile_format: str) -> None:
    original = photo_like()
    photo = tile_encoded_image(encode(original, "PNG"), tile_size=128, tile_format=tile_format)
    np.testing.assert_array_equal(full_image(photo), original)


@pytest.mark.parametrize("tile_format", ["raw", "png", "jpeg"])
def test_tiles_are_byte_identical_to_the_numpy_codec(tile_format: str) -> None:
    data = encode(photo_like(), "JPEG", quality=90)
    photo = tile_encoded_image(data, tile_size=128, tile_format=tile_format, jpeg_quality=85)
    expected = encode_tiles(decoded(data), tile_size=128, tile_format=tile_format, jpeg_quality=85)
    assert photo.tiles == expected


def test_threads_give_the_same_tiles() -> None:
    data = encode(photo_like(), "JPEG", quality=90)
    assert (
        tile_encoded_image(data, tile_size=128, threads=3).tiles
        == tile_encoded_image(data, tile_size=128).tiles
    )


def test_proxy_size_and_pixels_match_make_proxy() -> None:
    data = encode(photo_like(), "JPEG", quality=90)
    photo = tile_encoded_image(data, proxy_max_side=64)
    assert (photo.proxy_height, photo.proxy_width) == (48, 64)
    proxy = decode_proxy(photo.proxy)
    assert proxy.shape == (48, 64, 3)
    np.testing.assert_array_equal(proxy, make_proxy(decoded(data), max_side=64))


@pytest.mark.parametrize(("orientation", "quarter_turns"), [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(orientation: int, quarter_turns: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo_like(), "JPEG", quality=90, exif=exif.tobytes())
    photo = tile_encoded_image(data, tile_size=128, tile_format="png")
    assert photo.exif_orientation == orientation
    # np.rot90 with k=-1 turns clockwise, which is what orientation 6 asks for.
    upright = np.rot90(decoded(data), k=quarter_turns)
    assert (photo.height, photo.width) == upright.shape[:2]
    np.testing.assert_array_equal(full_image(photo), upright)


def test_no_exif_means_orientation_one() -> None:
    photo = tile_encoded_image(encode(photo_like(), "JPEG"), tile_size=128)
    assert photo.exif_orientation == 1
    assert photo.source_format == "JPEG"


def test_grey_stays_grey_and_alpha_is_dropped() -> None:
    grey = photo_like()[:, :, :1]
    photo = tile_encoded_image(encode(grey, "PNG"), tile_size=128, tile_format="png")
    assert photo.channels == 1
    np.testing.assert_array_equal(full_image(photo), grey)
    rgba = np.concatenate([photo_like(), np.full((HEIGHT, WIDTH, 1), 7, np.uint8)], axis=-1)
    photo = tile_encoded_image(encode(rgba, "PNG"), tile_size=128, tile_format="png")
    assert photo.channels == 3
    np.testing.assert_array_equal(full_image(photo), rgba[:, :, :3])


def test_columns_and_tiled_image() -> None:
    photo = tile_encoded_image(encode(photo_like(), "JPEG"), tile_size=256)
    columns = photo.columns()
    assert columns["tiles"] is photo.tiles and columns["tile_format"] == "jpeg"
    assert photo.tiled_image().decode_tile(5).shape == (450 - 256, 600 - 512, 3)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", encode(photo_like(), "JPEG")[:2000]],
    ids=["empty", "garbage", "truncated-jpeg"],
)
def test_corrupt_bytes_raise_unreadable_image_error(data: bytes) -> None:
    with pytest.raises(UnreadableImageError, match="cannot decode image"):
        tile_encoded_image(data)
    # A CodecError and so a ValueError: the pipeline turns it into a reject row.
    assert issubclass(UnreadableImageError, CodecError)
    assert issubclass(UnreadableImageError, ValueError)


def test_bad_arguments_are_named() -> None:
    data = encode(photo_like(), "JPEG")
    with pytest.raises(ValueError, match="unknown tile format"):
        tile_encoded_image(data, tile_format="webp")
    with pytest.raises(ValueError, match="tile_size >= 16"):
        tile_encoded_image(data, tile_size=8)
