"""Opt-in acceleration, kept apart from the model: a reader of ``models/``
can ignore this package, and the model never imports it (the package's
``__init__`` registers these modules when the package is present; see
``tests/test_layering.py``). Every piece computes what the plain model
computes.

* ``cuda_graphs``, ``graphed_head``, ``graphed_segmentor``: hand-written
  CUDA-graph replay of inference and training (``M2FGraphedHead``,
  ``M2FEncoderDecoder``).
* ``compile_hook``: ``torch.compile`` for validation and testing
  (``M2FCompileHook``).

The numeric primitives that the model always runs (split-K products, the
deformable-attention kernels) live in ``m2f_plugin.ops``. Importing this
package alone loads nothing.
"""
