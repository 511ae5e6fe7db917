"""Host work of a training step: mmdet's ``Mask2Former`` detector with
``M2FDetHead`` against the same detector with mmdet's built-in head.

Same weights and batch (``panoptic_samples``: things, stuff, a crowd, an
image without things), shrunk for the CPU's pace: ResNet-18, 2 encoder and
3 decoder layers, 64 channels, 20 queries, 256 points. Counted per training step (loss
and backward, no optimizer):

* aten ops, as ``torch.profiler`` records them (nested ops included): each
  costs host time, and most launch a kernel on a GPU;
* host reads of device values (``.cpu()``, ``.item()``, ``bool(t)``,
  ``.tolist()``, ``.numpy()`` of tensors not already read back): each waits
  for the GPU. mmcv's PyTorch reference of deformable attention reads its
  level sizes on the CPU only (CUDA runs a kernel), so its reads are left
  out.
"""
from __future__ import annotations

import collections
import copy
import traceback
from typing import Dict, List

import pytest
import torch
from mmengine.registry import DefaultScope
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from m2f_plugin.converters import convert_mmdet_state_dict

pytest.importorskip('mmdet')
from mmdet.registry import MODELS  # noqa: E402

from tests.helpers.mmdet import (  # noqa: E402
    PANOPTIC,
    H,
    W,
    mmdet_config,
    our_head,
    panoptic_samples,
)

pytestmark = pytest.mark.perf
MAX_OP_RATIO = 0.6  # ours / built-in aten ops per training step
CPU_ONLY_READS = 'multi_scale_deformable_attn_pytorch'


def _narrow(cfg, channels: int) -> None:
    """Every 256-channel width of mmdet's head config -> ``channels`` (the
    FFNs' 1024 / 2048 -> 2 ``channels``): op counts do not depend on it."""
    for key, value in cfg.items():
        if isinstance(value, dict):
            _narrow(value, channels)
        elif key in ('embed_dims', 'feat_channels', 'out_channels'):
            cfg[key] = channels
        elif key == 'feedforward_channels':
            cfg[key] = 2 * channels
        elif key == 'num_feats':
            cfg[key] = channels // 2


@pytest.fixture(scope='module')
def pair():
    """(built-in, ours): the tiny detectors, ours holding the built-in's
    weights, in training mode."""
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    model = copy.deepcopy(mmdet_config(PANOPTIC).model)
    model.backbone.update(depth=18, init_cfg=None)
    head = model.panoptic_head
    head.in_channels = [64, 128, 256, 512]
    head.num_queries = 20
    head.transformer_decoder.num_layers = 3
    head.pixel_decoder.encoder.num_layers = 2
    model.train_cfg.num_points = 256
    _narrow(head, 64)
    ours_cfg = copy.deepcopy(model)
    ours_cfg.panoptic_head = our_head(head)
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        builtin = MODELS.build(model)
        builtin.init_weights()
        ours = MODELS.build(ours_cfg)
    converted, _ = convert_mmdet_state_dict(builtin.state_dict())
    ours.load_state_dict(converted, strict=True)
    return builtin.train(), ours.train()


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One intra-op thread: these tiny models run thousands of small ops,
    for which thread hand-offs cost more than they save (and counts do not
    depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def _step(model, imgs: torch.Tensor) -> None:
    losses = model.loss(imgs, panoptic_samples())
    sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)


def _aten_ops(model, imgs: torch.Tensor) -> collections.Counter:
    """aten ops of one training step (after a warm-up step), by name."""
    _step(model, imgs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _step(model, imgs)
    return collections.Counter(e.name for e in prof.events()
                               if e.name.startswith('aten::'))


def _caller() -> str:
    """'file:line function' of the innermost frame outside torch and this
    file, with the enclosing functions' names (to match on)."""
    frames = [f for f in traceback.extract_stack()[:-2]
              if '/torch/' not in f.filename and f.filename != __file__]
    where = frames[-1]
    return (f'{where.filename.rsplit("site-packages/", 1)[-1]}:'
            f'{where.lineno} ' + ' '.join(f.name for f in frames[-4:]))


class _HostReads(TorchDispatchMode):
    """Counts reads of device values by caller.

    On the CPU every tensor is a host tensor, so the device is modelled: a
    ``.cpu()`` result is on the host, and so is everything computed from
    host tensors only; reading any other tensor's values counts.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reads: List[str] = []
        self._host: set = set()
        self._patched: Dict[str, object] = {}

    def _storage(self, t: torch.Tensor) -> int:
        return t.untyped_storage().data_ptr()

    def _on_host(self, t: torch.Tensor) -> bool:
        return self._storage(t) in self._host

    def __enter__(self):
        mode = self
        for name in ('cpu', 'numpy', 'tolist'):
            real = getattr(torch.Tensor, name)
            self._patched[name] = real

            def read(t, *args, _real=real, _name=name, **kwargs):
                if not mode._on_host(t):
                    mode.reads.append(f'{_name} {_caller()}')
                out = _real(t, *args, **kwargs)
                if _name == 'cpu':
                    mode._host.add(mode._storage(out))
                return out

            setattr(torch.Tensor, name, read)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, real in self._patched.items():
            setattr(torch.Tensor, name, real)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [a for a in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor)]
        on_host = bool(inputs) and all(self._on_host(a) for a in inputs)
        if (func is torch.ops.aten._local_scalar_dense.default
                and not on_host):
            self.reads.append(f'item {_caller()}')
        out = func(*args, **kwargs)
        if on_host:
            for o in torch.utils._pytree.tree_leaves(out):
                if isinstance(o, torch.Tensor):
                    self._host.add(self._storage(o))
        return out


def _host_reads(model, imgs: torch.Tensor) -> List[str]:
    with _HostReads() as spy:
        _step(model, imgs)
    return [r for r in spy.reads if CPU_ONLY_READS not in r]


def test_training_step_aten_ops_at_most_0_6_of_builtin(pair):
    builtin, ours = pair
    imgs = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(0))
    ref, out = _aten_ops(builtin, imgs), _aten_ops(ours, imgs)
    ratio = sum(out.values()) / sum(ref.values())
    assert ratio <= MAX_OP_RATIO, (
        f'{sum(out.values())} aten ops vs the built-in\'s '
        f'{sum(ref.values())} ({ratio:.3f}x); most frequent: '
        f'{out.most_common(15)}')


def test_one_host_read_for_the_targets_and_one_for_all_matching(pair):
    """The built-in reads back once per image and set in its assigner, and
    per image for label checks and per set for its normaliser; ours reads
    the ground-truth summary once and all sets' costs once."""
    builtin, ours = pair
    imgs = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(0))
    reads = _host_reads(ours, imgs)
    matcher = [r for r in reads if 'hungarian_matcher' in r]
    assert len(matcher) == 1 and matcher[0].startswith('cpu '), reads
    assert len(reads) == 2, reads
    assert len(_host_reads(builtin, imgs)) >= 10 * len(reads)
