"""Replay the head's inference forward as a CUDA graph.

At batch 1 the decoders launch ~800 small kernels per image and the GPU waits
on the host between them; a captured graph launches them all at once. Graphs
are captured per input signature (shapes, dtype, autocast state, inference
mode, train/eval) and reused; inputs are copied into the graph's static
buffers and the outputs are cloned out, so callers never see a buffer the next
call overwrites. The owner must drop the graphs whenever its parameters move
or are replaced (``M2FHead`` does, in ``_apply`` and on state-dict loads).

Not thread-safe: one graph's static buffers are shared by all callers.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

__all__ = ['GraphedInference']


class _Entry:
    """One captured graph with its static inputs and outputs."""

    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: List[Tensor],
                 outputs: List[Tensor], keepalive: List[object]) -> None:
        self.graph = graph
        self.inputs = inputs
        self.outputs = outputs
        self.keepalive = keepalive  # cached tensors the graph reads


def _module_caches(module: nn.Module) -> List[object]:
    """Snapshot of the submodules' tensor caches (position encodings, level
    geometry): the graph reads their memory, so it must outlive them."""
    found = []
    for m in module.modules():
        for name in ('_cache', '_geometry_cache'):
            cache = getattr(m, name, None)
            if isinstance(cache, dict):
                found.append(list(cache.values()))
    return found


class GraphedInference:
    """Capture ``fn(*tensors) -> list of tensors`` once per signature.

    Args:
        owner: The module whose parameters ``fn`` reads (moving or
            re-creating them invalidates the graphs).
        fn: The forward to capture; no host syncs inside.
        max_graphs: Signatures kept; beyond that ``fn`` runs eagerly (each
            graph keeps its activations' memory pool).
    """

    def __init__(self, owner: nn.Module,
                 fn: Callable[..., Sequence[Tensor]],
                 max_graphs: int = 4) -> None:
        self.owner = owner
        self.fn = fn
        self.max_graphs = max_graphs
        self._entries: Dict[Tuple, _Entry] = {}
        self._warned = False
        self.disabled = False  # set when a capture fails

    def __getstate__(self) -> dict:
        # graphs cannot be copied or pickled (deepcopy for EMA, torch.save):
        # a copy starts without any and captures its own
        state = self.__dict__.copy()
        state['_entries'] = {}
        return state

    def clear(self) -> None:
        """Drop every graph (and its memory pool)."""
        self._entries.clear()

    def _signature(self, tensors: Sequence[Tensor]) -> Tuple:
        device = tensors[0].device
        # parameter storage as a cheap guard; moves and reloads also clear
        params = next(self.owner.parameters(), None)
        return (tuple((t.shape, t.dtype, t.device) for t in tensors),
                torch.is_autocast_enabled(device.type),
                torch.get_autocast_dtype(device.type),
                torch.is_inference_mode_enabled(), self.owner.training,
                None if params is None else params.data_ptr())

    def __call__(self, *tensors: Tensor) -> List[Tensor]:
        """Run ``fn`` on ``tensors``, replaying (capturing first if new) the
        graph of their signature; returns fresh copies of the outputs."""
        if self.disabled:
            return list(self.fn(*tensors))
        key = self._signature(tensors)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_graphs:
                if not self._warned:
                    print_log(
                        f'cuda_graph: more than {self.max_graphs} input '
                        'signatures (shapes/dtypes); new ones run eagerly. '
                        'Raise max_graphs, or use fixed-size inputs (slide '
                        'inference, fixed resize).', logger='current',
                        level=logging.WARNING)
                    self._warned = True
                return list(self.fn(*tensors))
            try:
                entry = self._capture(tensors)
            except RuntimeError as err:  # e.g. a host sync inside fn
                self.disabled = True
                print_log(f'cuda_graph: capture failed, running eagerly from '
                          f'now on: {str(err).splitlines()[0]}',
                          logger='current', level=logging.WARNING)
                return list(self.fn(*tensors))
            self._entries[key] = entry
        for dst, src in zip(entry.inputs, tensors):
            dst.copy_(src)
        entry.graph.replay()
        return [t.clone() for t in entry.outputs]

    def _capture(self, tensors: Sequence[Tensor]) -> _Entry:
        device = tensors[0].device.type
        static = [t.detach().clone() for t in tensors]
        # autocast's weight-cast cache must be off: with it, the capture
        # would read the cached half-precision weights, which autocast frees
        # when its outermost context exits (before the next replay)
        autocast = torch.autocast(
            device, dtype=torch.get_autocast_dtype(device),
            enabled=torch.is_autocast_enabled(device), cache_enabled=False)
        with autocast:
            # warm up on a side stream (lazy inits, cuDNN/cuBLAS handles, the
            # modules' caches) as torch.cuda.graph's documentation asks
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.fn(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: CUDA calls of other threads (data-loader pinning)
            # do not invalidate the capture
            with torch.cuda.graph(graph, capture_error_mode='thread_local'):
                outputs = list(self.fn(*static))
        # the side stream's cached blocks can serve no other stream: release
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        return _Entry(graph, static, outputs, _module_caches(self.owner))
