# Panoptic main job: the semantic demo's small Mask2Former (ResNet-18 from
# scratch, 128 channels, 20 queries, 2 encoder + 3 decoder layers) as mmdet's
# Mask2Former detector, on the embedded shapes in COCO panoptic form (five
# thing classes, one stuff class). Scored with mmdet's CocoPanopticMetric (PQ),
# CocoMetric (mask AP of the thing segments) and mmseg's IoUMetric (mIoU of
# the semantic map of the same model). Nothing is downloaded.
_base_ = ['mmdet::_base_/default_runtime.py', '../_base_/m2f_runtime.py']
custom_imports = dict(imports=['m2f_plugin'], allow_failed_imports=False)

num_things_classes = 5
num_stuff_classes = 1
crop_size = (128, 128)
data_root = 'data/synthetic_shapes/'
data_preprocessor = dict(
    type='DetDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_size_divisor=32,
    pad_mask=True,
    mask_pad_value=0,
    pad_seg=True,
    seg_pad_value=255)
model = dict(
    type='Mask2Former',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNet',
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    panoptic_head=dict(
        type='M2FDetHead',
        in_channels=[64, 128, 256, 512],
        strides=[4, 8, 16, 32],
        feat_channels=128,
        out_channels=128,
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        num_queries=20,
        pixel_decoder=dict(
            type='M2FPixelDecoder', num_levels=3, num_layers=2, num_heads=8,
            num_points=4, ffn_dims=512, dropout=0.0, num_groups=32),
        transformer_decoder=dict(
            type='M2FMaskedTransformerDecoder', num_layers=3, num_heads=8,
            ffn_dims=512, dropout=0.0),
        loss_cls=dict(
            type='M2FClassLoss', no_object_weight=0.1, loss_weight=2.0),
        loss_mask=dict(type='M2FPointBCELoss', loss_weight=5.0),
        loss_dice=dict(type='M2FPointDiceLoss', eps=1.0, loss_weight=5.0),
        matcher=dict(
            type='M2FHungarianMatcher', cost_class=2.0, cost_mask=5.0,
            cost_dice=5.0, num_points=2048),
        num_points=2048,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        # stride-4 masks: the fusion head upsamples only what it keeps
        masks_at_input_size=False),
    panoptic_fusion_head=dict(
        type='M2FFusionHead',
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        loss_panoptic=None,
        init_cfg=None),
    train_cfg=dict(),
    test_cfg=dict(
        panoptic_on=True,
        semantic_on=True,
        instance_on=True,
        max_per_image=50,
        iou_thr=0.8,
        object_mask_thr=0.8,
        filter_low_score=True),
    init_cfg=None)

train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True,
         with_seg=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, crop_type='absolute',
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True,
         with_seg=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type='M2FSyntheticShapesPanopticDataset', data_root=data_root,
        split='train', filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='M2FSyntheticShapesPanopticDataset', data_root=data_root,
        split='val', test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='CocoPanopticMetric',
         ann_file=data_root + 'annotations/panoptic_val.json',
         seg_prefix=data_root + 'annotations/panoptic_val/'),
    dict(type='CocoMetric',
         ann_file=data_root + 'annotations/instances_val.json',
         metric=['segm']),
    dict(type='M2FSemSegMetric', iou_metrics=['mIoU'])
]
test_evaluator = val_evaluator

# the semantic demo's optimizer and schedule
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='M2FOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=3e-4, weight_decay=0.05, betas=(0.9, 0.999),
                   fused=True),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={
            'query_embed': dict(decay_mult=0.0),
            'query_feat': dict(decay_mult=0.0),
            'level_embed': dict(decay_mult=0.0),
        },
        norm_decay_mult=0.0))
max_iters = 600
param_scheduler = [
    dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=200)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=200,
        save_best='coco_panoptic/PQ', rule='greater', max_keep_ckpts=2))
log_processor = dict(window_size=20, by_epoch=False)
randomness = dict(seed=0)
# exact resume: carry the random state (point sampling, augmentation) in
# checkpoints; the base's guards are kept (a list set here would replace them)
custom_hooks = [dict(type='M2FRandomStateHook')] + _base_.custom_hooks
# one kind of result per image (panoptic, else instances), see-through
# masks, labels inside the image (DetInferencer too)
visualizer = dict(type='M2FDetLocalVisualizer')
