"""load_from a checkpoint with another class count: class head re-initialised."""
from __future__ import annotations

import copy
import logging

import torch
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import load_checkpoint

from tests.helpers import build_tiny_segmentor, make_label_maps, seg_data_samples


def test_load_other_class_count_logs_and_trains(tmp_path, caplog):
    source = build_tiny_segmentor(num_classes=133, seed=1)  # e.g. COCO panoptic
    ckpt = tmp_path / 'coco.pth'
    torch.save({'state_dict': source.state_dict()}, str(ckpt))

    target = build_tiny_segmentor(num_classes=6, seed=2)
    fresh_cls = target.decode_head.transformer_decoder.predictor.cls_embed
    fresh_w = fresh_cls.weight.detach().clone()
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        load_checkpoint(target, str(ckpt), map_location='cpu', strict=True)
    finally:
        logger.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    hits = [m for m in messages if 'class head re-initialised' in m]
    assert len(hits) == 1 and '133 classes' in hits[0] and 'config 6' in hits[0]
    # everything else came from the checkpoint, the class head stayed fresh
    src = source.state_dict()
    for key, value in target.state_dict().items():
        if 'cls_embed' in key:
            continue
        assert torch.equal(value, src[key]), key
    assert torch.equal(fresh_cls.weight, fresh_w)
    # and it trains
    target.train()
    imgs = torch.randn(2, 3, 64, 64)
    losses = target.loss(imgs, seg_data_samples(make_label_maps(2, 64, 64, 6)))
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert fresh_cls.weight.grad is not None


def test_num_classes_mismatch_with_dataset_is_a_clear_error(tmp_path):
    import pytest
    from mmseg.registry import DATASETS

    from m2f_plugin.engine import check_num_classes
    ds = DATASETS.build(dict(
        type='M2FSyntheticShapesDataset', data_root=str(tmp_path / 'd'),
        num_train=2, num_val=1, size=32,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val')))
    check_num_classes(build_tiny_segmentor(num_classes=6), ds)  # matches
    with pytest.raises(ValueError, match=r'num_classes=150, but the data set '
                       r'of train_dataloader has 6 classes \(background, disc'
                       r'.*Set model.decode_head.num_classes=6'):
        check_num_classes(build_tiny_segmentor(num_classes=150), ds)


def test_detector_loads_other_class_count_and_reinitialises(tmp_path):
    """M2FDetHead as M2FHead: a checkpoint of another class count (a
    133-class COCO panoptic head) loads strictly into a 5 + 1 class detector;
    only the class head stays fresh."""
    import os.path as osp

    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from tests.helpers import CONFIGS
    cfg = Config.fromfile(osp.join(
        CONFIGS, 'demo',
        'mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        big = copy.deepcopy(cfg.model)
        for head in (big.panoptic_head, big.panoptic_fusion_head):
            head.num_things_classes, head.num_stuff_classes = 80, 53
        torch.manual_seed(1)
        source = MODELS.build(big)
        torch.manual_seed(2)
        target = MODELS.build(cfg.model)
    ckpt = tmp_path / 'coco_panoptic.pth'
    torch.save({'state_dict': source.state_dict()}, str(ckpt))
    cls = target.panoptic_head.transformer_decoder.predictor.cls_embed
    fresh = cls.weight.detach().clone()
    load_checkpoint(target, str(ckpt), map_location='cpu', strict=True)
    assert cls.weight.shape[0] == 7 and torch.equal(cls.weight, fresh)
    src = source.state_dict()
    for key, value in target.state_dict().items():
        if 'cls_embed' not in key:
            assert torch.equal(value, src[key]), key
