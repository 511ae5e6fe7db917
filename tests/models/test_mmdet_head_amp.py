"""Mixed precision in mmdet's detector with ``M2FDetHead``: bf16 and fp16
panoptic losses stay finite; matcher costs and losses stay float32.

The tiny demo panoptic detector (ResNet-18, 20 queries, 3 decoder layers:
4 prediction sets, 12 loss terms), random init, 64 x 64 images.
"""
from __future__ import annotations

import copy
import os.path as osp
import warnings

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData

from m2f_plugin.models.losses import set_criterion
from m2f_plugin.models.matcher import hungarian_matcher
from tests.helpers import CONFIGS

pytest.importorskip('mmdet')
from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.structures.mask import BitmapMasks  # noqa: E402

PANOPTIC_DEMO = osp.join(
    CONFIGS, 'demo',
    'mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py')
HALF = [torch.bfloat16, torch.float16]
S = 64


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One intra-op thread: this tiny model runs thousands of small ops,
    for which thread hand-offs cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def mmdet_scope():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def _config() -> Config:
    cfg = Config.fromfile(PANOPTIC_DEMO)
    head = cfg.model.panoptic_head
    head.num_points = head.matcher.num_points = 256  # the CPU's pace
    cfg.model.init_cfg = None
    return cfg


def _detector():
    torch.manual_seed(0)
    det = MODELS.build(_config().model)
    det.init_weights()
    return det.train()


@pytest.fixture(scope='module')
def detector():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return _detector()


def _samples(seed: int = 0, metas: bool = True):
    """Two images: things of classes 0-4, the stuff class 5 and a crowd
    (its thing class in the map, no mask); the second without things."""
    g = np.random.default_rng(seed)
    out = []
    for b in range(2):
        n = 3 if b == 0 else 0
        masks = np.zeros((n, S, S), np.uint8)
        sem = np.full((S, S), 255, np.int64)
        sem[S // 2:] = 5
        labels = g.integers(0, 5, n)
        for i in range(n):
            y, x = g.integers(0, S - 20, 2)
            masks[i, y:y + 16, x:x + 16] = 1
            sem[masks[i].astype(bool)] = labels[i]
        sem[:8, :8] = 1  # crowd
        s = DetDataSample(metainfo=dict(
            img_shape=(S, S), ori_shape=(S, S), pad_shape=(S, S),
            scale_factor=(1.0, 1.0),
            **(dict(batch_input_shape=(S, S)) if metas else {})))
        s.gt_instances = InstanceData(labels=torch.from_numpy(labels).long(),
                                      masks=BitmapMasks(masks, S, S))
        s.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(sem[None]))
        out.append(s)
    return out


def _images(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(
        seed))


def _total(losses) -> torch.Tensor:
    return sum(v for k, v in losses.items() if 'loss' in k)


@pytest.mark.parametrize('dtype', HALF)
def test_half_losses_finite_float32_and_close_to_fp32(detector, dtype):
    num_sets = _config().model.panoptic_head.transformer_decoder.num_layers + 1
    torch.manual_seed(5)
    fp32 = detector.loss(_images(), _samples())
    torch.manual_seed(5)
    with torch.autocast('cpu', dtype=dtype):
        half = detector.loss(_images(), _samples())
    assert set(half) == set(fp32) and len(half) == 3 * num_sets == 12
    for key, value in half.items():
        assert value.dtype == torch.float32, key
        assert torch.isfinite(value), key
    # measured 2.0e-4 (bf16), 6.7e-5 (fp16): 3x that; a half-precision
    # matcher or loss, or a flipped match, costs more
    ref = _total(fp32).item()
    tol = {torch.bfloat16: 6e-4, torch.float16: 2e-4}[dtype]
    assert abs(_total(half).item() - ref) / ref < tol, (half, fp32)


