"""``M2FDetHead`` on unusual or wrong ground truth and configs: the right
targets, or an error that names the setting to fix.

Most cases run a tiny head on 64 x 64 ground truth (``feats()``); the
data-preprocessor case runs the tiny demo detector.
"""
from __future__ import annotations

import copy
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData

from tests.helpers import CONFIGS, feats, use_fixed_points

pytest.importorskip('mmdet')
from mmdet.models.utils import preprocess_panoptic_gt  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.structures.mask import BitmapMasks  # noqa: E402

THINGS, STUFF = 3, 2
K = THINGS + STUFF
S = 64  # ground truth and padded batch input: S x S
TINY = dict(
    type='M2FDetHead', in_channels=[8, 16, 24, 32], strides=[4, 8, 16, 32],
    feat_channels=32, out_channels=32, num_things_classes=THINGS,
    num_stuff_classes=STUFF, num_queries=8,
    pixel_decoder=dict(type='M2FPixelDecoder', num_layers=1, num_heads=4,
                       ffn_dims=64, num_groups=8),
    transformer_decoder=dict(type='M2FMaskedTransformerDecoder',
                             num_layers=2, num_heads=4, ffn_dims=64),
    num_points=64)
PANOPTIC_DEMO = osp.join(
    CONFIGS, 'demo',
    'mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py')


@pytest.fixture(autouse=True)
def mmdet_scope():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def _head(**overrides):
    torch.manual_seed(0)
    return MODELS.build(dict(TINY, **overrides))


def _sample(things=(), stuff=(), crowds=(), size=(S, S), batch_input=(S, S),
            img_shape=None, with_sem_seg=True) -> DetDataSample:
    """A sample with ``things`` / ``crowds`` as (label, (y0, y1, x0, x1)) and
    ``stuff`` the same in the label map; ground truth of ``size``. Crowds go
    to ``ignored_instances`` and carry their thing class in the map, as
    mmdet's ``LoadPanopticAnnotations`` + ``PackDetInputs`` give them."""
    h, w = size

    def instances(items):
        masks = np.zeros((len(items), h, w), np.uint8)
        for i, (_, (y0, y1, x0, x1)) in enumerate(items):
            masks[i, y0:y1, x0:x1] = 1
        return InstanceData(labels=torch.tensor([t[0] for t in items]).long(),
                            masks=BitmapMasks(masks, h, w))

    s = DetDataSample(metainfo=dict(batch_input_shape=batch_input,
                                    img_shape=img_shape or size))
    s.gt_instances = instances(things)
    if crowds:
        s.ignored_instances = instances(crowds)
    if with_sem_seg:
        sem = np.full((h, w), 255, np.int64)
        for label, (y0, y1, x0, x1) in list(stuff) + list(things) + list(
                crowds):
            sem[y0:y1, x0:x1] = label
        s.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(sem[None]))
    return s


def _as_mmdet(sample: DetDataSample, num_stuff: int = STUFF):
    """mmdet's own targets of one sample: {(label, mask bytes)}."""
    sem = sample.gt_sem_seg.sem_seg if 'gt_sem_seg' in sample else None
    labels, masks = preprocess_panoptic_gt(
        sample.gt_instances.labels, sample.gt_instances.masks, sem, THINGS,
        num_stuff)
    return {(int(lab), m.bool().numpy().tobytes())
            for lab, m in zip(labels, masks)}


def _as_ours(targets, b: int):
    n = targets.num_gts[b]
    return {(int(lab), m.numpy().tobytes()) for lab, m in
            zip(targets.labels[b, :n], targets.masks[b, :n])}


def _losses_ok(head, samples, expect_empty: bool = False):
    losses = head.loss(feats(), samples)
    assert len(losses) == 9
    assert all(torch.isfinite(v) for v in losses.values()), losses
    if expect_empty:
        assert losses['loss_mask'] == 0 and losses['loss_dice'] == 0
    sum(losses.values()).backward()
    return losses


