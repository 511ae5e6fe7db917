"""Replay the decoders (and optionally the backbone) as CUDA graphs.

A Mask2Former step launches thousands of small kernels (~800 per image at
inference, ~3600 per training step at batch 2) and the GPU waits on the host
between them. Captured once per input signature, a graph launches them all
at once. Two flavours share one cache (:class:`_GraphCache`):

* :class:`GraphedInference`: ``torch.cuda.graph``; inputs are copied into
  static buffers, outputs are cloned out.
* :class:`GraphedTraining`: ``torch.cuda.make_graphed_callables`` (a forward
  and a backward graph in one memory pool). The matcher (Hungarian
  assignment on the host) and the losses stay eager; their gradients enter
  the backward graph. Its outputs are static buffers the next call
  overwrites: run backward before the next forward (every ``OptimWrapper``
  step does; gradient accumulation over forwards is not supported). With an
  ``Encoder`` the backbone (and neck) is captured too; its BatchNorm
  statistics are put back after the capture's warm-up runs, so they are
  updated once per step, as eagerly.

Both capture :class:`FlatDecoders`, whose outputs are the ``Predictions``
tensors in a flat tuple. A capture that fails (a host sync inside, e.g.
mmcv's PyTorch deformable attention) turns graphs off with one warning.
The owner drops the graphs when its parameters move or are replaced.
Not thread-safe.
"""
from __future__ import annotations

import gc
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..structures import Predictions

__all__ = ['Encoder', 'FlatDecoders', 'GraphedInference', 'GraphedTraining']


