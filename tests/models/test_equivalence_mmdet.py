"""Same weights, same outputs as mmdet 3.3.0's built-in Mask2Former (R50):
mmdet's detector with ``panoptic_head=M2FDetHead`` against the built-in head,
for panoptic (things + stuff) and instance (overlapping masks) ground truth;
and the head's own contract on a tiny model."""
from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData

from m2f_plugin.converters import convert_mmdet_state_dict
from m2f_plugin.structures import InstanceMaskTargets, SegmentMapTargets
from tests.helpers import assert_builtin_outputs_equal, feats, use_fixed_points

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


def _configs(rel: str):
    """The built-in detector's config and ours (our head, the same
    hyper-parameters)."""
    model = copy.deepcopy(mmdet_config(rel).model)
    model.backbone.init_cfg = None  # no download
    model.panoptic_head.num_queries = NUM_QUERIES
    # random weights make no confident segment: keep every query's
    model.test_cfg.object_mask_thr = 0.0
    model.test_cfg.iou_thr = 0.0
    ours_cfg = copy.deepcopy(model)
    ours_cfg.panoptic_head = our_head(model.panoptic_head)
    return model, ours_cfg


def _build_pair(rel: str):
    """mmdet's detector, and the same detector with our head holding the
    built-in's weights (converted)."""
    model, ours_cfg = _configs(rel)
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
        preds = ours.panoptic_head.prediction_sets(ours.extract_feat(imgs))
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
    """The same instances: each of ours pairs with one of the built-in's
    of the same label and score (to 1e-4), taken in order of score, the
    one of the closest mask among tied scores; the pair's masks differ in
    at most 4 pixels (measured: at most 1, a logit within float error of
    0, in 5 of 662 masks) and its boxes by at most that pixel."""
    assert len(out) == len(ref) > 0
    unused = list(range(len(ref)))
    for i in out.scores.argsort(descending=True).tolist():
        tol = 1e-4 * abs(out.scores[i].item()) + 1e-6
        close = [j for j in unused if ref.labels[j] == out.labels[i]
                 and abs(ref.scores[j].item() - out.scores[i].item()) <= tol]
        assert close, (i, out.labels[i], out.scores[i])
        flips = [(out.masks[i] != ref.masks[j]).sum().item() for j in close]
        j = close[flips.index(min(flips))]
        unused.remove(j)
        assert min(flips) <= 4, (i, flips)
        torch.testing.assert_close(out.bboxes[i], ref.bboxes[j], rtol=0,
                                   atol=1.0 if min(flips) else 0.0)
    assert not unused


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


# --- mmdet's default thresholds, checkpoint files ----------------------------

# per query: (class, margin added to its logit); 133 is "no object". Query
# q < 20 owns cell q of a 4 x 5 grid; query 8's mask spreads over cells 9
# and 10 as well.
_DESIGN = [(0, 12.0), (79, 12.0), (80, 12.0), (132, 12.0), (80, 12.0),
           (0, 12.0), (133, 12.0), (17, 4.0), (100, 12.0), (17, 12.0),
           (50, 12.0), (133, 12.0), (3, 12.0), (90, 12.0), (120, 12.0),
           (60, 12.0), (133, 12.0), (7, 12.0), (110, 12.0), (79, 12.0)]


@contextlib.contextmanager
def _designed_outputs(model, cls_embed, mask_embed, mask_features):
    """Forward hooks that turn random weights into a confident, well
    separated prediction: each query's class logit gets its margin
    (``_DESIGN``); the mask features and embeddings are scaled by 0.05 and
    get one channel per grid cell and a constant channel (features), and
    20 on the query's cell(s) and -10 on the constant (embeddings): mask
    logits about +10 on the query's cells, -10 elsewhere. The same hooks
    on the same modules of both detectors."""
    num_queries = len(_DESIGN)
    bias = torch.zeros(num_queries, 134)
    for q, (label, margin) in enumerate(_DESIGN):
        bias[q, label] = margin
    embed = torch.zeros(num_queries, 256)
    embed[torch.arange(num_queries), torch.arange(num_queries)] = 20.0
    embed[8, 9:11] = 12.0  # +2 there: a third of its mask is its own
    embed[:, -1] = -10.0

    def cells(out):
        h, w = out.shape[-2:]
        rows = torch.arange(h)[:, None] * 4 // h
        cols = torch.arange(w)[None, :] * 5 // w
        pattern = torch.zeros(out.shape[1:])
        pattern[:num_queries] = (rows * 5 + cols == torch.arange(
            num_queries)[:, None, None])
        pattern[-1] = 1.0
        return 0.05 * out + pattern

    hooks = [model.get_submodule(cls_embed).register_forward_hook(
                 lambda m, i, out: out + bias),
             model.get_submodule(mask_embed).register_forward_hook(
                 lambda m, i, out: 0.05 * out + embed),
             model.get_submodule(mask_features).register_forward_hook(
                 lambda m, i, out: cells(out))]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize('low_resolution', [False, True])
