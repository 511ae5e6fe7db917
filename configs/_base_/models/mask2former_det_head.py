# m2f_plugin's head for mmdet's Mask2Former detector, with the hyper-parameters
# of mmdet's COCO configs (R-50 channels). Not a `model`: it is listed next to
# an mmdet config (bases may not share keys), and the config sets the head
# from it, with what differs (channels, class counts), e.g.
#     model = dict(panoptic_head=dict(_base_.m2f_det_head, _delete_=True,
#                                     num_things_classes=..., ...))
m2f_det_head = dict(
    type='M2FDetHead',
    in_channels=[256, 512, 1024, 2048],
    strides=[4, 8, 16, 32],
    feat_channels=256,
    out_channels=256,
    num_queries=100,
    pixel_decoder=dict(
        type='M2FPixelDecoder',
        num_levels=3,
        num_layers=6,
        num_heads=8,
        num_points=4,
        ffn_dims=1024,
        dropout=0.0,
        num_groups=32),
    transformer_decoder=dict(
        type='M2FMaskedTransformerDecoder',
        num_layers=9,
        num_heads=8,
        ffn_dims=2048,
        dropout=0.0),
    loss_cls=dict(type='M2FClassLoss', no_object_weight=0.1, loss_weight=2.0),
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
    importance_sample_ratio=0.75,
    # stride-4 masks: the fusion head upsamples only what it keeps
    masks_at_input_size=False)