# --- config errors ------------------------------------------------------------

@pytest.mark.parametrize('num_stuff, entries, message', [
    (STUFF, 5, r'class_weight has 5 entries, but num_things_classes \+ '
     r'num_stuff_classes = 3 \+ 2 = 5 classes need 6 .*class_weight=\[1\.0\] '
     r'\* 5 \+ \[0\.1\]'),
    (0, 5, r'class_weight has 5 entries, but num_things_classes \+ '
     r'num_stuff_classes = 3 \+ 0 = 3 classes need 4'),
])
def test_class_weight_of_wrong_length(num_stuff, entries, message):
    with pytest.raises(ValueError, match=message):
        _head(num_stuff_classes=num_stuff,
              loss_cls=dict(type='M2FClassLoss',
                            class_weight=[1.0] * entries))


def test_max_per_image_above_queries_times_classes_fails_at_build():
    """8 queries x 5 classes = 40 pairs: 41 is refused when the model is
    built (not at the first validation); without instance results it is
    not used, so it is not checked."""
    too_many = dict(instance_on=True, max_per_image=41)
    with pytest.raises(ValueError, match=r'test_cfg\.max_per_image=41 is '
                       r'larger than queries x classes = 8 x 5 = 40.*set '
                       r'test_cfg\.max_per_image <= 40 or raise num_queries'):
        _head(test_cfg=too_many)
    _head(test_cfg=dict(instance_on=True, max_per_image=40))
    _head(test_cfg=dict(instance_on=False, max_per_image=41))


def test_max_per_image_in_detector_config_names_the_key():
    cfg = Config.fromfile(PANOPTIC_DEMO).model
    cfg.test_cfg.max_per_image = 121  # 20 queries x 6 classes = 120
    with pytest.raises(ValueError, match=r'max_per_image=121 .* 20 x 6 = '
                       r'120'):
        MODELS.build(cfg)


def test_fusion_head_max_per_image_message():
    """The fusion head's own check (a head other than ours may feed it)."""
    from m2f_plugin.models.heads.fusion_head import M2FFusionHead
    fusion = M2FFusionHead(num_things_classes=THINGS, num_stuff_classes=STUFF,
                           test_cfg=dict(panoptic_on=False, instance_on=True,
                                         max_per_image=41))
    sample = DetDataSample(metainfo=dict(batch_input_shape=(S, S),
                                         img_shape=(S, S), ori_shape=(S, S)))
    with pytest.raises(ValueError, match=r'test_cfg\.max_per_image=41 is '
                       r'larger than queries x classes = 8 x 5 = 40'):
        fusion.predict(torch.randn(1, 8, K + 1), torch.randn(1, 8, 16, 16),
                       [sample])


# --- images without some kind of ground truth ----------------------------------

def test_image_without_instances_panoptic():
    """Image 1 has neither things nor stuff: no targets; image 0's stand."""
    head = _head()
    samples = [_sample([(0, (0, 20, 0, 20))], [(3, (30, 64, 0, 64))]),
               _sample()]
    targets = head.targets(samples, 'cpu')
    assert targets.num_gts == [2, 0]
    assert _as_ours(targets, 0) == _as_mmdet(samples[0])
    _losses_ok(head, samples)


@pytest.mark.parametrize('with_sem_seg', [True, False])
def test_no_instances_anywhere_gives_zero_mask_losses(with_sem_seg):
    head = _head(num_stuff_classes=0 if not with_sem_seg else STUFF)
    samples = [_sample(with_sem_seg=with_sem_seg) for _ in range(2)]
    assert head.targets(samples, 'cpu').num_gts == [0, 0]
    _losses_ok(head, samples, expect_empty=True)


