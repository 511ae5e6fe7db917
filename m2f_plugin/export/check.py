"""Does the exported file give what the PyTorch model gives?

The reference is the model's own inference through its toolbox (test
pipeline, data preprocessor, ``test_step``, the heads' post-processing), not
the export wrapper, run on the same raw image as onnxruntime.
"""
from __future__ import annotations

import copy
from typing import Dict

import numpy as np
import torch

from .exporter import LoadedModel

__all__ = ['torch_predict', 'compare', 'THRESHOLDS']

# the agreement the --check option and the tests demand
THRESHOLDS = dict(pixel_agreement=0.999, score_atol=1e-4, mask_iou=0.99)

_LOADERS = ('LoadImageFromFile', 'LoadImageFromNDArray')
_ANNOTATIONS = ('LoadAnnotations', 'LoadPanopticAnnotations')


def _test_pipeline(cfg) -> list:
    pipeline = cfg.get('test_pipeline') or \
        cfg.test_dataloader.dataset.pipeline
    return [copy.deepcopy(t) for t in pipeline]


@torch.no_grad()
def torch_predict(loaded: LoadedModel, image: np.ndarray
                  ) -> Dict[str, np.ndarray]:
    """The PyTorch model's own result for a raw image.

    Args:
        loaded: From ``load_model``.
        image: (H, W, 3) uint8 in the order the test pipeline loads.

    Returns:
        The exported graph's outputs for the task: ``labels`` and
        ``scores`` (K, H, W) (semantic); ``panoptic`` (panoptic);
        ``labels``, ``scores``, ``boxes``, ``masks`` (instance).
    """
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import DefaultScope
    steps = _test_pipeline(loaded.cfg)
    to_float32 = any(t['type'].split('.')[-1] in _LOADERS
                     and t.get('to_float32') for t in steps)
    steps = [t for t in steps
             if t['type'].split('.')[-1] not in _LOADERS + _ANNOTATIONS]
    img = image.astype(np.float32) if to_float32 else image
    results = dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2],
                   img_path='', img_id=0)
    # the model's toolbox resolves the transforms; the caller's scope stays
    with DefaultScope.overwrite_default_scope(loaded.family):
        data = pseudo_collate([Compose(steps)(results)])
        sample = loaded.model.test_step(data)[0]
    if loaded.task == 'semantic':
        return dict(labels=sample.pred_sem_seg.data[0].numpy(),
                    scores=sample.seg_logits.data.numpy())
    if loaded.task == 'panoptic':
        return dict(panoptic=sample.pred_panoptic_seg.sem_seg[0].numpy())
    found = sample.pred_instances
    return dict(labels=found.labels.numpy(), scores=found.scores.numpy(),
                boxes=found.bboxes.numpy(), masks=found.masks.numpy())


def _semantic(ours: Dict[str, np.ndarray], ref: Dict[str, np.ndarray],
              noise: float) -> Dict[str, float]:
    differ = ours['labels'] != ref['labels']
    top2 = np.sort(ref['scores'], axis=0)[-2:]
    gap = top2[1] - top2[0]
    result = {}
    if 'scores' in ours:
        # shown: equal labels can hide score errors; the noise is then what
        # the scores differ by (the graph's and cv2's resize differ by a
        # grey level here and there)
        result['max_score_diff'] = float(np.abs(ours['scores'] -
                                                ref['scores']).max())
        noise = max(noise, 2 * result['max_score_diff'])
    result.update(pixel_agreement=float(1 - differ.mean()),
                  flips_beyond_noise=int((differ & (gap > noise)).sum()))
    return result


def _panoptic(ours: Dict[str, np.ndarray], ref: Dict[str, np.ndarray],
              void: int) -> Dict[str, float]:
    ids = set(np.unique(ref['panoptic']).tolist()) - {void}
    listed = set(ours['segments'][:, 0].astype(np.int64).tolist())
    shown = set(np.unique(ours['panoptic']).tolist()) - {void}
    return dict(pixel_agreement=float((ours['panoptic'] ==
                                       ref['panoptic']).mean()),
                same_segments=bool(ids == listed == shown),
                segments=len(ids))


def _instance(ours: Dict[str, np.ndarray], ref: Dict[str, np.ndarray]
              ) -> Dict[str, float]:
    if len(ours['labels']) != len(ref['labels']):
        return dict(same_count=False, same_labels=False,
                    max_score_diff=float('inf'), min_mask_iou=0.0,
                    instances=len(ref['labels']))
    # pair each reference instance with the unused one of its class whose
    # mask overlaps it most (scores can tie to 1e-7 between instances of a
    # class, so the score order alone may swap them)
    a = ours['masks'].reshape(len(ours['masks']), -1).astype(np.float32)
    b = ref['masks'].reshape(len(ref['masks']), -1).astype(np.float32)
    inter = b @ a.T  # (ref, ours)
    union = b.sum(1)[:, None] + a.sum(1)[None] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    free = np.ones(len(ours['labels']), bool)
    score_diff, ious, same = 0.0, [], True
    for i in np.argsort(-ref['scores'], kind='stable'):
        cand = np.flatnonzero(free & (ours['labels'] == ref['labels'][i]))
        if not len(cand):
            same = False
            continue
        closeness = iou[i, cand] - 1e-3 * np.abs(ours['scores'][cand] -
                                                 ref['scores'][i])
        j = cand[np.argmax(closeness)]
        free[j] = False
        score_diff = max(score_diff, abs(float(ours['scores'][j]) -
                                         float(ref['scores'][i])))
        ious.append(float(iou[i, j]))
    return dict(same_count=True, same_labels=same, max_score_diff=score_diff,
                min_mask_iou=float(min(ious, default=1.0)),
                instances=len(ref['labels']))


def compare(task: str, ours: Dict[str, np.ndarray],
            ref: Dict[str, np.ndarray], num_classes: int,
            noise: float = 1e-3) -> Dict[str, object]:
    """Agreement of the exported outputs ``ours`` with ``torch_predict``'s.

    Semantic: share of equal labels and "flips beyond noise" (differing
    pixels where PyTorch's top-2 class scores are more than ``noise``, or
    twice the largest score difference if scores were exported, apart). Panoptic: share of equal pixels and whether the segment sets
    agree (the map's ids, the ``segments`` rows). Instance: equal count and
    labels, the largest score difference, the smallest mask IoU of
    instances paired by class and mask overlap. ``ok`` applies ``THRESHOLDS``.
    """
    if task == 'semantic':
        r = _semantic(ours, ref, noise)
        r['ok'] = (r['pixel_agreement'] >= THRESHOLDS['pixel_agreement']
                   and r['flips_beyond_noise'] == 0)
    elif task == 'panoptic':
        r = _panoptic(ours, ref, num_classes)
        r['ok'] = (r['pixel_agreement'] >= THRESHOLDS['pixel_agreement']
                   and r['same_segments'])
    else:
        r = _instance(ours, ref)
        r['ok'] = (r['same_count'] and r['same_labels']
                   and r['max_score_diff'] <= THRESHOLDS['score_atol']
                   and r['min_mask_iou'] >= THRESHOLDS['mask_iou'])
    return r

