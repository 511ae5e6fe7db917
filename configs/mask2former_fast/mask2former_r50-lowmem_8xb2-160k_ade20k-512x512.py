# Mask2Former R50 on ADE20K with activation checkpointing everywhere: the same
# model and schedule as ../mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py
# (the head's gradients are unchanged, tested; mmseg's backbone with_cp re-runs
# its BatchNorm forward in backward, which updates the running statistics a
# second time per step),
# about 0.36x the built-in's training memory at batch 8 (0.50x at batch 2) for
# ~35-50% more time per step than the default config (H100, docs/perf.md).
_base_ = ['../mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py']
model = dict(
    backbone=dict(with_cp=True),
    decode_head=dict(
        pixel_decoder=dict(with_cp=True),
        transformer_decoder=dict(with_cp=True)))