def test_image_without_instances_instance_segmentation():
    head = _head(num_stuff_classes=0)
    samples = [_sample([(2, (0, 30, 0, 30)), (2, (20, 50, 20, 50))],
                       with_sem_seg=False),
               _sample(with_sem_seg=False)]
    targets = head.targets(samples, 'cpu')
    assert targets.num_gts == [2, 0]
    assert _as_ours(targets, 0) == _as_mmdet(samples[0], num_stuff=0)
    _losses_ok(head, samples)


def test_image_with_only_stuff():
    head = _head()
    samples = [_sample(stuff=[(3, (0, 64, 0, 30)), (4, (0, 64, 30, 64))]),
               _sample(stuff=[(4, (10, 20, 10, 20))])]
    targets = head.targets(samples, 'cpu')
    assert targets.num_gts == [2, 1]
    for b, s in enumerate(samples):
        assert _as_ours(targets, b) == _as_mmdet(s)
    _losses_ok(head, samples)


def test_class_range_ends_as_mmdet():
    """Things of the last thing class (in the map too, as mmdet's panoptic
    loading gives them), a crowd of that class, and the first and the last
    stuff class: the targets are mmdet's ``preprocess_panoptic_gt``'s, the
    last thing class only ever a thing, each stuff class one target."""
    head = _head()
    last_thing, first_stuff, last_stuff = THINGS - 1, THINGS, K - 1
    samples = [
        _sample([(last_thing, (0, 20, 0, 20)), (0, (30, 44, 30, 50)),
                 (last_thing, (40, 60, 0, 20))],
                [(first_stuff, (20, 64, 0, 64)), (last_stuff, (0, 20, 20, 64))],
                crowds=[(last_thing, (50, 64, 50, 64))]),
        _sample([(last_thing, (10, 30, 10, 30))],
                [(last_stuff, (0, 64, 0, 64))]),
        _sample(stuff=[(first_stuff, (0, 32, 0, 64))],
                crowds=[(last_thing, (40, 64, 0, 64))]),
    ]
    targets = head.targets(samples, 'cpu')
    assert targets.num_gts == [5, 2, 1]
    for b, s in enumerate(samples):
        assert _as_ours(targets, b) == _as_mmdet(s)
    assert sorted(targets.labels[0, :5].tolist()) == [
        0, last_thing, last_thing, first_stuff, last_stuff]
    # the crowd's pixels are in no target
    assert not targets.masks[0, :5, 50:, 50:].any()
    assert not targets.masks[2, :1, 40:].any()
    _losses_ok(head, samples[:2])


def test_image_with_only_crowd_regions_panoptic():
    """A crowd (``ignored_instances``, its thing class in the map) makes no
    target, and no target covers its pixels, as mmdet's."""
    head = _head()
    crowd = (1, (10, 40, 10, 40))
    samples = [_sample(crowds=[crowd]),
               _sample(stuff=[(3, (0, 64, 0, 64))], crowds=[crowd])]
    targets = head.targets(samples, 'cpu')
    assert targets.num_gts == [0, 1]
    for b, s in enumerate(samples):
        assert _as_ours(targets, b) == _as_mmdet(s)
    assert not targets.masks[1, 0, 10:40, 10:40].any()
    _losses_ok(head, samples)
    _losses_ok(head, samples[:1] * 2, expect_empty=True)


def test_image_with_only_crowd_regions_instance_segmentation():
    head = _head(num_stuff_classes=0)
    samples = [_sample(crowds=[(1, (10, 40, 10, 40))], with_sem_seg=False)
               for _ in range(2)]
    assert head.targets(samples, 'cpu').num_gts == [0, 0]
    _losses_ok(head, samples, expect_empty=True)


# --- ground truth of the wrong size ------------------------------------------------

def _shift(sample: DetDataSample, size, img_shape=None) -> DetDataSample:
    """``sample``'s ground truth cropped to ``size`` (as if never padded)."""
    h, w = size
    out = copy.deepcopy(sample)
    out.set_metainfo(dict(img_shape=img_shape or size))
    masks = out.gt_instances.masks.masks[:, :h, :w]
    out.gt_instances.masks = BitmapMasks(masks, h, w)
    out.gt_sem_seg = PixelData(sem_seg=out.gt_sem_seg.sem_seg[:, :h, :w])
    return out


