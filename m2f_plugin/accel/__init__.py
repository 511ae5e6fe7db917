"""Acceleration, kept apart from the model: a reader of ``models/`` can
ignore this package. Every piece computes what the plain model computes.

* ``msda_ops``: deformable-attention kernels (mmcv's CUDA op, our Triton
  kernels) as ``torch.library`` custom ops, so ``torch.compile`` keeps them.
* ``splitk``: long, thin products with the reduction split across the GPU
  (matcher costs, the mask embeddings' gradient).
* ``cuda_graphs``, ``graphed_head``, ``graphed_segmentor``: hand-written
  CUDA-graph replay of inference and training (``M2FGraphedHead``,
  ``M2FEncoderDecoder``).
* ``export``: the one switch for tracing and ONNX export.


The registered modules (``M2FGraphedHead``, ``M2FEncoderDecoder``) are
imported by the package's ``__init__``; importing this package alone loads
nothing, so the model's files can use ``splitk`` and ``msda_ops``.
"""
