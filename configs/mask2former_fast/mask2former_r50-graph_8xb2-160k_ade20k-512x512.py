# Mask2Former R50 on ADE20K whose training step (backbone, pixel decoder and
# transformer decoder) and inference decoders run as CUDA graphs, captured once
# per input shape (eager beyond max_graphs).
#
# Training: M2FEncoderDecoder hands the images and the backbone to the head
# (cuda_graph_train), which captures backbone -> pixel decoder -> transformer
# decoder as one forward graph and one backward graph sharing one memory
# pool; the matcher (Hungarian assignment on the host) and the losses stay
# eager. BatchNorm running statistics are restored after the capture's
# warm-up, so they update once per step as eagerly. The crop is fixed
# (512x512, padded by the data preprocessor), so one graph serves every step.
# Inside a graph recomputation costs no host time, so the backbone's two
# high-resolution stages (M2FResNet cp_stages) and both decoders checkpoint
# their activations (with_cp): the pool shrinks, the step barely slows down.
# H100, same run as the built-in (docs/perf.md, run 15): batch 2, 0.075 s
# against 0.176 s (2.34x), 0.86x its reserved memory; batch 8, 0.175 s
# against 0.415 s (2.38x), 0.55x its reserved memory.
#
# Inference (cuda_graph): a graph pays only when shapes repeat, and ADE20K's
# whole-image test images (short side 512, keep ratio) come in dozens of
# sizes. So this config tests with 512x512 sliding windows: every window has
# the same shape, one graph serves them all. Slide results differ slightly
# from the base config's whole-image ones.
_base_ = ['../mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py']
model = dict(
    type='M2FEncoderDecoder',
    backbone=dict(type='M2FResNet', cp_stages=(0, 1)),
    decode_head=dict(
        cuda_graph=True, max_graphs=4, cuda_graph_train=True,
        pixel_decoder=dict(with_cp=True),
        transformer_decoder=dict(with_cp=True)),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