def test_unpadded_ground_truth_is_padded_to_the_batch_input():
    """Masks and label maps at ``img_shape`` (a data preprocessor without
    ``pad_mask`` / ``pad_seg``) give the same targets and losses as padded
    ones; images of two sizes in one batch too."""
    head = _head()
    use_fixed_points(head)
    things = [(0, (0, 20, 0, 20)), (2, (30, 44, 30, 50))]
    stuff = [(3, (20, 64, 0, 64)), (4, (0, 20, 20, 64))]
    padded = [_sample(things, stuff), _sample(things[1:], stuff[:1])]
    # the images' own pixels: 48 x 56 and 44 x 64; zero / 255 beyond
    for s, (h, w) in zip(padded, [(48, 56), (44, 64)]):
        s.gt_instances.masks.masks[:, h:] = 0
        s.gt_instances.masks.masks[:, :, w:] = 0
        s.gt_sem_seg.sem_seg[:, h:] = 255
        s.gt_sem_seg.sem_seg[:, :, w:] = 255
        s.set_metainfo(dict(img_shape=(h, w)))
    unpadded = [_shift(s, s.img_shape) for s in padded]
    ref, out = head.targets(padded, 'cpu'), head.targets(unpadded, 'cpu')
    assert out.num_gts == ref.num_gts
    assert torch.equal(out.labels, ref.labels)
    assert torch.equal(out.masks, ref.masks)
    torch.manual_seed(1)
    ref_losses = head.loss(feats(), padded)
    torch.manual_seed(1)
    out_losses = head.loss(feats(), unpadded)
    for key in ref_losses:
        torch.testing.assert_close(out_losses[key], ref_losses[key])


def test_detector_without_pad_mask_trains_as_with_it():
    """The demo detector, its data preprocessor's ``pad_mask`` and
    ``pad_seg`` off: 60 x 50 images in a 64 x 64 batch input give the same
    losses as with them on."""
    cfg = Config.fromfile(PANOPTIC_DEMO).model
    cfg.panoptic_head.num_points = cfg.panoptic_head.matcher.num_points = 64
    torch.manual_seed(0)
    det = MODELS.build(cfg)
    use_fixed_points(det)
    things = [(0, (0, 20, 0, 20)), (2, (30, 44, 30, 50))]
    stuff = [(5, (44, 60, 0, 50))]

    def data():
        sample = _sample(things, stuff, size=(60, 50), batch_input=None)
        sample.set_metainfo(dict(ori_shape=(60, 50), pad_shape=(60, 50),
                                 scale_factor=(1.0, 1.0)))
        g = torch.Generator().manual_seed(0)
        img = torch.randint(0, 256, (3, 60, 50), generator=g,
                            dtype=torch.uint8)
        return dict(inputs=[img, img.clone()],
                    data_samples=[sample, copy.deepcopy(sample)])

    losses = []
    for pad in (True, False):
        det.data_preprocessor.pad_mask = det.data_preprocessor.pad_seg = pad
        batch = det.data_preprocessor(data(), training=True)
        assert batch['inputs'].shape[-2:] == (64, 64)
        masks = batch['data_samples'][0].gt_instances.masks
        assert (masks.height, masks.width) == ((64, 64) if pad else (60, 50))
        torch.manual_seed(2)
        losses.append(det.loss(batch['inputs'], batch['data_samples']))
    for key in losses[0]:
        torch.testing.assert_close(losses[1][key], losses[0][key])


