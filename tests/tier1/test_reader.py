"""Tier 1: the reader benchmark's shifted crops (its end-to-end run is in tier 2)."""

from __future__ import annotations

import torch

from jobs.benchmarks.reader import crops


def test_reader_crops_shift_each_glimpse_by_its_own_offset() -> None:
    glimpses = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    out = crops(glimpses, torch.tensor([[0, 0], [2, 1]]), 4)
    assert out.shape == (2, 1, 4, 4)
    assert out[0, 0, 0, 0] * 255 == glimpses[0, 0, 0, 0]
    assert out[1, 0, 0, 0] * 255 == glimpses[1, 0, 2, 1]
    assert torch.equal((out[1] * 255).round().to(torch.uint8), glimpses[1, :, 2:6, 1:5])
