"""M2FFusionHead gives mmdet's MaskFormerFusionHead results from low-resolution
masks, upsampling only the queries it keeps."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.seg_heads.panoptic_fusion_heads import MaskFormerFusionHead
from mmdet.structures import DetDataSample

from m2f_plugin.models.heads.fusion_head import M2FFusionHead
from tests.helpers import REPO

THINGS, STUFF = 5, 3
K = THINGS + STUFF


def _inputs(batch=2, queries=12, low=(20, 24), seed=0):
    """Class logits with confident things, stuff and "no object" queries;
    mask logits where each query owns one cell of a jittered 3 x 4 grid."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(batch, queries, K + 1, generator=g)
    for b in range(batch):
        for q in range(queries):
            cls[b, q, (q * 3 + b) % (K + 1)] += 6.0 if q % 4 else 1.0
    h, w = low
    ys = torch.arange(h)[:, None] + torch.randn(h, w, generator=g)
    xs = torch.arange(w)[None, :] + torch.randn(h, w, generator=g)
    cell = (ys * 3 / h).long().clamp(0, 2) * 4 + (xs * 4 / w).long().clamp(0, 3)
    owner = torch.stack([(cell + b) % queries for b in range(batch)])
    masks = torch.where(owner[:, None] == torch.arange(queries)[None, :, None, None],
                        4.0, -4.0) + torch.randn(batch, queries, h, w, generator=g)
    return cls, masks


def _samples(batch, pad=(80, 96), img=(76, 90), ori=(150, 181)):
    out = []
    for _ in range(batch):
        s = DetDataSample()
        s.set_metainfo(dict(batch_input_shape=pad, img_shape=img,
                            ori_shape=ori, pad_shape=pad))
        out.append(s)
    return out


def _heads(**test_cfg):
    cfg = dict(panoptic_on=True, instance_on=True, semantic_on=False,
               object_mask_thr=0.5, iou_thr=0.5, max_per_image=30,
               filter_low_score=True)
    cfg.update(test_cfg)
    kw = dict(num_things_classes=THINGS, num_stuff_classes=STUFF, test_cfg=cfg)
    return MaskFormerFusionHead(**kw), M2FFusionHead(masks_per_step=3, **kw)


@pytest.mark.parametrize('rescale', [True, False])
def test_same_results_as_mmdet_from_low_resolution_masks(rescale):
    cls, masks = _inputs()
    samples = _samples(2)
    theirs, ours = _heads()
    pad = samples[0].metainfo['batch_input_shape']
    full = F.interpolate(masks, size=pad, mode='bilinear', align_corners=False)
    ref = theirs.predict(cls, full, samples, rescale=rescale)
    got = ours.predict(cls, masks, samples, rescale=rescale)
    for r, o in zip(ref, got):
        pan_r, pan_o = r['pan_results'].sem_seg, o['pan_results'].sem_seg
        assert pan_r.shape == pan_o.shape
        assert (pan_r != pan_o).float().mean() < 1e-3  # float ties only
        assert len(pan_r.unique()) > 2  # several segments: a real check
        ins_r, ins_o = r['ins_results'], o['ins_results']
        assert len(ins_r) == len(ins_o) > 0
        assert torch.equal(ins_r.labels, ins_o.labels)
        torch.testing.assert_close(ins_o.scores, ins_r.scores, rtol=1e-5,
                                   atol=1e-6)
        assert (ins_r.masks != ins_o.masks).float().mean() < 1e-4
        torch.testing.assert_close(ins_o.bboxes, ins_r.bboxes)


def test_full_size_masks_accepted_too():
    """Masks already at the padded input: mmdet's panoptic maps and
    instances, every image."""
    cls, masks = _inputs(seed=1)
    samples = _samples(2)
    theirs, ours = _heads()
    full = F.interpolate(masks, size=(80, 96), mode='bilinear',
                         align_corners=False)
    ref = theirs.predict(cls, full, samples, rescale=True)
    got = ours.predict(cls, full, samples, rescale=True)
    assert len(got) == len(ref) == 2
    for r, o in zip(ref, got):
        assert len(r['pan_results'].sem_seg.unique()) > 2
        assert torch.equal(r['pan_results'].sem_seg, o['pan_results'].sem_seg)
        ins_r, ins_o = r['ins_results'], o['ins_results']
        assert len(ins_o) == len(ins_r) > 0
        assert torch.equal(ins_o.labels, ins_r.labels)
        assert torch.equal(ins_o.masks, ins_r.masks)
        assert torch.equal(ins_o.bboxes, ins_r.bboxes)
        torch.testing.assert_close(ins_o.scores, ins_r.scores, rtol=1e-5,
                                   atol=1e-7)


