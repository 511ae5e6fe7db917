"""``M2FGraphedHead``: ``M2FHead`` whose decoders replay as CUDA graphs.

The model is ``M2FHead``'s; only where its decoders run changes. On CUDA
tensors, inference (``cuda_graph``) and training (``cuda_graph_train``)
replay graphs captured once per input signature (``cuda_graphs``);
elsewhere, and whenever a capture fails, the head runs eagerly.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

import torch
from mmengine.logging import print_log
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor, nn

from ..models.heads import M2FHead
from ..structures import Predictions
from .cuda_graphs import Encoder, FlatDecoders, GraphedInference, GraphedTraining

__all__ = ['M2FGraphedHead']


def _uses_host_sync_msda(module: nn.Module) -> bool:
    """mmcv's PyTorch deformable attention reads the level sizes on the host
    (a sync), which a CUDA graph cannot capture."""
    return any(getattr(m, 'impl', None) == 'pytorch' for m in module.modules()
               if type(m).__name__ == 'MSDeformAttn')


@MODELS.register_module()
class M2FGraphedHead(M2FHead):
    """``M2FHead`` with CUDA-graph replay of its decoders.

    Args:
        cuda_graph: Replay the inference forward as a CUDA graph. Pays off
            where the host is the bottleneck (small images, batch 1); each
            captured shape keeps a memory pool of the decoders' activations.
        cuda_graph_train: Replay the training forward and backward as CUDA
            graphs (needs a fixed crop and batch size and one backward per
            forward). Under ``M2FEncoderDecoder`` the backbone is captured
            too.
        max_graphs: Inference signatures captured at most; others run
            eagerly.
        **kwargs: ``M2FHead``'s arguments.
    """

    def __init__(self, *args, cuda_graph: bool = True,
                 cuda_graph_train: bool = False, max_graphs: int = 4,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if cuda_graph_train not in (True, False):
            raise ValueError(
                f'M2FGraphedHead: cuda_graph_train={cuda_graph_train!r}; '
                'expected True or False (graphing the transformer decoder '
                "alone, 'transformer_decoder', is no longer an option)")
        self.cuda_graph = cuda_graph
        self.cuda_graph_train = cuda_graph_train
        self.graphed_inference = GraphedInference(max_graphs)
        self.graphed_training = GraphedTraining()
        self._graph_safe = not _uses_host_sync_msda(self.pixel_decoder)
        if not self._graph_safe and (cuda_graph or cuda_graph_train):
            print_log("M2FGraphedHead: CUDA graphs need msda_impl 'mmcv' or "
                      "'triton' ('pytorch' syncs with the host); the "
                      'decoders run eagerly', logger='current',
                      level=logging.WARNING)

    def graphs_training(self, x: Tensor) -> bool:
        """Whether a training step on input ``x`` runs as CUDA graphs."""
        return (self.cuda_graph_train and self._graph_safe and x.is_cuda and
                torch.is_grad_enabled())

    def prediction_sets(self, inputs: Sequence[Tensor]) -> Predictions:
        """As ``M2FHead.prediction_sets``, replayed as a graph where it
        applies."""
        feats = self._transform_inputs(inputs)
        if not feats[0].is_cuda or not self._graph_safe:
            return self.predictions(feats)
        if self.graphs_training(feats[0]):
            return self.graphed_training(FlatDecoders(self), feats)
        if (self.cuda_graph and not torch.is_grad_enabled() and
                not torch.jit.is_tracing()):
            return self.graphed_inference(FlatDecoders(self), feats)
        return self.predictions(feats)

    def loss_from_images(self, images: Tensor, backbone: nn.Module,
                         neck: Optional[nn.Module],
                         batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Losses as ``loss``, with the backbone (and neck) captured in the
        same training graphs (called by ``M2FEncoderDecoder``).

        Args:
            images: (B, 3, H, W).
            backbone: The segmentor's backbone.
            neck: Its neck, or None.
            batch_data_samples: With ``gt_sem_seg``.
        """
        encoder = Encoder(backbone, neck, self._transform_inputs)
        predictions = self.graphed_training(FlatDecoders(self, encoder),
                                            (images, ))
        return self.loss_by_feat(predictions, batch_data_samples)

    def train(self, mode: bool = True) -> 'M2FGraphedHead':
        """Frees the training graphs' pool for validation, and the inference
        graphs when training resumes (validation sizes would sit idle)."""
        self.graphed_training.clear()
        if mode:
            self.graphed_inference.clear()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .half() may move parameters the graphs read
        self.graphed_inference.clear()
        self.graphed_training.clear()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # load_state_dict(assign=True) replaces parameters: capture again
        self.graphed_inference.clear()
        self.graphed_training.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
