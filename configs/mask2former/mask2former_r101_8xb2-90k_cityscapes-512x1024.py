# Mask2Former R-101, Cityscapes 512x1024, 90k iterations (mirrors mmseg
# 1.2.2's mask2former_r101_8xb2-90k_cityscapes-512x1024.py).
_base_ = ['./mask2former_r50_8xb2-90k_cityscapes-512x1024.py']
custom_imports = dict(imports=['m2f_plugin'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
