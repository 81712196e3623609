"""Tier 1: the tile codec round-trips every format and names what is wrong with bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.codec import (
    CodecError,
    decode_array,
    decode_full,
    encode_array,
    encode_tiles,
    tile_grid,
    tile_shape,
)


def _image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


@pytest.mark.parametrize("tile_format", ["raw", "png"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_lossless_formats_round_trip_exactly(tile_format: str, channels: int) -> None:
    image = _image(37, 53, channels)
    data = encode_array(image, tile_format)
    assert np.array_equal(decode_array(data, tile_format, image.shape), image)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trip_is_close_on_smooth_images(channels: int) -> None:
    y, x = np.mgrid[0:64, 0:96]
    smooth = ((x * 2 + y) % 256).astype(np.uint8)[:, :, None].repeat(channels, axis=2)
    decoded = decode_array(encode_array(smooth, "jpeg", jpeg_quality=95), "jpeg", smooth.shape)
    assert decoded.shape == smooth.shape
    assert np.abs(decoded.astype(int) - smooth.astype(int)).mean() < 2.0


def test_tile_grid_and_edge_tiles() -> None:
    assert tile_grid(300, 200, 128) == (3, 2)
    assert tile_shape(0, height=300, width=200, channels=3, tile_size=128) == (128, 128, 3)
    assert tile_shape(1, height=300, width=200, channels=3, tile_size=128) == (128, 72, 3)
    assert tile_shape(5, height=300, width=200, channels=3, tile_size=128) == (44, 72, 3)


@pytest.mark.parametrize("tile_format", ["raw", "png"])
def test_tiles_reassemble_to_the_image(tile_format: str) -> None:
    image = _image(300, 200, 3, seed=1)
    tiles = encode_tiles(image, tile_size=128, tile_format=tile_format)
    assert len(tiles) == 6
    full = decode_full(
        tiles, height=300, width=200, channels=3, tile_size=128, tile_format=tile_format
    )
    assert np.array_equal(full, image)


def test_unknown_format_is_named() -> None:
    with pytest.raises(ValueError, match="unknown tile format 'webp'"):
        encode_array(_image(4, 4, 1), "webp")


def test_non_uint8_input_is_refused() -> None:
    with pytest.raises(CodecError, match="uint8"):
        encode_array(np.zeros((4, 4, 1), dtype=np.float32), "png")


def test_jpeg_refuses_alpha() -> None:
    with pytest.raises(CodecError, match="alpha"):
        encode_array(_image(8, 8, 4), "jpeg")


def test_corrupt_tile_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="cannot decode png tile"):
        decode_array(b"not a png", "png", (4, 4, 1))


def test_raw_tile_of_wrong_length_is_refused() -> None:
    with pytest.raises(CodecError, match="raw tile holds 3 bytes"):
        decode_array(b"abc", "raw", (2, 2, 1))


def test_decoded_shape_must_match_the_grid() -> None:
    data = encode_array(_image(8, 8, 1), "png")
    with pytest.raises(CodecError, match="expected"):
        decode_array(data, "png", (8, 9, 1))
