"""mmseg's ``EncoderDecoder`` whose training step can be one set of CUDA graphs.

``M2FGraphedHead(cuda_graph_train=True)`` under mmseg's ``EncoderDecoder`` graphs the
pixel and transformer decoders; the backbone runs eagerly before them, and
its activations sit in the eager allocator while the decoders' sit in the
graphs' pool. Under this segmentor the head is handed the images and the
backbone (and neck) instead, and captures them in the same graphs: no host
launches for the backbone either, and one pool for all the activations.
"""
from __future__ import annotations

from typing import Dict

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import SampleList, add_prefix
from torch import Tensor

__all__ = ['M2FEncoderDecoder']


@MODELS.register_module()
class M2FEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` that lets the decode head graph the backbone too.

    Everything but :meth:`loss` is mmseg's ``EncoderDecoder``, and so is
    :meth:`loss` itself unless all of these hold: ``graph_backbone``, a decode
    head with ``loss_from_images`` whose ``graphs_training(inputs)`` is true
    (``M2FGraphedHead(cuda_graph_train=True)`` on CUDA with gradients on),
    and no auxiliary head
    (it would need the backbone's maps outside the graph).

    In the graphed branch ``extract_feat`` and ``_decode_head_forward_train``
    are not called (the head runs the backbone and neck itself): a subclass
    that overrides them should set ``graph_backbone=False``. If the capture
    with the backbone fails (a host sync, or collectives such as SyncBN's that
    this setup cannot capture), the head warns once and from then on runs the
    backbone eagerly and graphs only the decoders. Tested on one GPU with
    BatchNorm; SyncBN under DDP has not been run on a GPU.

    Args:
        graph_backbone: Capture the backbone (and neck) with the decoders.
        **kwargs: ``EncoderDecoder``'s arguments.
    """

    def __init__(self, *args, graph_backbone: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.graph_backbone = graph_backbone

    def _graphs_backbone(self, inputs: Tensor) -> bool:
        head = self.decode_head
        return (self.graph_backbone and not self.with_auxiliary_head
                and hasattr(head, 'loss_from_images')
                and head.graphs_training(inputs))

    def loss(self, inputs: Tensor, data_samples: SampleList
             ) -> Dict[str, Tensor]:
        """Losses of a batch: images (B, 3, H, W) and their data samples."""
        if not self._graphs_backbone(inputs):
            return super().loss(inputs, data_samples)
        losses = self.decode_head.loss_from_images(
            inputs, self.backbone, self.neck if self.with_neck else None,
            data_samples)
        return add_prefix(losses, 'decode')
