"""Label maps to per-class masks, batched, one host transfer."""
from __future__ import annotations

import pytest
import torch

from m2f_plugin.structures import sem_seg_to_masks


def test_masks_match_per_image_unique():
    labels = torch.tensor([[[0, 0, 2], [255, 2, 2]], [[1, 1, 1], [1, 1, 1]],
                           [[255, 255, 255], [255, 255, 255]]])
    t = sem_seg_to_masks(labels, num_classes=3, ignore_index=255)
    assert t.num_gts == [2, 1, 0]
    assert t.labels.tolist() == [[0, 2], [1, -1], [-1, -1]]
    assert torch.equal(t.masks[0, 0], labels[0] == 0)
    assert torch.equal(t.masks[0, 1], labels[0] == 2)
    assert torch.equal(t.masks[1, 0], torch.ones(2, 3, dtype=torch.bool))
    assert not t.masks[1, 1].any() and not t.masks[2].any()


def test_accepts_channel_dim_and_reports_bad_labels():
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    assert sem_seg_to_masks(labels, 2, 255).num_gts == [1]
    labels[0, 0, 0, 0] = 9
    labels[0, 0, 0, 1] = -3
    with pytest.raises(ValueError, match=r'\[-3, 9\] outside \[0, '
                       r'num_classes=2\) that are not ignore_index=255'):
        sem_seg_to_masks(labels, 2, 255)