@pytest.mark.parametrize('dtype', HALF)
def test_matcher_and_losses_compute_in_float32(detector, dtype,
                                               monkeypatch):
    seen = {'head_out': [], 'costs': [], 'cost_inputs': [], 'cost_out': [],
            'loss_inputs': []}
    criterion = detector.panoptic_head.criterion

    def spy(module, name, record):
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            out = real(*args, **kwargs)
            record(args, out)
            return out

        monkeypatch.setattr(module, name, wrapped)

    def floats(args):
        return [a.dtype for a in args
                if torch.is_tensor(a) and a.is_floating_point()]

    spy(hungarian_matcher, 'point_sample',
        lambda a, out: seen['cost_inputs'].extend(floats(a[:1])))
    spy(hungarian_matcher, 'mask_costs',
        lambda a, out: seen['cost_out'].extend(o.dtype for o in out))
    spy(criterion.matcher, 'costs',
        lambda a, out: seen['costs'].append(out.dtype))
    for loss in (criterion.loss_cls, criterion.loss_mask,
                 criterion.loss_dice):
        spy(loss, 'forward', lambda a, out: seen['loss_inputs'].extend(
            floats(a) + [out.dtype]))
    real_criterion = set_criterion.SetCriterion.forward

    def spy_criterion(self, predictions, targets):
        seen['head_out'] += [t.dtype for t in predictions.class_logits +
                             predictions.mask_embeds]
        return real_criterion(self, predictions, targets)

    monkeypatch.setattr(set_criterion.SetCriterion, 'forward', spy_criterion)
    with torch.autocast('cpu', dtype=dtype):
        losses = detector.loss(_images(), _samples())
    # the premise: the head really ran in half precision
    assert dtype in seen['head_out']
    assert seen['costs'] == [torch.float32]  # all sets, one call
    assert set(seen['cost_inputs']) == {torch.float32}
    assert set(seen['cost_out']) == {torch.float32}
    assert set(seen['loss_inputs']) == {torch.float32}
    assert all(v.dtype == torch.float32 and torch.isfinite(v)
               for v in losses.values())


def _train_data(seed: int):
    """What the data loader gives ``train_step``: uint8 images and samples
    (the data preprocessor normalises, pads and stacks them)."""
    g = torch.Generator().manual_seed(seed)
    imgs = [torch.randint(0, 256, (3, S, S), generator=g, dtype=torch.uint8)
            for _ in range(2)]
    return dict(inputs=imgs, data_samples=_samples(seed, metas=False))


def _finite_params(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_step_under_amp_optim_wrapper(monkeypatch):
    """The config's optimizer under mmengine's ``AmpOptimWrapper`` (bf16):
    ``train_step`` runs the loss in its autocast context, then backward,
    gradient clipping and the step. The wrapper refuses to be built without
    CUDA: its device check is lifted here; on the CPU its loss scaler (a
    CUDA ``GradScaler``) disables itself, which bf16 does not need anyway."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)
    det = _detector()
    cfg = copy.deepcopy(_config().optim_wrapper)
    cfg.update(type='AmpOptimWrapper', dtype='bfloat16')
    with warnings.catch_warnings():
        # the CUDA GradScaler: deprecated, and disabled without CUDA
        warnings.filterwarnings('ignore', category=FutureWarning,
                                message=r'`torch\.cuda\.amp\.GradScaler')
        warnings.filterwarnings('ignore', category=UserWarning,
                                message=r'torch\.cuda\.amp\.GradScaler is '
                                'enabled, but CUDA is not available')
        wrapper = build_optim_wrapper(det, cfg)
    dtypes = []
    head = det.panoptic_head
    real = head.losses
    monkeypatch.setattr(head, 'losses', lambda p, t: (
        dtypes.append(p.class_logits[-1].dtype), real(p, t))[1])
    before = [p.detach().clone() for p in det.parameters()]
    for step in range(2):
        log = det.train_step(_train_data(step), wrapper)
        assert torch.isfinite(log['loss']), log
    assert dtypes == [torch.bfloat16] * 2
    assert _finite_params(det)
    assert any(not torch.equal(a, b) for a, b in zip(before,
                                                     det.parameters()))


def test_fp16_step_with_grad_scaler():
    """fp16 as on a GPU: autocast, a loss scaler, clipping, a step. Every
    step is applied: the scaled gradients are finite (the scaler found no
    inf / NaN and kept its scale), the optimizer counted the step and the
    parameters moved. The scale starts at 2**10: from the default 2**16
    the first three steps of this randomly initialised model overflow fp16
    (gradient norm about 120) and are skipped by design, which would hide
    gradients that are not finite at any scale."""
    det = _detector()
    optimizer = torch.optim.AdamW(det.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0**10)
    start_scale = scaler.get_scale()
    params = [p for p in det.parameters() if p.requires_grad]
    for step in range(2):
        before = [p.detach().clone() for p in params]
        with torch.autocast('cpu', dtype=torch.float16):
            loss = _total(det.loss(_images(step), _samples(step)))
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        assert torch.isfinite(grad_norm) and grad_norm > 0, grad_norm
        scaler.step(optimizer)
        scaler.update()
        # a skipped step would halve the scale and leave the weights
        assert scaler.get_scale() == start_scale, (step, scaler.get_scale())
        moved = sum(not torch.equal(a, p) for a, p in zip(before, params))
        assert moved > 0.9 * len(params), (step, moved, len(params))
    steps = {int(optimizer.state[p]['step']) for p in params
             if p in optimizer.state}
    assert steps == {2}
    assert _finite_params(det)
