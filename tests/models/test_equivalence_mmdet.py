"""Same weights, same outputs as mmdet 3.3.0's built-in Mask2Former (R50):
mmdet's detector with ``panoptic_head=M2FDetHead`` against the built-in head,
for panoptic (things + stuff) and instance (overlapping masks) ground truth;
and the head's own contract on a tiny model."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData

from m2f_plugin.converters import convert_mmdet_state_dict
from m2f_plugin.structures import InstanceMaskTargets, SegmentMapTargets
from tests.helpers import feats, use_fixed_points

mmdet = pytest.importorskip('mmdet')
from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.structures.mask import BitmapMasks  # noqa: E402

from tests.helpers.mmdet import (  # noqa: E402
    INSTANCE,
    NUM_QUERIES,
    PANOPTIC,
    H,
    W,
    det_sample,
    empty_samples,
    instance_samples,
    mmdet_config,
    our_head,
    panoptic_samples,
)


def _build_pair(rel: str):
    """mmdet's detector, and the same detector with our head holding the
    built-in's weights (converted)."""
    model = copy.deepcopy(mmdet_config(rel).model)
    model.backbone.init_cfg = None  # no download
    model.panoptic_head.num_queries = NUM_QUERIES
    # random weights make no confident segment: keep every query's
    model.test_cfg.object_mask_thr = 0.0
    model.test_cfg.iou_thr = 0.0
    ours_cfg = copy.deepcopy(model)
    ours_cfg.panoptic_head = our_head(model.panoptic_head)
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        builtin = MODELS.build(model)
        builtin.init_weights()
        ours = MODELS.build(ours_cfg)
    converted, report = convert_mmdet_state_dict(builtin.state_dict())
    assert not report.unmapped
    missing, unexpected = ours.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    return builtin.eval(), ours.eval()


@pytest.fixture(scope='module')
def panoptic_pair():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return _build_pair(PANOPTIC)


@pytest.fixture(scope='module')
def instance_pair():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return _build_pair(INSTANCE)


@pytest.fixture(autouse=True)
def mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def test_all_prediction_sets_match_builtin(panoptic_pair):
    builtin, ours = panoptic_pair
    torch.manual_seed(1)
    imgs = torch.randn(2, 3, H, W)
    with torch.no_grad():
        cls_ref, mask_ref = builtin.panoptic_head(builtin.extract_feat(imgs),
                                                  None)
        preds = ours.panoptic_head(ours.extract_feat(imgs))
    assert preds.num_sets == len(cls_ref) == 10
    for s in range(preds.num_sets):
        assert preds.class_logits[s].shape == (2, NUM_QUERIES, 134)
        assert _rel_err(preds.class_logits[s], cls_ref[s]) < 1e-5, s
        assert _rel_err(preds.mask_logits(s), mask_ref[s]) < 1e-5, s


@pytest.mark.parametrize('pair_name, make_samples, kind', [
    ('panoptic_pair', panoptic_samples, SegmentMapTargets),
    ('instance_pair', instance_samples, InstanceMaskTargets),
    ('instance_pair', empty_samples, InstanceMaskTargets),
])
def test_losses_match_builtin(request, fixed_rand, pair_name, make_samples,
                              kind):
    """mmdet draws its points with ``torch.rand`` (patched by
    ``fixed_rand``), ours through its ``draw_points`` seam: both get
    ``fixed_points``."""
    builtin, ours = request.getfixturevalue(pair_name)
    assert isinstance(ours.panoptic_head.targets(make_samples(), 'cpu'), kind)
    use_fixed_points(ours)
    torch.manual_seed(2)
    imgs = torch.randn(2, 3, H, W)
    builtin.train()
    ours.train()
    try:
        ref = builtin.loss(imgs, make_samples())
        out = ours.loss(imgs, make_samples())
    finally:
        builtin.eval()
        ours.eval()
    assert set(out) == set(ref) and len(out) == 30
    for key in ref:
        assert torch.isfinite(out[key]), key
        rel = abs(out[key].item() - ref[key].item()) / max(
            abs(ref[key].item()), 1e-8)
        assert rel < 1e-4, (key, out[key].item(), ref[key].item())
    if make_samples is empty_samples:
        assert out['loss_mask'] == 0 and out['loss_dice'] == 0


