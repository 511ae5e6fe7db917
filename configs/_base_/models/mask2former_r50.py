# Mask2Former, ResNet-50 backbone, m2f_plugin's head. Matches mmseg 1.2.2's
# built-in mask2former_r50 model hyper-parameters.
custom_imports = dict(imports=['m2f_plugin'], allow_failed_imports=False)

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512),
    test_cfg=dict(size_divisor=32))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNet',
        depth=50,
        deep_stem=False,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', requires_grad=False),
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    decode_head=dict(
        type='M2FHead',
        in_channels=[256, 512, 1024, 2048],
        strides=[4, 8, 16, 32],
        feat_channels=256,
        out_channels=256,
        num_classes=150,
        num_queries=100,
        align_corners=False,
        pixel_decoder=dict(
            type='M2FPixelDecoder',
            num_levels=3,
            num_layers=6,
            num_heads=8,
            num_points=4,
            ffn_dims=1024,
            dropout=0.0,
            num_groups=32,
            msda_impl='mmcv'),  # 'mmcv' (CUDA op / CPU grid_sample) | 'pytorch'
        transformer_decoder=dict(
            type='M2FMaskedTransformerDecoder',
            num_layers=9,
            num_heads=8,
            ffn_dims=2048,
            dropout=0.0),
        loss_cls=dict(
            type='M2FClassLoss', no_object_weight=0.1, loss_weight=2.0),
        loss_mask=dict(type='M2FPointBCELoss', loss_weight=5.0),
        loss_dice=dict(type='M2FPointDiceLoss', eps=1.0, loss_weight=5.0),
        matcher=dict(
            type='M2FHungarianMatcher',
            cost_class=2.0,
            cost_mask=5.0,
            cost_dice=5.0,
            num_points=12544),
        num_points=12544,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