class Encoder(nn.Module):
    """Images -> the head's input maps: backbone, optional neck, then the
    head's input selection (``transform``, not a module)."""

    def __init__(self, backbone: nn.Module, neck: Optional[nn.Module],
                 transform: Callable[[Sequence[Tensor]], List[Tensor]]
                 ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.transform = transform

    def forward(self, images: Tensor) -> List[Tensor]:
        """(B, 3, H, W) -> the head's maps."""
        feats = self.backbone(images)
        if self.neck is not None:
            feats = self.neck(feats)
        return self.transform(feats)


class FlatDecoders(nn.Module):
    """[encoder ->] pixel decoder -> transformer decoder with flat tensor
    outputs (what graph capture needs): S class logits, S mask embeddings,
    the mask features. :func:`to_predictions` undoes the flattening."""

    def __init__(self, head: nn.Module,
                 encoder: Optional[Encoder] = None) -> None:
        super().__init__()
        self.pixel_decoder = head.pixel_decoder
        self.transformer_decoder = head.transformer_decoder
        self.encoder = encoder

    def forward(self, *inputs: Tensor) -> Tuple[Tensor, ...]:
        """The head's input maps, or with an encoder the images."""
        feats = list(inputs) if self.encoder is None else self.encoder(
            inputs[0])
        mask_features, memories = self.pixel_decoder(feats)
        p = self.transformer_decoder(memories, mask_features)
        return (*p.class_logits, *p.mask_embeds, p.mask_features)


def to_predictions(outs: Sequence[Tensor]) -> Predictions:
    """``FlatDecoders``' outputs -> ``Predictions``."""
    num_sets = (len(outs) - 1) // 2
    return Predictions(list(outs[:num_sets]),
                       list(outs[num_sets:2 * num_sets]), outs[-1])


def module_state(module: nn.Module) -> Tuple:
    """Submodules, their training flags, and the parameters' storage and
    grad flags: a captured graph is valid only while these stay the same."""
    mods = list(module.modules())  # one walk: this runs every step
    return (tuple(map(id, mods)), tuple(m.training for m in mods),
            tuple((p.data_ptr(), p.requires_grad) for m in mods
                  for p in m._parameters.values() if p is not None))


def _autocast_state(device: str) -> Tuple:
    return (torch.is_autocast_enabled(device),
            torch.get_autocast_dtype(device))


def _capture_autocast(device: str) -> torch.autocast:
    """The ambient autocast without its weight-cast cache: cached casts are
    freed when the outermost autocast exits, before the next replay."""
    return torch.autocast(device, dtype=torch.get_autocast_dtype(device),
                          enabled=torch.is_autocast_enabled(device),
                          cache_enabled=False)


class _GraphCache:
    """Captures by signature, at most ``max_graphs``; eager beyond that and
    after a failed capture (one warning each).

    Subclasses define ``_capture(inputs, *extra)`` and ``_replay(entry,
    inputs)``; the eager path is ``eager(*inputs)``.
    """

    name = 'cuda_graph'

    def __init__(self, max_graphs: int) -> None:
        self.max_graphs = max_graphs
        self.entries: Dict[Tuple, object] = {}
        self.disabled = False
        self._warned_full = False

    def __getstate__(self) -> dict:
        # graphs cannot be copied or pickled (deepcopy for EMA, torch.save):
        # a copy starts without any and captures its own
        state = self.__dict__.copy()
        state['entries'] = {}
        return state

    def clear(self) -> None:
        """Drop every graph and release its memory pool now."""
        if self.entries:
            self._release()
            self.entries.clear()
            gc.collect()  # the pool goes now, not at some later collection

    def _release(self) -> None:
        pass

    def run(self, key: Tuple, inputs: Sequence[Tensor],
            capture: Callable[[], object],
            replay: Callable[[object], Sequence[Tensor]],
            eager: Callable[[], Sequence[Tensor]],
            fallback: Optional[Callable[[str], Sequence[Tensor]]] = None
            ) -> Sequence[Tensor]:
        """Replay the graph of ``key`` (capturing it first if new). A failed
        capture calls ``fallback(reason)`` if given, else turns the graphs
        off (one warning) and runs ``eager``."""
        if self.disabled:
            return eager()
        entry = self.entries.get(key)
        if entry is None:
            if len(self.entries) >= self.max_graphs:
                if not self._warned_full:
                    self._warned_full = True
                    print_log(
                        f'{self.name}: more than {self.max_graphs} input '
                        'signatures (shapes/dtypes); new ones run eagerly. '
                        'Use fixed-size inputs or raise max_graphs.',
                        logger='current', level=logging.WARNING)
                return eager()
            try:
                entry = capture()
            except RuntimeError as err:  # e.g. a host sync inside
                reason = str(err).splitlines()[0] if str(err) else repr(err)
                if fallback is not None:
                    return fallback(reason)
                self.disabled = True
                print_log(f'{self.name}: capture failed, running eagerly '
                          f'from now on: {reason}', logger='current',
                          level=logging.WARNING)
                return eager()
            self.entries[key] = entry
        return replay(entry)


class GraphedInference(_GraphCache):
    """The head's inference forward as CUDA graphs, one per signature."""

    name = 'cuda_graph'

    def __call__(self, module: FlatDecoders,
                 inputs: Sequence[Tensor]) -> Predictions:
        """Decode ``inputs`` (the head's maps) by replaying a graph."""
        device = inputs[0].device.type
        # the decoders' modules, modes and parameters (the FlatDecoders
        # wrapper itself is new per call)
        key = (tuple((t.shape, t.dtype, t.device) for t in inputs),
               _autocast_state(device), torch.is_inference_mode_enabled(),
               module_state(module.pixel_decoder),
               module_state(module.transformer_decoder))
        outs = self.run(key, inputs, lambda: self._capture(module, inputs),
                        lambda e: self._replay(e, inputs),
                        lambda: module(*inputs))
        return to_predictions(outs)

    @staticmethod
    def _capture(module: FlatDecoders, inputs: Sequence[Tensor]) -> Tuple:
        static = [t.detach().clone() for t in inputs]
        with _capture_autocast(inputs[0].device.type):
            # warm up on a side stream (lazy inits, library handles, the
            # modules' per-size caches), as torch.cuda.graph asks
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    module(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: CUDA calls of other threads (data-loader pinning)
            # do not invalidate the capture
            with torch.cuda.graph(graph, capture_error_mode='thread_local'):
                outputs = module(*static)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # the side stream's blocks serve no other
        return graph, static, outputs, _module_caches(module)

    @staticmethod
    def _replay(entry: Tuple, inputs: Sequence[Tensor]) -> List[Tensor]:
        graph, static, outputs, _ = entry
        for dst, src in zip(static, inputs):
            dst.copy_(src)
        graph.replay()
        return [t.clone() for t in outputs]


class GraphedTraining(_GraphCache):
    """The training forward + backward of the decoders (and an encoder) as
    CUDA graphs, one pair per signature."""

    name = 'cuda_graph_train'

    def __init__(self, max_graphs: int = 2) -> None:
        super().__init__(max_graphs)
        # set when a capture with the backbone fails (e.g. SyncBN's
        # collectives, a host sync in a custom backbone): the backbone then
        # runs eagerly and only the decoders are graphed
        self.encoder_disabled = False

    def _release(self) -> None:
        for module, _ in self.entries.values():
            # make_graphed_callables sets module.forward to a closure over
            # the module: a reference cycle that would keep the pool alive
            module.__dict__.pop('forward', None)

    def __call__(self, module: FlatDecoders,
                 inputs: Sequence[Tensor]) -> Predictions:
        """Decode for the loss by replaying the graphs.

        Args:
            module: The decoders, with ``encoder`` when ``inputs`` are the
                images (B, 3, H, W).
            inputs: The head's maps, or one tensor of images.
        """
        encoder = module.encoder
        if encoder is not None and self.encoder_disabled:
            return self(FlatDecoders(module, None), encoder(inputs[0]))
        device = inputs[0].device.type
        key = (tuple((t.shape, t.dtype, t.device, t.requires_grad)
                     for t in inputs), _autocast_state(device),
               module_state(module.pixel_decoder),
               module_state(module.transformer_decoder),
               None if encoder is None else tuple(
                   None if m is None else module_state(m)
                   for m in (encoder.backbone, encoder.neck)))
        outs = self.run(key, inputs, lambda: self._capture(module, inputs),
                        lambda e: e[0](*inputs), lambda: module(*inputs),
                        None if encoder is None else
                        lambda reason: self._without_encoder(module, inputs,
                                                             reason))
        return to_predictions(outs)

    def _without_encoder(self, module: FlatDecoders, inputs: Sequence[Tensor],
                         reason: str) -> Sequence[Tensor]:
        """The capture with the backbone failed: this step runs eagerly,
        later ones graph the decoders alone (one warning)."""
        self.encoder_disabled = True
        print_log('cuda_graph_train: capture with the backbone failed; the '
                  'backbone runs eagerly from now on, the decoders stay '
                  f'graphed: {reason}', logger='current',
                  level=logging.WARNING)
        return module(*inputs)

    @staticmethod
    def _capture(module: FlatDecoders, inputs: Sequence[Tensor]) -> Tuple:
        sample = tuple(t.detach().clone().requires_grad_(t.requires_grad)
                       for t in inputs)
        # the warm-up runs update BatchNorm statistics: put them back, also
        # when the capture fails, so that only the real steps count
        buffers = [(b, b.clone()) for b in module.buffers()]
        try:
            with _capture_autocast(inputs[0].device.type):
                graphed = torch.cuda.make_graphed_callables(
                    module, sample, num_warmup_iters=3)
        finally:
            if inputs[0].is_cuda:  # the warm-up ran on a side stream
                torch.cuda.synchronize()
            with torch.no_grad():
                for buf, saved in buffers:
                    buf.copy_(saved)
            del buffers
        torch.cuda.empty_cache()
        return graphed, _module_caches(module)


def _module_caches(module: nn.Module) -> List[object]:
    """Snapshot of the submodules' per-size tensor caches (position
    encodings, level geometry): graphs read their memory, so it must
    outlive them."""
    found = []
    for m in module.modules():
        for name in ('_cache', '_geometry_cache'):
            cache = getattr(m, name, None)
            if isinstance(cache, dict):
                found.append(list(cache.values()))
    return found
