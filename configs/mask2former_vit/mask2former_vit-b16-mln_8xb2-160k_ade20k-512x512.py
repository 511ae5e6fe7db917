# Mask2Former with a plain ViT-B/16 backbone + mmseg's MultiLevelNeck,
# ADE20K 512x512, 160k iterations.
#
# Data, schedule and runtime are those of the R-50 ADE20K config. The backbone
# is mmseg's ``VisionTransformer`` with the settings of mmseg's segmenter
# ViT-B config and its ImageNet-21k(+1k) 384 checkpoint, the only ViT-B/16
# checkpoint mmseg ships as a URL (mmseg's vit/ UperNet configs point at local
# files converted from timm). That checkpoint was trained on inputs scaled to
# [-1, 1], so the data preprocessor uses mean = std = 127.5 as segmenter does.
#
# Pyramid: out_indices (2, 5, 8, 11) are four stride-16 maps; MultiLevelNeck
# resizes them by scales [4, 2, 1, 0.5] (as mmseg's vit-b16_mln configs),
# giving strides 4/8/16/32 with 768 channels each.
#
# Optimizer: mmseg's LearningRateDecayOptimizerConstructor raises
# NotImplementedError for ``VisionTransformer`` (it supports only ConvNeXt,
# BEiT and MAE), so there is no layer-wise decay: Mask2Former's AdamW
# (lr 1e-4, wd 0.05, clip 0.01) with the backbone at lr x0.1, and, as in
# mmseg's vit configs, no weight decay on pos_embed, cls_token and norms
# (plus the queries and level embeddings, as Mask2Former). The neck trains at
# the full learning rate.
_base_ = ['../mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['m2f_plugin'], allow_failed_imports=False)

checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_base_p16_384_20220308-96dfe169.pth'  # noqa
num_layers = 12
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='VisionTransformer',
        img_size=(512, 512),
        patch_size=16,
        in_channels=3,
        embed_dims=768,
        num_layers=num_layers,
        num_heads=12,
        mlp_ratio=4,
        out_indices=(2, 5, 8, 11),
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        with_cls_token=True,
        final_norm=True,
        norm_cfg=dict(type='LN', eps=1e-6, requires_grad=True),
        act_cfg=dict(type='GELU'),
        norm_eval=False,
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(
        type='MultiLevelNeck',
        in_channels=[768, 768, 768, 768],
        out_channels=768,
        scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768],
                     strides=[4, 8, 16, 32]))

backbone_norm_multi = dict(lr_mult=0.1, decay_mult=0.0)
backbone_embed_multi = dict(lr_mult=0.1, decay_mult=0.0)
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
custom_keys = {
    'backbone': dict(lr_mult=0.1, decay_mult=1.0),
    'backbone.pos_embed': backbone_embed_multi,
    'backbone.cls_token': backbone_embed_multi,
    'backbone.ln1': backbone_norm_multi,  # final norm
    'query_embed': embed_multi,
    'query_feat': embed_multi,
    'level_embed': embed_multi
}
custom_keys.update({  # ln1 and ln2 of every block
    f'backbone.layers.{i}.ln': backbone_norm_multi
    for i in range(num_layers)
})
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=custom_keys, norm_decay_mult=0.0))
