"""Replay the decoders' training forward and backward as CUDA graphs.

At batch 2 a training step launches ~3600 kernels and the GPU waits on the
host between them (~47 ms of kernels in a ~110 ms step on an H100). The pixel
decoder and the transformer decoder launch most of them; here they are
captured with ``torch.cuda.make_graphed_callables`` (a forward graph and a
backward graph sharing one memory pool) once per input signature. The
matcher (Hungarian assignment on the host) and the losses stay eager: they
read the graph's outputs, and their gradients enter its backward.

With ``cuda_graph_train='transformer_decoder'`` only the transformer decoder
is captured: the pixel decoder runs eagerly (checkpointed with ``with_cp``),
so its activations, the largest of the head, stay out of the graphs' pool,
while the transformer decoder, whose many small kernels cost the most host
time per byte of activations, is replayed.

The backbone stays eager too, unless the segmentor hands over the images and
its backbone (``M2FEncoderDecoder``): then it is captured in the same graphs.
That removes its host launches as well, and keeps every activation in the one
pool, so eager and graphed activations no longer peak in separate pools.
Its BatchNorm running statistics are put back after the capture's warm-up
runs, so they are updated exactly once per step, as eagerly.

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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..layers.mask_logits import MaskLogitSets
from .cuda_graph import _module_caches

__all__ = ['Encoder', 'GraphedTraining']


class Encoder(nn.Module):
    """Images -> the head's input maps: backbone, optional neck, then the
    head's input selection (``transform``).

    Args:
        backbone: (B, 3, H, W) -> tuple of maps.
        neck: Optional module on the backbone's maps.
        transform: The head's ``_transform_inputs`` (not a module).
    """

    def __init__(self, backbone: nn.Module, neck: Optional[nn.Module],
                 transform: Callable[[Sequence[Tensor]], List[Tensor]]
                 ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.transform = transform

    def forward(self, images: Tensor) -> List[Tensor]:
        feats = self.backbone(images)
        if self.neck is not None:
            feats = self.neck(feats)
        return self.transform(feats)


class _Decoders(nn.Module):
    """[Encoder ->] [pixel decoder ->] transformer decoder with flat tensor
    outputs: S class logits, S mask embeddings, then the mask features.

    Without a pixel decoder the inputs are its outputs: the mask features
    (B, C, H/4, W/4), then the memories of each level."""

    def __init__(self, pixel_decoder: Optional[nn.Module],
                 transformer_decoder: nn.Module,
                 encoder: Optional[Encoder] = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder

    def forward(self, *inputs: Tensor) -> Tuple[Tensor, ...]:
        if self.pixel_decoder is None:
            mask_features, memories = inputs[0], list(inputs[1:])
        else:
            # inputs: the images (with an encoder) or the head's input maps
            feats = list(inputs) if self.encoder is None else self.encoder(
                inputs[0])
            mask_features, memories = self.pixel_decoder(list(feats))
        all_cls, sets = self.transformer_decoder(memories, mask_features,
                                                 lazy_masks=True)
        return (*all_cls, *sets.embeds, sets.features)


def _module_state(module: nn.Module) -> Tuple:
    """Submodules, their training flags, and the parameters' storage and
    grad flags: a captured graph is only valid while these stay the same."""
    # one walk of the tree: this runs every training step, on the host
    mods = list(module.modules())
    return (tuple(map(id, mods)), tuple(m.training for m in mods),
            tuple((p.data_ptr(), p.requires_grad) for m in mods
                  for p in m._parameters.values() if p is not None))


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
        self.disabled = False  # set when a capture of the decoders fails
        # set when a capture with the backbone fails (e.g. SyncBN's
        # collectives, a host sync in a custom backbone): from then on the
        # backbone runs eagerly and only the decoders are graphed
        self.encoder_disabled = False

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

    def _eager(self, feats: Sequence[Tensor],
               encoder: Optional[Encoder] = None
               ) -> Tuple[List[Tensor], MaskLogitSets]:
        return _unflatten(self._decoders(encoder)(*feats))

    @property
    def transformer_decoder_only(self) -> bool:
        """Whether only the transformer decoder is captured (the head's
        ``cuda_graph_train='transformer_decoder'``): the inputs are then the
        pixel decoder's outputs, mask features first."""
        return self.owner.cuda_graph_train == 'transformer_decoder'

    def _decoders(self, encoder: Optional[Encoder]) -> _Decoders:
        return _Decoders(
            None if self.transformer_decoder_only else
            self.owner.pixel_decoder, self.owner.transformer_decoder, encoder)

    def _signature(self, feats: Sequence[Tensor],
                   encoder: Optional[Encoder] = None) -> Tuple:
        """What a graph depends on beyond the values it reads: input shapes
        and flags, autocast, and for the head and the encoder their
        modules, training flags, and parameters' storage and grad flags
        (``requires_grad_``, ``eval()``, ``load_state_dict(assign=True)``
        or a swapped submodule each need a new capture)."""
        device = feats[0].device.type
        return (self.transformer_decoder_only,
                tuple((t.shape, t.dtype, t.device, t.requires_grad)
                      for t in feats),
                torch.is_autocast_enabled(device),
                torch.get_autocast_dtype(device),
                _module_state(self.owner),
                # the backbone and neck, not the Encoder (a new one per call)
                None if encoder is None else tuple(
                    None if m is None else _module_state(m)
                    for m in (encoder.backbone, encoder.neck)))

    def __call__(self, feats: Sequence[Tensor],
                 encoder: Optional[Encoder] = None
                 ) -> Tuple[List[Tensor], MaskLogitSets]:
        """Decode for the loss: S class logits (B, Q, K + 1) and the masks as
        ``MaskLogitSets``.

        Args:
            feats: The head's input maps, L_in tensors (B, C_i, H_i, W_i); or,
                with ``encoder``, one tensor of images (B, 3, H, W); or, when
                ``transformer_decoder_only``, the pixel decoder's outputs
                (mask features, then the memories).
            encoder: Backbone (and neck) to run, and capture, first.
        """
        if encoder is not None and self.encoder_disabled:
            return self(encoder(feats[0]))
        if self.disabled:
            return self._eager(feats, encoder)
        key = self._signature(feats, encoder)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_graphs:
                if not self._warned:
                    print_log(f'cuda_graph_train: more than {self.max_graphs} '
                              'input signatures; new ones run eagerly (use a '
                              'fixed crop size and batch size)',
                              logger='current', level=logging.WARNING)
                    self._warned = True
                return self._eager(feats, encoder)
            try:
                entry = self._capture(feats, encoder)
            except RuntimeError as err:  # e.g. a host sync inside
                reason = str(err).splitlines()[0] if str(err) else repr(err)
                if encoder is not None:
                    self.encoder_disabled = True
                    print_log('cuda_graph_train: capture with the backbone '
                              'failed; the backbone runs eagerly from now on '
                              f'(the decoders stay graphed): {reason}',
                              logger='current', level=logging.WARNING)
                    return self(encoder(feats[0]))
                self.disabled = True
                print_log('cuda_graph_train: capture failed, training eagerly'
                          f' from now on: {reason}',
                          logger='current', level=logging.WARNING)
                return self._eager(feats, encoder)
            self._entries[key] = entry
        return _unflatten(entry[0](*feats))

    def _capture(self, feats: Sequence[Tensor], encoder: Optional[Encoder]
                 ) -> Tuple[nn.Module, List[object]]:
        device = feats[0].device.type
        module = self._decoders(encoder)
        sample = tuple(f.detach().clone().requires_grad_(f.requires_grad)
                       for f in feats)
        # the warm-up runs update BatchNorm running statistics (and counters):
        # put them back, also when the capture fails, so that only the real
        # steps count
        buffers = [(b, b.clone()) for b in module.buffers()]
        try:
            # autocast's weight-cast cache must be off (make_graphed_callables
            # refuses it): cached casts would be freed before the next replay
            with torch.autocast(device, dtype=torch.get_autocast_dtype(device),
                                enabled=torch.is_autocast_enabled(device),
                                cache_enabled=False):
                graphed = torch.cuda.make_graphed_callables(
                    module, sample, num_warmup_iters=3)
        finally:
            if device == 'cuda':
                # the warm-up ran on a side stream
                torch.cuda.synchronize()
            with torch.no_grad():
                for buf, saved in buffers:
                    buf.copy_(saved)
            del buffers
        # the side stream's cached blocks can serve no other stream and would
        # stay reserved next to the graph's pool
        torch.cuda.empty_cache()
        # the graphs read the decoders' per-size caches: keep them alive
        return graphed, _module_caches(self.owner)