@pytest.mark.parametrize('size, img_shape, field', [
    ((72, 64), (64, 64), 'gt_instances.masks'),  # beyond the batch input
    ((40, 40), (48, 48), 'gt_instances.masks'),  # smaller than the image
])
def test_ground_truth_that_cannot_be_the_image_is_an_error(size, img_shape,
                                                          field):
    head = _head()
    sample = _sample([(0, (0, 20, 0, 20))], size=size, img_shape=img_shape)
    with pytest.raises(ValueError, match=(
            re.escape(f'{field} of size {size} do not fit an image of '
                      f'img_shape {img_shape} in a padded batch input of '
                      '(64, 64)') + r'.*data_preprocessor\.pad_mask=True')):
        head.targets([sample, _sample()], 'cpu')


def test_label_map_beyond_the_batch_input_is_an_error():
    head = _head()
    sample = _sample([(0, (0, 20, 0, 20))])
    sample.gt_sem_seg = PixelData(sem_seg=torch.full((1, 64, 80), 255))
    with pytest.raises(ValueError, match=r'gt_sem_seg of size \(64, 80\) do '
                       r'not fit .*pad_seg=True for gt_sem_seg'):
        head.targets([sample, _sample()], 'cpu')


# --- labels outside the classes ------------------------------------------------------

@pytest.mark.parametrize('num_stuff', [STUFF, 0])
@pytest.mark.parametrize('bad', [K, -1, 99])
def test_instance_label_outside_the_classes_is_an_error(num_stuff, bad):
    head = _head(num_stuff_classes=num_stuff)
    num_classes = THINGS + num_stuff
    bad = num_classes if bad == K else bad
    sample = _sample([(0, (0, 20, 0, 20)), (bad, (30, 40, 30, 40))],
                     with_sem_seg=bool(num_stuff))
    with pytest.raises(ValueError, match=(
            rf'gt_instances\.labels hold class labels \[{bad}\] outside '
            rf'\[0, num_classes={num_classes}\); set num_things_classes \+ '
            r'num_stuff_classes')):
        head.targets([_sample(), sample], 'cpu')


def test_label_map_label_outside_the_classes_is_an_error():
    head = _head()
    sample = _sample(stuff=[(3, (0, 64, 0, 30)), (7, (0, 10, 40, 50))])
    with pytest.raises(ValueError, match=(
            r'gt_sem_seg holds labels \[7\] outside \[0, num_things_classes '
            r'\+ num_stuff_classes = 5\) that are not ignore_index=255')):
        head.targets([sample, _sample()], 'cpu')


# --- loss weights ---------------------------------------------------------------

def test_each_mask_loss_scales_with_its_own_weight():
    """``loss_mask`` (point BCE) and ``loss_dice`` set to different weights,
    3 and 7: every set's ``*loss_mask`` is 3x and every ``*loss_dice`` 7x
    the value at weight 1, the class losses are unchanged (same weights,
    same points, same matching, since the matcher has its own costs)."""
    samples = [_sample([(0, (0, 20, 0, 20)), (2, (30, 60, 10, 40))],
                       [(3, (40, 64, 40, 64))]),
               _sample([(1, (5, 50, 5, 25))], [(4, (0, 64, 30, 64))])]
    losses = {}
    for weights in ((1.0, 1.0), (3.0, 7.0)):
        head = _head(
            loss_mask=dict(type='M2FPointBCELoss', loss_weight=weights[0]),
            loss_dice=dict(type='M2FPointDiceLoss', loss_weight=weights[1]))
        use_fixed_points(head)
        with torch.no_grad():
            losses[weights] = head.loss(feats(), samples)
    unit, weighted = losses[(1.0, 1.0)], losses[(3.0, 7.0)]
    assert len(unit) == 9 and set(unit) == set(weighted)
    for key, value in unit.items():
        assert value > 0, key  # a real check of the ratio
        scale = (3.0 if key.endswith('loss_mask') else
                 7.0 if key.endswith('loss_dice') else 1.0)
        torch.testing.assert_close(weighted[key], scale * value,
                                   msg=f'{key} scaled by another weight')
    assert unit['loss_mask'] != unit['loss_dice']