def _predict(model, imgs):
    samples = [det_sample([], []) for _ in range(len(imgs))]
    with torch.no_grad():
        return model.predict(imgs, samples, rescale=True)


def _check_instances(out, ref):
    """Same scores (sorted) and the same labels with them."""
    order_out = out.scores.argsort(descending=True)
    order_ref = ref.scores.argsort(descending=True)
    torch.testing.assert_close(out.scores[order_out], ref.scores[order_ref],
                               rtol=1e-4, atol=1e-6)
    assert torch.equal(out.labels[order_out], ref.labels[order_ref])


def test_detector_predict_matches_builtin_panoptic(panoptic_pair):
    builtin, ours = panoptic_pair
    torch.manual_seed(3)
    imgs = torch.randn(2, 3, H, W)
    ref, out = _predict(builtin, imgs), _predict(ours, imgs)
    for r, o in zip(ref, out):
        pan_ref = r.pred_panoptic_seg.sem_seg
        pan_out = o.pred_panoptic_seg.sem_seg
        assert pan_out.shape == pan_ref.shape == (1, H, W)
        assert len(pan_ref.unique()) > 3  # several segments, not just void
        assert torch.equal(pan_out, pan_ref)
        _check_instances(o.pred_instances, r.pred_instances)


def test_detector_predict_matches_builtin_instance(instance_pair):
    builtin, ours = instance_pair
    torch.manual_seed(4)
    imgs = torch.randn(2, 3, H, W)
    ref, out = _predict(builtin, imgs), _predict(ours, imgs)
    for r, o in zip(ref, out):
        assert 'pred_panoptic_seg' not in o
        assert len(o.pred_instances) == len(r.pred_instances) == 100
        _check_instances(o.pred_instances, r.pred_instances)


def test_raw_builtin_state_dict_loads_into_our_detector(panoptic_pair):
    """mmdet's own keys (no converter run by the user) load strictly into
    ours, renamed on load, and give the built-in's logits."""
    builtin, ours = panoptic_pair
    fresh = copy.deepcopy(ours)
    for p in fresh.parameters():
        p.data.zero_()
    missing, unexpected = fresh.load_state_dict(builtin.state_dict(),
                                                strict=True)
    assert not missing and not unexpected
    for key, value in ours.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key


# --- the head's own contract, on a tiny model --------------------------------

TINY = dict(
    type='M2FDetHead', in_channels=[8, 16, 24, 32], strides=[4, 8, 16, 32],
    feat_channels=32, out_channels=32, num_things_classes=3,
    num_stuff_classes=2, num_queries=8,
    pixel_decoder=dict(type='M2FPixelDecoder', num_layers=1, num_heads=4,
                       ffn_dims=64, num_groups=8),
    transformer_decoder=dict(type='M2FMaskedTransformerDecoder',
                             num_layers=2, num_heads=4, ffn_dims=64),
    num_points=64)


def _tiny(**overrides):
    return MODELS.build(dict(TINY, **overrides))


def _tiny_samples(things, stuff):
    """64 x 64 samples; ``things``/``stuff`` per image: lists of (label,
    box) / (label, box) with boxes as (y0, y1, x0, x1)."""
    out = []
    for th, st in zip(things, stuff):
        masks = np.zeros((len(th), 64, 64), np.uint8)
        for i, (_, (y0, y1, x0, x1)) in enumerate(th):
            masks[i, y0:y1, x0:x1] = 1
        sem = np.full((64, 64), 255, np.int64)
        for label, (y0, y1, x0, x1) in st:
            sem[y0:y1, x0:x1] = label
        s = DetDataSample(metainfo=dict(batch_input_shape=(64, 64),
                                        img_shape=(64, 64)))
        s.gt_instances = InstanceData(
            labels=torch.tensor([t[0] for t in th]).long(),
            masks=BitmapMasks(masks, 64, 64))
        s.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(sem[None]))
        out.append(s)
    return out