def test_nothing_kept_gives_void_and_no_instances():
    """Every query says "no object": each panoptic map is all void (K);
    instance results are still the top ``max_per_image`` (query, class)
    pairs, as mmdet's, of which the thing-class pairs remain; with all
    mask logits negative, their masks are empty and their scores 0."""
    cls, masks = _inputs()
    g = torch.Generator().manual_seed(7)
    # distinct class logits far below "no object": a tie-free top-k
    cls[..., :-1] = -20.0 + torch.rand(cls[..., :-1].shape, generator=g)
    masks = masks.clamp(max=-1.0)  # empty masks at every pixel
    samples = _samples(2)
    theirs, ours = _heads(max_per_image=10)
    ref = theirs.predict(cls, F.interpolate(
        masks, size=(80, 96), mode='bilinear', align_corners=False),
        samples, rescale=True)
    got = ours.predict(cls, masks, samples, rescale=True)
    for b in range(2):
        assert (got[b]['pan_results'].sem_seg == K).all()
        assert got[b]['pan_results'].sem_seg.shape == (1, 150, 181)
        top = cls[b].softmax(-1)[:, :-1].flatten().topk(10).indices
        thing = (top % K) < THINGS
        want_labels = sorted((top[thing] % K).tolist())
        ins = got[b]['ins_results']
        assert 0 < len(ins) == int(thing.sum()) < 10
        assert sorted(ins.labels.tolist()) == want_labels
        assert len(ref[b]['ins_results']) == len(ins)
        assert sorted(ref[b]['ins_results'].labels.tolist()) == want_labels
        assert not ins.masks.any()
        assert (ins.scores == 0).all()  # mask score of an empty mask
        assert (ins.bboxes == 0).all()


# per query: (class, margin added to its logit); None: "no object"
_SEGMENTS = [
    (0, 14.0),           # thing, first class
    (THINGS - 1, 14.0),  # thing, last class
    (THINGS, 14.0),      # stuff, first class
    (K - 1, 14.0),       # stuff, last class
    (THINGS, 14.0),      # the first stuff class again: one merged segment
    (0, 14.0),           # a second instance of class 0
    (None, 14.0),        # "no object"
    (2, 1.5),            # a thing of low score: dropped at 0.8
    (THINGS + 1, 5.0),   # stuff whose mask spreads over cells 9 and 10
    (3, 14.0),
    (1, 14.0),
    (None, 14.0),
]


