# Mask2Former with a MiT-B0 (SegFormer) backbone, ADE20K 512x512, 160k
# iterations.
#
# Data, schedule and runtime are those of the R-50 ADE20K config. The backbone
# is mmseg's ``MixVisionTransformer`` with the settings (and the ImageNet-1k
# pretrained checkpoint) of mmseg's segformer_mit-b0 configs. Its four stages
# have strides 4/8/16/32 and channels [32, 64, 160, 256], which go straight
# into M2FHead.
#
# Optimizer: Mask2Former's AdamW (lr 1e-4, weight decay 0.05, grad-norm clip
# 0.01) rather than SegFormer's (lr 6e-5, wd 0.01, head lr x10). The backbone
# trains at lr x0.1; no weight decay on any norm layer (backbone and head) nor
# on the queries and level embeddings (MiT has no position embedding).
_base_ = ['../mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['m2f_plugin'], allow_failed_imports=False)

checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b0_20220624-7e0fe6dd.pth'  # noqa
num_layers = [2, 2, 2, 2]
model = dict(
    backbone=dict(
        _delete_=True,
        type='MixVisionTransformer',
        in_channels=3,
        embed_dims=32,
        num_stages=4,
        num_layers=num_layers,
        num_heads=[1, 2, 5, 8],
        patch_sizes=[7, 3, 3, 3],
        sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[32, 64, 160, 256], strides=[4, 8, 16, 32]))

# MiT parameter names: backbone.layers.<stage>.0 = patch embedding (+ .norm),
# backbone.layers.<stage>.1.<block> = blocks (norm1, norm2, attn.norm),
# backbone.layers.<stage>.2 = the stage's output LayerNorm.
backbone_norm_multi = dict(lr_mult=0.1, decay_mult=0.0)
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
custom_keys = {
    'backbone': dict(lr_mult=0.1, decay_mult=1.0),
    'query_embed': embed_multi,
    'query_feat': embed_multi,
    'level_embed': embed_multi
}
custom_keys.update({
    f'backbone.layers.{stage}.0.norm': backbone_norm_multi
    for stage in range(len(num_layers))
})
custom_keys.update({
    f'backbone.layers.{stage}.2.': backbone_norm_multi
    for stage in range(len(num_layers))
})
custom_keys.update({
    f'backbone.layers.{stage}.1.{block}.{norm}': backbone_norm_multi
    for stage, blocks in enumerate(num_layers) for block in range(blocks)
    for norm in ('norm', 'attn.norm')
})
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=custom_keys, norm_decay_mult=0.0))
