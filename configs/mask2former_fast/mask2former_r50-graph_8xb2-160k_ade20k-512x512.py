# Mask2Former R50 on ADE20K whose training step (backbone, pixel decoder and
# transformer decoder) and inference decoders replay as CUDA graphs, captured
# once per input shape (m2f_plugin.accel; eager on CPU).
#
# Training: M2FEncoderDecoder hands the images and the backbone to the head,
# which captures backbone -> pixel decoder -> transformer decoder as one
# forward and one backward graph; the matcher and the losses stay eager. The
# crop is fixed (512x512, padded by the data preprocessor), so one graph
# serves every step. Inside a graph recomputation costs no host time, so the
# backbone's two high-resolution stages and both decoders checkpoint their
# activations (with_cp).
#
# Inference: a graph pays only when shapes repeat, and ADE20K's whole-image
# test images come in dozens of sizes, so this config tests with 512x512
# sliding windows (results differ slightly from whole-image inference).
_base_ = ['../mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py']
model = dict(
    type='M2FEncoderDecoder',
    backbone=dict(type='M2FResNet', cp_stages=(0, 1)),
    decode_head=dict(
        type='M2FGraphedHead',
        cuda_graph=True, max_graphs=4, cuda_graph_train=True,
        pixel_decoder=dict(with_cp=True),
        transformer_decoder=dict(with_cp=True)),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
