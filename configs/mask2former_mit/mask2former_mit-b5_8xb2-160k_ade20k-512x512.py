# Mask2Former with a MiT-B5 (SegFormer) backbone, ADE20K 512x512, 160k
# iterations. As the MiT-B0 config, with mmseg's segformer_mit-b5 backbone
# settings and checkpoint; channels [64, 128, 320, 512], strides 4/8/16/32.
_base_ = ['./mask2former_mit-b0_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['m2f_plugin'], allow_failed_imports=False)

checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b5_20220624-658746d9.pth'  # noqa
num_layers = [3, 6, 40, 3]
model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
        embed_dims=64,
        num_heads=[1, 2, 5, 8],
        num_layers=num_layers),
    decode_head=dict(in_channels=[64, 128, 320, 512]))

# the per-block keys depend on the depths: rebuild them (see the B0 config)
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
