# The main job's default: a small Mask2Former (ResNet-18 from scratch, 128
# channels, 20 queries, 2 encoder + 3 decoder layers) on the embedded synthetic
# shapes set. Trains on 2 CPU cores in minutes; nothing is downloaded.
_base_ = [
    'mmseg::_base_/default_runtime.py', '../_base_/models/mask2former_r50.py',
    '../_base_/m2f_runtime.py'
]
custom_imports = dict(imports=['m2f_plugin'], allow_failed_imports=False)

crop_size = (128, 128)
num_classes = 6
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        depth=18,
        norm_cfg=dict(type='BN', requires_grad=True),
        init_cfg=None),
    decode_head=dict(
        in_channels=[64, 128, 256, 512],
        feat_channels=128,
        out_channels=128,
        num_classes=num_classes,
        num_queries=20,
        pixel_decoder=dict(num_layers=2, ffn_dims=512),
        transformer_decoder=dict(num_layers=3, ffn_dims=512),
        matcher=dict(num_points=2048),
        num_points=2048))

dataset_type = 'M2FSyntheticShapesDataset'
data_root = 'data/synthetic_shapes'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=crop_size,
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU', 'mDice', 'mFscore'])
test_evaluator = val_evaluator

# fused AdamW and one parameter group per (lr, decay) pair, as in our R50
# configs (same updates, less host time per step)
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
max_iters = 300
param_scheduler = [
    dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=100,
        save_best='mIoU', max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook', draw=True, interval=10))
randomness = dict(seed=0)
# exact resume: carry the random state (point sampling, augmentation) in
# checkpoints; the base's guards are kept (a list set here would replace them)
custom_hooks = [dict(type='M2FRandomStateHook')] + _base_.custom_hooks
# see-through overlays (MMSegInferencer too): mmseg's default alpha is 0.8
visualizer = dict(alpha=0.5)