def _segment_inputs(batch=2, low=(18, 24)):
    """Class logits and mask logits whose panoptic result holds things
    (first and last thing class, two instances of one class), the first
    and the last stuff class, a merged stuff class, void, a query of low
    score and one that owns too little of its mask: the cases the
    thresholds and the thing/stuff split decide. Query q owns cell
    ``(q + b) % 12`` of a 3 x 4 grid in image b."""
    g = torch.Generator().manual_seed(3)
    queries = len(_SEGMENTS)
    cls = torch.randn(batch, queries, K + 1, generator=g) * 0.3
    h, w = low
    cell = ((torch.arange(h)[:, None] * 3 // h) * 4
            + torch.arange(w)[None, :] * 4 // w)
    masks = torch.empty(batch, queries, h, w)
    for b in range(batch):
        for q, (label, margin) in enumerate(_SEGMENTS):
            cls[b, q, K if label is None else label] += margin
            own = cell == (q + b) % queries
            if q == 8:  # spreads over the cells of queries 9 and 10 too
                own |= (cell == (9 + b) % queries) | (cell == (10 + b)
                                                      % queries)
            masks[b, q] = torch.where(own, 8.0, -8.0)
    masks += torch.randn(masks.shape, generator=g) * 0.5
    return cls, masks


@pytest.mark.parametrize('thresholds', [
    dict(),  # mmdet's defaults: object_mask_thr = iou_thr = 0.8
    dict(object_mask_thr=0.0, iou_thr=0.0),
], ids=['default-thresholds', 'zero-thresholds'])
@pytest.mark.parametrize('full_size', [False, True])
def test_panoptic_things_and_stuff_as_mmdet(thresholds, full_size):
    """The panoptic map of mmdet's ``MaskFormerFusionHead`` at its own
    defaults and with every filter off: stuff (first and last stuff class
    included) keeps its class id, each thing (last thing class included)
    gets its own instance id."""
    from mmdet.evaluation.functional import INSTANCE_OFFSET
    cls, masks = _segment_inputs()
    samples = _samples(2)
    cfg = dict(panoptic_on=True, instance_on=False, **thresholds)
    kw = dict(num_things_classes=THINGS, num_stuff_classes=STUFF,
              test_cfg=cfg)
    theirs, ours = MaskFormerFusionHead(**kw), M2FFusionHead(
        masks_per_step=3, **kw)
    full = F.interpolate(masks, size=(80, 96), mode='bilinear',
                         align_corners=False)
    ref = theirs.predict(cls, full, samples, rescale=True)
    got = ours.predict(cls, full if full_size else masks, samples,
                       rescale=True)
    for r, o in zip(ref, got):
        pan_r, pan_o = r['pan_results'].sem_seg, o['pan_results'].sem_seg
        assert torch.equal(pan_o, pan_r), (pan_o.unique(), pan_r.unique())
        ids = set(pan_r.unique().tolist())
        things = {i for i in ids if i >= INSTANCE_OFFSET}
        # the premise: both ends of both class ranges, one id per thing
        assert {THINGS, K - 1} <= ids
        assert {0, THINGS - 1} <= {i % INSTANCE_OFFSET for i in things}
        assert sorted(i // INSTANCE_OFFSET for i in things) == list(
            range(1, len(things) + 1))
        if thresholds:  # everything but "no object" stands
            assert len(things) == 6 and THINGS + 1 in ids
        else:  # low score and mostly covered: filtered, the latter void
            assert len(things) == 5 and THINGS + 1 not in ids and K in ids


def test_semantic_map_on_the_sample():
    cls, masks = _inputs()
    samples = _samples(2)
    _, ours = _heads(semantic_on=True, panoptic_on=False, instance_on=False)
    ours.predict(cls, masks, samples, rescale=True)
    sem = samples[0].pred_sem_seg.sem_seg  # mmdet's key, as gt_sem_seg
    assert sem.shape == (1, 150, 181) and sem.dtype == torch.long
    # the argmax of sum_q p(k|q) sigmoid(mask_q), at the valid region
    probs = cls[0].softmax(-1)[:, :-1]
    full = F.interpolate(masks[:1], size=(80, 96), mode='bilinear',
                         align_corners=False)[:, :, :76, :90]
    full = F.interpolate(full, size=(150, 181), mode='bilinear',
                         align_corners=False)[0].sigmoid()
    ref = torch.einsum('qk,qhw->khw', probs, full).argmax(0)
    assert (ref == sem[0]).float().mean() > 0.97  # one resize vs two


def test_max_per_image_larger_than_pairs_is_a_clear_error():
    cls, masks = _inputs(queries=3)
    _, ours = _heads(max_per_image=100)
    with pytest.raises(ValueError, match=r'max_per_image=100 .* 3 x 8 = 24'):
        ours.predict(cls, masks, _samples(2), rescale=False)


@pytest.mark.slow
def test_peak_memory_at_1333x800_at_most_half_of_mmdets():
    """Side by side, one process each: mmdet's path (upsample all queries to
    the padded input, then its fusion head) against ours (low-res masks)."""
    code = textwrap.dedent('''
        import resource, sys, torch, torch.nn.functional as F
        from mmdet.models.seg_heads.panoptic_fusion_heads import MaskFormerFusionHead
        from mmdet.structures import DetDataSample
        from m2f_plugin.models.heads.fusion_head import M2FFusionHead
        torch.manual_seed(0)
        q, k = 100, 133
        cls = torch.randn(1, q, k + 1); cls[0, :40, :80] += 3.0
        low = torch.randn(1, q, 200, 336)
        s = DetDataSample(); s.set_metainfo(dict(batch_input_shape=(800, 1344),
            img_shape=(800, 1333), ori_shape=(800, 1333)))
        cfg = dict(panoptic_on=True, instance_on=True, max_per_image=100,
                   object_mask_thr=0.8, iou_thr=0.8)
        kw = dict(num_things_classes=80, num_stuff_classes=53, test_cfg=cfg)
        def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        before = rss()
        with torch.no_grad():
            if sys.argv[1] == 'mmdet':
                full = F.interpolate(low, size=(800, 1344), mode='bilinear')
                MaskFormerFusionHead(**kw).predict(cls, full, [s], rescale=True)
            else:
                M2FFusionHead(**kw).predict(cls, low, [s], rescale=True)
        print('PEAK_KB', rss() - before)
    ''')
    peaks = {}
    for side in ('mmdet', 'ours'):
        out = subprocess.run([sys.executable, '-c', code, side], cwd=REPO,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[side] = int(out.stdout.split('PEAK_KB')[-1])
    print('peak growth KiB', peaks)
    assert peaks['ours'] <= 0.5 * peaks['mmdet'], peaks


def test_registered_for_mmdet_configs():
    from mmdet.registry import MODELS
    assert MODELS.get('M2FFusionHead') is M2FFusionHead


@pytest.mark.parametrize('test_cfg', [dict(), dict(object_mask_thr=0.5,
                                                   iou_thr=0.5)],
                         ids=['empty', 'thresholds-only'])
def test_defaults_of_unset_switches_are_mmdets(test_cfg):
    """A ``test_cfg`` without ``panoptic_on`` / ``instance_on`` /
    ``semantic_on`` gives what mmdet's ``MaskFormerFusionHead`` gives: the
    panoptic map only (panoptic on, instances and semantic map off)."""
    cls, masks = _segment_inputs()
    samples = _samples(2)
    kw = dict(num_things_classes=THINGS, num_stuff_classes=STUFF,
              test_cfg=test_cfg)
    theirs, ours = MaskFormerFusionHead(**kw), M2FFusionHead(**kw)
    full = F.interpolate(masks, size=(80, 96), mode='bilinear',
                         align_corners=False)
    ref = theirs.predict(cls, full, samples, rescale=True)
    got = ours.predict(cls, masks, samples, rescale=True)
    assert [set(r) for r in ref] == [{'pan_results'}] * 2
    assert [set(o) for o in got] == [{'pan_results'}] * 2
    for r, o in zip(ref, got):
        assert len(r['pan_results'].sem_seg.unique()) > 2  # several segments
        assert torch.equal(o['pan_results'].sem_seg, r['pan_results'].sem_seg)
    assert all('pred_sem_seg' not in s for s in samples)


def test_max_per_image_equal_to_queries_times_classes_is_valid():
    """``max_per_image = queries x classes`` (every pair) is the largest
    valid value: it predicts, as mmdet's head, every thing-class pair."""
    queries = 3
    cls, masks = _inputs(queries=queries)
    samples = _samples(2)
    theirs, ours = _heads(max_per_image=queries * K)
    full = F.interpolate(masks, size=(80, 96), mode='bilinear',
                         align_corners=False)
    ref = theirs.predict(cls, full, samples, rescale=True)
    got = ours.predict(cls, masks, samples, rescale=True)
    for r, o in zip(ref, got):
        ins_r, ins_o = r['ins_results'], o['ins_results']
        assert len(ins_o) == len(ins_r) == queries * THINGS
        assert sorted(ins_o.labels.tolist()) == sorted(ins_r.labels.tolist())
        torch.testing.assert_close(ins_o.scores.sort().values,
                                   ins_r.scores.sort().values, rtol=1e-5,
                                   atol=1e-6)
