# Mask2Former, COCO instance, Swin-T: mmdet's own config of the same name with
# m2f_plugin's head (same hyper-parameters) and memory-bounded fusion head.
_base_ = [
    'mmdet::mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py',
    '../_base_/models/mask2former_det_head.py', '../_base_/m2f_runtime.py'
]
custom_imports = dict(imports=['m2f_plugin'], allow_failed_imports=False)

model = dict(
    panoptic_head=dict(
        _base_.m2f_det_head,
        _delete_=True,
        # Swin-T's stage widths, as in mmdet's config
        in_channels=[96, 192, 384, 768],
        num_things_classes=_base_.num_things_classes,
        num_stuff_classes=_base_.num_stuff_classes),
    panoptic_fusion_head=dict(type='M2FFusionHead'))
# one kind of result per image (panoptic, else instances), see-through
# masks, labels inside the image (DetInferencer too)
visualizer = dict(type='M2FDetLocalVisualizer')