def test_class_weight_length_names_both_class_counts():
    with pytest.raises(ValueError, match=r'class_weight has 5 entries, but '
                       r'num_things_classes \+ num_stuff_classes = 3 \+ 2 = 5 '
                       r'classes need 6'):
        _tiny(loss_cls=dict(type='M2FClassLoss', class_weight=[1.0] * 5))


def test_matcher_and_points_come_from_train_cfg():
    head = _tiny(num_points=None, train_cfg=dict(
        num_points=32, oversample_ratio=2.0, importance_sample_ratio=0.5,
        assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='ClassificationCost', weight=1.0),
            dict(type='CrossEntropyLossCost', weight=3.0, use_sigmoid=True),
            dict(type='DiceCost', weight=4.0, pred_act=True, eps=1.0)])))
    criterion = head.criterion
    assert (criterion.num_points, criterion.oversample_ratio,
            criterion.importance_sample_ratio) == (32, 2.0, 0.5)
    m = criterion.matcher
    assert (m.cost_class, m.cost_mask, m.cost_dice, m.num_points) == (
        1.0, 3.0, 4.0, 32)


@pytest.mark.parametrize('things, stuff', [
    ([[], []], [[], []]),  # no targets at all
    ([[], [(1, (0, 30, 0, 30))]], [[(3, (0, 64, 0, 64))], []]),
    ([[(0, (0, 20, 0, 20))], []], [[(4, (30, 64, 0, 64))], [(3, (0, 64, 0,
                                                                64))]]),
])
def test_losses_finite_with_empty_images(things, stuff):
    head = _tiny()
    losses = head.loss(feats(), _tiny_samples(things, stuff))
    assert len(losses) == 9
    assert all(torch.isfinite(v) for v in losses.values())
    if not any(things) and not any(stuff):
        assert losses['loss_mask'] == 0 and losses['loss_dice'] == 0
    sum(losses.values()).backward()


def test_predict_shapes():
    head = _tiny().eval()
    samples = _tiny_samples([[], []], [[], []])
    samples[0].set_metainfo(dict(batch_input_shape=(64, 72)))
    with torch.no_grad():
        cls, masks = head.predict(feats(), samples)
        low_cls, low = head.predict_low_res(feats())
    assert cls.shape == low_cls.shape == (2, 8, 6)
    assert masks.shape == (2, 8, 64, 72) and low.shape == (2, 8, 16, 16)


@pytest.mark.parametrize('pair_name', ['panoptic_pair', 'instance_pair'])
def test_low_resolution_path_matches_builtin(request, pair_name):
    """Stride-4 masks into ``M2FFusionHead`` (what our configs run): the
    built-in's panoptic maps and instance scores."""
    from m2f_plugin.models.heads.fusion_head import M2FFusionHead
    builtin, ours = request.getfixturevalue(pair_name)
    fusion = ours.panoptic_fusion_head
    lean = M2FFusionHead(num_things_classes=fusion.num_things_classes,
                         num_stuff_classes=fusion.num_stuff_classes,
                         test_cfg=fusion.test_cfg)
    torch.manual_seed(5)
    imgs = torch.randn(2, 3, H, W)
    ref = _predict(builtin, imgs)
    ours.panoptic_head.masks_at_input_size = False
    ours.panoptic_fusion_head = lean
    try:
        out = _predict(ours, imgs)
    finally:
        ours.panoptic_head.masks_at_input_size = True
        ours.panoptic_fusion_head = fusion
    for r, o in zip(ref, out):
        if 'pred_panoptic_seg' in r:
            assert torch.equal(o.pred_panoptic_seg.sem_seg,
                               r.pred_panoptic_seg.sem_seg)
        _check_instances(o.pred_instances, r.pred_instances)
