"""Replay the decoders' training forward and backward as CUDA graphs.

At batch 2 a training step launches ~3600 kernels and the GPU waits on the
host between them (~47 ms of kernels in a ~110 ms step on an H100). The pixel
decoder and the transformer decoder launch most of them; here they are
captured with ``torch.cuda.make_graphed_callables`` (a forward graph and a
backward graph sharing one memory pool) once per input signature. The
backbone, the matcher (Hungarian assignment on the host) and the losses stay
eager: they read the graph's outputs, and their gradients enter its backward.

Limits, by construction:

* The outputs are the graph's static buffers: the next call overwrites them.
  Run backward (or drop the outputs) before the next forward, as every
  ``OptimWrapper`` step does; gradient accumulation over several forwards
  before one backward is not supported.
* No host syncs inside the decoders (mmcv's PyTorch deformable attention has
  one: the head falls back to eager with a warning).
* The pool keeps the decoders' activations between steps: compare its memory
  with ``torch.cuda.max_memory_reserved``, since ``max_memory_allocated``
  does not see buffers the graph reuses.

Not thread-safe.
"""
from __future__ import annotations

import gc
import logging
from typing import Dict, List, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..layers.mask_logits import MaskLogitSets
from .cuda_graph import _module_caches

__all__ = ['GraphedTraining']


class _Decoders(nn.Module):
    """Pixel decoder -> transformer decoder with flat tensor outputs:
    S class logits, S mask embeddings, then the mask features."""

    def __init__(self, pixel_decoder: nn.Module,
                 transformer_decoder: nn.Module) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder

    def forward(self, *feats: Tensor) -> Tuple[Tensor, ...]:
        mask_features, memories = self.pixel_decoder(list(feats))
        all_cls, sets = self.transformer_decoder(memories, mask_features,
                                                 lazy_masks=True)
        return (*all_cls, *sets.embeds, sets.features)


def _unflatten(outs: Sequence[Tensor]) -> Tuple[List[Tensor], MaskLogitSets]:
    """``_Decoders``' flat outputs -> (S class logits, ``MaskLogitSets``)."""
    num_sets = (len(outs) - 1) // 2
    return (list(outs[:num_sets]),
            MaskLogitSets(list(outs[num_sets:2 * num_sets]), outs[-1]))


class GraphedTraining:
    """Training forward + backward of a head's decoders, graphed per signature.

    Args:
        owner: The head (``pixel_decoder`` and ``transformer_decoder``).
        max_graphs: Signatures kept; beyond that the decoders run eagerly
            (each graph keeps a pool as large as the decoders' activations).
    """

    def __init__(self, owner: nn.Module, max_graphs: int = 2) -> None:
        self.owner = owner
        self.max_graphs = max_graphs
        self._entries: Dict[Tuple, Tuple[nn.Module, List[object]]] = {}
        self._warned = False
        self.disabled = False  # set when a capture fails

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # graphs cannot be copied or pickled
        state['_entries'] = {}
        return state

    def clear(self) -> None:
        """Drop every graph and release its memory pool now."""
        if not self._entries:
            return
        for module, _ in self._entries.values():
            # make_graphed_callables sets module.forward to a closure over
            # the module, and keeps the graphs in a per-call autograd
            # Function class: both are reference cycles
            module.__dict__.pop('forward', None)
        self._entries.clear()
        gc.collect()  # the pool goes now, not at some later collection

    def _eager(self, feats: Sequence[Tensor]
               ) -> Tuple[List[Tensor], MaskLogitSets]:
        return _unflatten(self._decoders()(*feats))

    def _decoders(self) -> _Decoders:
        return _Decoders(self.owner.pixel_decoder,
                         self.owner.transformer_decoder)

    def _signature(self, feats: Sequence[Tensor]) -> Tuple:
        device = feats[0].device.type
        params = next(self.owner.parameters(), None)
        return (tuple((t.shape, t.dtype, t.device, t.requires_grad)
                      for t in feats),
                torch.is_autocast_enabled(device),
                torch.get_autocast_dtype(device),
                None if params is None else params.data_ptr())

    def __call__(self, feats: Sequence[Tensor]
                 ) -> Tuple[List[Tensor], MaskLogitSets]:
        """Decode ``feats`` (L_in maps (B, C_i, H_i, W_i)) for the loss:
        S class logits (B, Q, K + 1) and the masks as ``MaskLogitSets``."""
        if self.disabled:
            return self._eager(feats)
        key = self._signature(feats)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_graphs:
                if not self._warned:
                    print_log(f'cuda_graph_train: more than {self.max_graphs} '
                              'input signatures; new ones run eagerly (use a '
                              'fixed crop size and batch size)',
                              logger='current', level=logging.WARNING)
                    self._warned = True
                return self._eager(feats)
            try:
                entry = self._capture(feats)
            except RuntimeError as err:  # e.g. a host sync inside
                self.disabled = True
                print_log('cuda_graph_train: capture failed, training eagerly'
                          f' from now on: {str(err).splitlines()[0]}',
                          logger='current', level=logging.WARNING)
                return self._eager(feats)
            self._entries[key] = entry
        return _unflatten(entry[0](*feats))

    def _capture(self, feats: Sequence[Tensor]
                 ) -> Tuple[nn.Module, List[object]]:
        device = feats[0].device.type
        module = self._decoders()
        sample = tuple(f.detach().clone().requires_grad_(f.requires_grad)
                       for f in feats)
        # autocast's weight-cast cache must be off (make_graphed_callables
        # refuses it): cached casts would be freed before the next replay
        with torch.autocast(device, dtype=torch.get_autocast_dtype(device),
                            enabled=torch.is_autocast_enabled(device),
                            cache_enabled=False):
            graphed = torch.cuda.make_graphed_callables(
                module, sample, num_warmup_iters=3)
        # the warm-up ran on a side stream: its cached blocks can serve no
        # other stream and would stay reserved next to the graph's pool
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        # the graphs read the decoders' per-size caches: keep them alive
        return graphed, _module_caches(self.owner)
