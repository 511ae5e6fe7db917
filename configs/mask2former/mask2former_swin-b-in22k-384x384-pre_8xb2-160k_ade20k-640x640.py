# Mask2Former Swin-B (IN-22k 384 pretrain), ADE20K 640x640, 160k iterations
# (mirrors mmseg 1.2.2's
# mask2former_swin-b-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py).
_base_ = ['./mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py']
custom_imports = dict(imports=['m2f_plugin'], allow_failed_imports=False)

pretrained = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth'  # noqa
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
