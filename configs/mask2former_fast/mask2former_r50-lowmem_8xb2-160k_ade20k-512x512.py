# Mask2Former R50 on ADE20K with activation checkpointing where it saves the
# most memory for the least recomputation: the same model and schedule as
# ../mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py (same state-dict
# keys, so checkpoints load either way).
#
# - Backbone: only the two high-resolution stages (M2FResNet cp_stages=(0, 1));
#   the recomputation re-runs their BatchNorm forward in backward, which
#   updates the running statistics a second time per step (as mmseg's
#   with_cp does).
# - Pixel decoder: its encoder layers and the stride-4 FPN level (the largest
#   activations of the head).
# - Transformer decoder: not checkpointed (little memory, much host time).
_base_ = ['../mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py']
model = dict(
    backbone=dict(type='M2FResNet', cp_stages=(0, 1)),
    decode_head=dict(pixel_decoder=dict(with_cp=True)))
