# Instance main job: the panoptic demo's model on the embedded shapes in COCO
# instance form (five thing classes, masks may overlap where shapes occlude),
# scored with mmdet's CocoMetric (mask AP). Nothing is downloaded.
_base_ = ['./mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py']

num_things_classes = 5
num_stuff_classes = 0
data_root = 'data/synthetic_shapes/'
model = dict(
    data_preprocessor=dict(pad_seg=False),
    panoptic_head=dict(num_things_classes=num_things_classes,
                       num_stuff_classes=num_stuff_classes),
    panoptic_fusion_head=dict(num_things_classes=num_things_classes,
                              num_stuff_classes=num_stuff_classes),
    test_cfg=dict(panoptic_on=False, semantic_on=False, instance_on=True))

train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.75, 1.5),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=(128, 128), crop_type='absolute',
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    dataset=dict(_delete_=True, type='M2FSyntheticShapesCocoDataset',
                 data_root=data_root, split='train',
                 filter_cfg=dict(filter_empty_gt=False),
                 pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(_delete_=True, type='M2FSyntheticShapesCocoDataset',
                 data_root=data_root, split='val', test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True, type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json', metric=['segm'])
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(save_best='coco/segm_mAP'))
