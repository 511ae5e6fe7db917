"""mmdet-side test helpers: mmdet's built-in Mask2Former configs, our head
with the same hyper-parameters, and small DetDataSamples with ground truth."""
from __future__ import annotations

import os.path as osp

import mmdet
import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.config import Config
from mmengine.structures import InstanceData, PixelData

__all__ = ['PANOPTIC', 'INSTANCE', 'NUM_QUERIES', 'H', 'W', 'mmdet_config',
           'our_head', 'box', 'det_sample', 'panoptic_samples',
           'instance_samples', 'empty_samples']

PANOPTIC = 'mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py'
INSTANCE = 'mask2former/mask2former_r50_8xb2-lsj-50e_coco.py'
NUM_QUERIES = 20  # the configs' 100 would only slow the CPU down
H, W = 128, 160  # the padded batch input


def mmdet_config(rel: str) -> Config:
    return Config.fromfile(osp.join(osp.dirname(mmdet.__file__), '.mim',
                                    'configs', rel))


def our_head(head: dict) -> dict:
    """``M2FDetHead`` with the hyper-parameters of mmdet's head config."""
    decoder_layer = head.transformer_decoder.layer_cfg
    encoder_layer = head.pixel_decoder.encoder.layer_cfg
    return dict(
        type='M2FDetHead', in_channels=head.in_channels, strides=head.strides,
        feat_channels=head.feat_channels, out_channels=head.out_channels,
        num_things_classes=head.num_things_classes,
        num_stuff_classes=head.num_stuff_classes,
        num_queries=head.num_queries,
        pixel_decoder=dict(
            type='M2FPixelDecoder',
            num_levels=head.num_transformer_feat_level,
            num_layers=head.pixel_decoder.encoder.num_layers,
            num_heads=encoder_layer.self_attn_cfg.num_heads,
            num_points=encoder_layer.self_attn_cfg.num_points,
            ffn_dims=encoder_layer.ffn_cfg.feedforward_channels,
            num_groups=head.pixel_decoder.norm_cfg.num_groups),
        transformer_decoder=dict(
            type='M2FMaskedTransformerDecoder',
            num_layers=head.transformer_decoder.num_layers,
            num_heads=decoder_layer.cross_attn_cfg.num_heads,
            ffn_dims=decoder_layer.ffn_cfg.feedforward_channels),
        loss_cls=dict(type='M2FClassLoss',
                      class_weight=head.loss_cls.class_weight,
                      loss_weight=head.loss_cls.loss_weight),
        loss_mask=dict(type='M2FPointBCELoss',
                       loss_weight=head.loss_mask.loss_weight),
        loss_dice=dict(type='M2FPointDiceLoss', eps=head.loss_dice.eps,
                       loss_weight=head.loss_dice.loss_weight))
    # matcher and point counts: from the detector's train_cfg, as mmdet's


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def det_sample(labels, masks, sem_seg=None) -> DetDataSample:
    shape = (H, W)
    s = DetDataSample(metainfo=dict(
        img_shape=shape, pad_shape=shape, batch_input_shape=shape,
        ori_shape=shape, scale_factor=(1.0, 1.0)))
    s.gt_instances = InstanceData(labels=torch.tensor(labels).long(),
                                  masks=BitmapMasks(masks, H, W))
    if sem_seg is not None:
        s.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(sem_seg[None]))
    return s


def panoptic_samples():
    """Image 0: three things (classes 3, 17, 3), two stuff classes, a crowd
    region (thing class in the map, no mask); image 1: only stuff."""
    things = [box(50, 90, 60, 100), box(45, 80, 110, 150),
              box(90, 125, 20, 45)]
    sem0 = np.full((H, W), 255, np.int64)
    sem0[:40] = 90
    sem0[40:, :50] = 120
    sem0[100:, 100:] = 5  # crowd
    for m in things:
        sem0[m.astype(bool)] = 3  # thing pixels carry thing classes
    sem1 = np.full((H, W), 255, np.int64)
    sem1[:, :70] = 81
    sem1[:, 70:] = 132
    return [det_sample([3, 17, 3], things, sem0), det_sample([], [], sem1)]


def instance_samples():
    """Image 0: three instances, two of them overlapping; image 1: none."""
    masks = [box(20, 90, 30, 110), box(60, 120, 80, 150),
             box(5, 30, 120, 155)]
    return [det_sample([0, 56, 56], masks), det_sample([], [])]


def empty_samples():
    return [det_sample([], []), det_sample([], [])]