def test_default_thresholds_same_panoptic_maps_as_builtin(panoptic_pair,
                                                          low_resolution):
    """At the config's test_cfg (``iou_thr`` 0.8, ``object_mask_thr`` the
    fusion head's default 0.8, ``filter_low_score``), on a confident
    prediction (``_designed_outputs``): the built-in's panoptic maps and
    instances, from our head's full-size masks through mmdet's fusion head
    and from its stride-4 masks through ``M2FFusionHead``. The thresholds
    drop a query of low score and one that owns a third of its mask."""
    from mmdet.evaluation.functional import INSTANCE_OFFSET
    from mmdet.models.seg_heads.panoptic_fusion_heads import MaskFormerFusionHead

    from m2f_plugin.models.heads.fusion_head import M2FFusionHead
    builtin, ours = panoptic_pair
    defaults = mmdet_config(PANOPTIC).model.test_cfg
    assert defaults.iou_thr == 0.8 and 'object_mask_thr' not in defaults
    fusions = builtin.panoptic_fusion_head, ours.panoptic_fusion_head
    torch.manual_seed(6)
    imgs = torch.randn(2, 3, H, W)
    kw = dict(num_things_classes=80, num_stuff_classes=53,
              test_cfg=copy.deepcopy(defaults))
    builtin.panoptic_fusion_head = MaskFormerFusionHead(**kw)
    ours.panoptic_fusion_head = (
        M2FFusionHead if low_resolution else MaskFormerFusionHead)(**kw)
    ours.panoptic_head.masks_at_input_size = not low_resolution
    try:
        with _designed_outputs(builtin.panoptic_head, 'cls_embed',
                               'mask_embed', 'pixel_decoder.mask_feature'):
            ref = _predict(builtin, imgs)
        with _designed_outputs(ours.panoptic_head,
                               'transformer_decoder.predictor.cls_embed',
                               'transformer_decoder.predictor.mask_embed',
                               'pixel_decoder.mask_proj'):
            out = _predict(ours, imgs)
    finally:
        ours.panoptic_head.masks_at_input_size = True
        builtin.panoptic_fusion_head, ours.panoptic_fusion_head = fusions
    for r, o in zip(ref, out):
        pan_ref = r.pred_panoptic_seg.sem_seg
        assert torch.equal(o.pred_panoptic_seg.sem_seg, pan_ref)
        _check_instances(o.pred_instances, r.pred_instances)
        # the premise: things of both ends of the thing classes, each its
        # own id; stuff of both ends; the two filtered queries missing
        ids = set(pan_ref.unique().tolist())
        things = sorted(i for i in ids if i >= INSTANCE_OFFSET)
        assert {80, 132, 90, 120, 110} <= ids and 100 not in ids, ids
        assert sorted(i % INSTANCE_OFFSET for i in things) == [
            0, 0, 3, 7, 17, 50, 60, 79, 79], ids


def _fresh_ours(rel: str):
    """Our detector with weights of its own (not the built-in's)."""
    _, ours_cfg = _configs(rel)
    torch.manual_seed(123)
    return MODELS.build(ours_cfg).eval()


@pytest.mark.parametrize('rel, pair_name', [(PANOPTIC, 'panoptic_pair'),
                                            (INSTANCE, 'instance_pair')])
def test_builtin_checkpoint_file_loads_into_our_detector(request, tmp_path,
                                                         rel, pair_name):
    """A ``.pth`` file of the built-in detector (mmdet's keys, no converter
    run by the user) loads strictly into ours through mmengine's
    ``load_checkpoint``, and ours then predicts what the built-in does."""
    from mmengine.runner import load_checkpoint
    builtin, _ = request.getfixturevalue(pair_name)
    path = tmp_path / 'builtin.pth'
    torch.save(dict(meta=dict(), state_dict=builtin.state_dict()), path)
    ours = _fresh_ours(rel)
    # mmdet's names, not ours: loading has to rename them
    assert set(builtin.state_dict()) - set(ours.state_dict())
    own = {k: v.clone() for k, v in ours.panoptic_head.state_dict().items()}
    load_checkpoint(ours, str(path), map_location='cpu', strict=True)
    assert any(not torch.equal(v, ours.panoptic_head.state_dict()[k])
               for k, v in own.items())
    torch.manual_seed(7)
    imgs = torch.randn(1, 3, H, W)
    _check_predictions(_predict(ours, imgs), _predict(builtin, imgs))


def test_builtin_checkpoint_file_loads_through_runner_load_from(
        panoptic_pair, tmp_path):
    """The same file as a Runner's ``load_from`` (what ``tools/test.py``
    and ``load_from=`` in a config do)."""
    from mmengine.runner import Runner
    builtin, _ = panoptic_pair
    path = tmp_path / 'builtin.pth'
    torch.save(dict(meta=dict(), state_dict=builtin.state_dict()), path)
    ours = _fresh_ours(PANOPTIC)
    runner = Runner(model=ours, work_dir=str(tmp_path / 'work'),
                    load_from=str(path), default_scope='mmdet',
                    experiment_name=f'load_from_{tmp_path.name}')
    runner.load_or_resume()
    assert runner.model is ours
    torch.manual_seed(8)
    imgs = torch.randn(1, 3, H, W)
    _check_predictions(_predict(ours, imgs), _predict(builtin, imgs))


def _check_predictions(out, ref):
    for r, o in zip(ref, out):
        if 'pred_panoptic_seg' in r:
            assert torch.equal(o.pred_panoptic_seg.sem_seg,
                               r.pred_panoptic_seg.sem_seg)
        else:
            assert 'pred_panoptic_seg' not in o
        _check_instances(o.pred_instances, r.pred_instances)



def test_tensor_mode_returns_what_the_builtin_returns(panoptic_pair):
    """``model(x, samples, mode='tensor')`` (FLOP counters, feature
    extraction, export tools) and ``cls, masks = head(feats)``: two lists of
    per-set tensors, equal to the built-in's."""
    builtin, ours = panoptic_pair
    torch.manual_seed(2)
    imgs = torch.randn(1, 3, H, W)
    with torch.no_grad():
        ref = builtin(imgs, None, mode='tensor')
        out = ours(imgs, None, mode='tensor')
        cls_sets, mask_sets = ours.panoptic_head(ours.extract_feat(imgs))
    assert_builtin_outputs_equal(out, ref)
    assert out[0][0] is not None and len(cls_sets) == len(mask_sets) == 10
    assert torch.equal(mask_sets[-1], out[1][-1])
