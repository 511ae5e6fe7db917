"""Panoptic/instance detectors: head things/stuff vs the data set, before step 1."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from m2f_plugin.engine import check_num_classes

THINGS = ('disc', 'square', 'triangle', 'ring', 'cross')
STUFF = ('background',)


def _detector(things: int, stuff: int):
    head = SimpleNamespace(num_things_classes=things, num_stuff_classes=stuff)
    return SimpleNamespace(panoptic_head=head)


def _dataset(**metainfo):
    return SimpleNamespace(metainfo=metainfo)


PANOPTIC = _dataset(classes=THINGS + STUFF, thing_classes=THINGS,
                    stuff_classes=STUFF)
INSTANCE = _dataset(classes=THINGS)


def test_matching_counts_pass():
    check_num_classes(_detector(5, 1), PANOPTIC)
    check_num_classes(_detector(5, 0), INSTANCE)


def test_panoptic_mismatch_names_counts_classes_and_fix():
    with pytest.raises(ValueError) as err:
        check_num_classes(_detector(80, 53), PANOPTIC)
    msg = str(err.value)
    assert 'num_things_classes=80, num_stuff_classes=53' in msg
    assert '5 thing classes (disc, square, triangle, ring, ...)' in msg
    assert '1 stuff classes (background)' in msg
    assert 'Set model.panoptic_head num_things_classes=5, num_stuff_classes=1' in msg


def test_split_matters_not_only_the_total():
    with pytest.raises(ValueError, match='num_things_classes=5, num_stuff_classes=1'):
        check_num_classes(_detector(4, 2), PANOPTIC)


def test_instance_data_set_needs_no_stuff():
    with pytest.raises(ValueError, match='num_things_classes=5, num_stuff_classes=0'):
        check_num_classes(_detector(5, 1), INSTANCE)
