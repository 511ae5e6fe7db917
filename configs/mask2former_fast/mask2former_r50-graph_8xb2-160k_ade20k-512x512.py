# Mask2Former R50 on ADE20K whose pixel decoder and transformer decoder run as
# CUDA graphs, in training and at inference (captured once per input shape,
# eager beyond max_graphs).
#
# Training (cuda_graph_train): the decoders' forward and backward replay as
# two graphs; the backbone, the matcher and the losses stay eager. The crop is
# fixed (512x512, padded by the data preprocessor), so one graph serves every
# step. Inside a graph recomputation costs no host time, so both decoders
# also checkpoint their activations (with_cp), which shrinks the graph's
# memory pool. On an H100 at batch 2 (this config's per-GPU batch) a step
# took 0.084 s against the built-in's 0.195 s in the same run (docs/perf.md).
#
# Inference (cuda_graph): a graph pays only when shapes repeat, and ADE20K's
# whole-image test images (short side 512, keep ratio) come in dozens of
# sizes. So this config tests with 512x512 sliding windows: every window has
# the same shape, one graph serves them all. Slide results differ slightly
# from the base config's whole-image ones.
_base_ = ['../mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py']
model = dict(
    decode_head=dict(
        cuda_graph=True, max_graphs=4, cuda_graph_train=True,
        pixel_decoder=dict(with_cp=True),
        transformer_decoder=dict(with_cp=True)),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
