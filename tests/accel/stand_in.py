"""Observe CUDA-graph capture: a CPU stand-in, and a spy on the real one.

The graphed code (``m2f_plugin.accel.cuda_graphs``) reaches CUDA only
through ``torch.cuda`` attributes. :class:`StandInCUDA` replaces them, so
that the graphed paths run on the CPU and can be observed:

* ``CUDAGraph`` / ``graph`` (inference): ``graph`` records every aten op run
  inside it, and ``replay`` runs them again in order, writing each result
  into the tensor recorded at capture: as a CUDA graph re-launches its
  kernels on fixed memory, a replay reads the static inputs and overwrites
  the static outputs, nothing else. A host read of a floating-point value
  (``.item()``, ``float(t)``) or ``synchronize`` inside it refuses the
  capture with a RuntimeError, as CUDA does. (Integer reads pass: the CPU
  reference of deformable attention reads its level sizes, which the CUDA
  kernels take as tensors; they are constant for a signature.)
* ``make_graphed_callables`` (training): one warm-up forward (the real
  function runs ``num_warmup_iters`` forwards and backwards; one is enough
  to change BatchNorm statistics), one forward under the same refusal rules
  (the capture), then sets ``forward`` on the module instance to a
  replay-counting closure and returns the module, as the real one does;
  autograd then runs eagerly through it. ``refuse(module)`` makes chosen
  captures fail after their warm-up.
* ``Stream`` / ``stream`` / ``current_stream``, and ``synchronize``
  outside a capture: no-ops.

A captured graph or graphed module cannot be copied or pickled (a real
``CUDAGraph`` cannot either), so a copy that kept the graphs would fail.

:class:`CudaSpy` counts the same things around the real functions on a GPU.
Both expose ``device``, ``attempts`` (captures begun), ``captured`` (weak
references to the graphs / graphed modules made) and ``replays``.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Callable, List, Optional, Sequence

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from m2f_plugin.accel.cuda_graphs import FlatDecoders

CAPTURE_ERROR = 'operation not permitted when stream is capturing'
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='real CUDA graphs need a GPU')


class _NoCopy:
    """Makes its holder refuse ``copy.deepcopy`` and ``pickle``."""

    def __reduce_ex__(self, protocol):
        raise TypeError('a captured CUDA graph cannot be copied or pickled')

    def __deepcopy__(self, memo):
        raise TypeError('a captured CUDA graph cannot be copied or pickled')


class _Refusing(TorchDispatchMode):
    """Refuses host reads of tensor values; records the ops if asked."""

    def __init__(self, ops: Optional[list] = None) -> None:
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is torch.ops.aten._local_scalar_dense.default
                and args[0].is_floating_point()):
            raise RuntimeError(f'{CAPTURE_ERROR} (stand-in: a host read)')
        out = func(*args, **kwargs)
        if self.ops is not None:
            self.ops.append((func, args, kwargs, out))
        return out


class _RecordedGraph:
    """Stands in for ``torch.cuda.CUDAGraph``."""

    def __init__(self, owner: 'StandInCUDA') -> None:
        self._owner = owner
        self._ops: list = []
        self._no_copy = _NoCopy()

    def replay(self) -> None:
        self._owner.replays += 1
        with torch.no_grad():
            for func, args, kwargs, out in self._ops:
                new = func(*args, **kwargs)
                for old, fresh in zip(tree_leaves(out), tree_leaves(new)):
                    if isinstance(old, Tensor) and old is not fresh:
                        old.copy_(fresh)


class _Stream:

    def wait_stream(self, stream) -> None:
        pass


class StandInCUDA:
    """Installs the CPU stand-ins on ``torch.cuda`` (see the module doc)."""

    device = 'cpu'

    def __init__(self, monkeypatch,
                 refuse: Optional[Callable[[nn.Module], bool]] = None
                 ) -> None:
        self.refuse = refuse
        self.attempts = 0
        self.captured: List[weakref.ref] = []
        self.replays = 0
        self._capturing = False
        for name, value in dict(
                CUDAGraph=lambda *a, **k: _RecordedGraph(self),
                graph=self._graph, Stream=lambda *a, **k: _Stream(),
                current_stream=lambda *a, **k: _Stream(),
                stream=lambda s: contextlib.nullcontext(),
                synchronize=self._synchronize,
                make_graphed_callables=self._make_graphed_callables).items():
            monkeypatch.setattr(torch.cuda, name, value)

    def _synchronize(self, device=None) -> None:
        if self._capturing:
            raise RuntimeError(f'{CAPTURE_ERROR} (stand-in: synchronize)')

    @contextlib.contextmanager
    def _graph(self, cuda_graph: _RecordedGraph, **kwargs):
        self.attempts += 1
        self._capturing = True
        try:
            with _Refusing(cuda_graph._ops):
                yield
        finally:
            self._capturing = False
        self.captured.append(weakref.ref(cuda_graph))

    def _make_graphed_callables(self, module: nn.Module,
                                sample_args: Sequence[Tensor],
                                num_warmup_iters: int = 3, **kwargs):
        self.attempts += 1
        if any(torch.is_autocast_enabled(d) for d in ('cpu', 'cuda')) and \
                torch.is_autocast_cache_enabled():
            raise RuntimeError('make_graphed_callables does not support the '
                               'autocast caching')
        module(*sample_args)  # the warm-up
        self._capturing = True
        try:
            with _Refusing():
                module(*sample_args)
        finally:
            self._capturing = False
        if self.refuse is not None and self.refuse(module):
            raise RuntimeError(f'{CAPTURE_ERROR} (stand-in: refused)')
        eager_forward = module.forward

        def replay(*args):
            self.replays += 1
            return eager_forward(*args)

        module.forward = replay
        module.stand_in_graph = _NoCopy()
        self.captured.append(weakref.ref(module))
        return module


class CudaSpy:
    """Counts captures and replays of the real ``torch.cuda`` functions
    (the graphs that ``make_graphed_callables`` makes inside count as its
    one capture)."""

    device = 'cuda'

    def __init__(self, monkeypatch) -> None:
        self.attempts = 0
        self.captured: List[weakref.ref] = []
        self.replays = 0
        self._in_callables = False
        real_graph = torch.cuda.graph
        real_callables = torch.cuda.make_graphed_callables

        @contextlib.contextmanager
        def graph(cuda_graph, *args, **kwargs):
            if self._in_callables:
                with real_graph(cuda_graph, *args, **kwargs):
                    yield
                return
            self.attempts += 1
            with real_graph(cuda_graph, *args, **kwargs):
                yield
            real_replay = cuda_graph.replay

            def replay():
                self.replays += 1
                real_replay()

            cuda_graph.replay = replay
            self.captured.append(weakref.ref(cuda_graph))

        def make_graphed_callables(module, *args, **kwargs):
            self.attempts += 1
            self._in_callables = True
            try:
                graphed = real_callables(module, *args, **kwargs)
            finally:
                self._in_callables = False
            graphed_forward = graphed.forward

            def replay(*inputs):
                self.replays += 1
                return graphed_forward(*inputs)

            graphed.forward = replay
            self.captured.append(weakref.ref(graphed))
            return graphed

        monkeypatch.setattr(torch.cuda, 'graph', graph)
        monkeypatch.setattr(torch.cuda, 'make_graphed_callables',
                            make_graphed_callables)


def decode(head: nn.Module, x: Sequence[Tensor]):
    """The head's forward as ``M2FGraphedHead.forward`` runs it on CUDA,
    also on the CPU: training graphs with gradients on, else inference
    graphs (``x``: the maps of ``tests.helpers.feats``, which the head takes
    as they are)."""
    if x[0].is_cuda:
        return head.prediction_sets(x)
    if torch.is_grad_enabled():
        return head.graphed_training(FlatDecoders(head), list(x))
    return head.graphed_inference(FlatDecoders(head), list(x))


class HostReadingDecoders(FlatDecoders):
    """The decoders with a host read of a result inside (as mmcv's PyTorch
    deformable attention reads the level sizes): capture must fail."""

    def forward(self, *inputs: Tensor):
        outs = super().forward(*inputs)
        if float(outs[-1].detach().abs().sum()) < 0:  # a host read
            raise AssertionError('unreachable')
        return outs


def assert_predictions_close(got, want, **tol) -> None:
    """Every tensor of two ``Predictions`` close (exact by default)."""
    tol = tol or dict(rtol=0, atol=0)
    assert got.num_sets == want.num_sets
    for a, b in zip(got.class_logits + got.mask_embeds + [got.mask_features],
                    want.class_logits + want.mask_embeds +
                    [want.mask_features]):
        torch.testing.assert_close(a, b, **tol)
