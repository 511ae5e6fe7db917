# Mask2Former R-101, ADE20K 512x512, 160k iterations (mirrors mmseg 1.2.2's
# configs/mask2former/mask2former_r101_8xb2-160k_ade20k-512x512.py).
_base_ = ['./mask2former_r50_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['m2f_plugin'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
