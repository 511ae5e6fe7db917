"""``ImagePreprocess`` equals the toolboxes' test pipeline + data preprocessor.

The reference runs the config's own test pipeline (annotation loaders
dropped: there are no labels) on a PNG, then the model's data preprocessor
built from mmseg's/mmdet's registry. Ours runs eagerly and as an ONNX graph
in onnxruntime, traced at one size and run at others (landscape, portrait,
up- and downscaled). cv2 resizes uint8 images in fixed point, ours in float
and then rounds, so resized pixels may differ by one grey level, never more:
on uniform noise about 12.7% of them where both axes are resized (cv2's
truncations bias its result by about -0.13 level), about 9.4% where the
aspect ratio changes; a float image (``to_float32``) differs by < 0.04
level.
"""
from __future__ import annotations

import copy
import importlib
import json
import time
import warnings

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from mmcv.image.geometric import _scale_size, rescale_size
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope

from m2f_plugin.export import ImagePreprocess, PreprocessSpec, resized_size

DEMO = 'configs/demo/mask2former_r18-tiny_1xb8-300it_synthetic-128x128.py'
ADE = 'configs/mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
COCO = 'configs/mask2former_coco/mask2former_r50_8xb2-lsj-50e_coco'
COCO_PANOPTIC, COCO_INSTANCE = f'{COCO}-panoptic.py', f'{COCO}.py'
TRACE_HW = (120, 160)
# Not traced: landscape, portrait, and one that every config downscales.
SIZES = [(97, 131), (301, 203), (1001, 1301)]
LABEL_LOADERS = ('LoadAnnotations', 'LoadPanopticAnnotations')


def _variant(path, pipeline, **preprocessor):
    """The demo config with another test pipeline and preprocessor options."""
    cfg = Config.fromfile(path)
    cfg.test_pipeline = pipeline
    for key, value in preprocessor.items():
        cfg.model.data_preprocessor[key] = value  # replaced, not merged
    return cfg


def _cases():
    load, pack = dict(type='LoadImageFromFile'), dict(type='PackSegInputs')
    return {
        'demo': (lambda: Config.fromfile(DEMO), 'mmseg'),
        'ade20k': (lambda: Config.fromfile(ADE), 'mmseg'),
        'coco_panoptic': (lambda: Config.fromfile(COCO_PANOPTIC), 'mmdet'),
        # to_float32: cv2 resizes in float, nothing is rounded.
        'coco_instance': (lambda: Config.fromfile(COCO_INSTANCE), 'mmdet'),
        # Exact-size resize, pad to at least a size, rgb_to_bgr, pad value.
        'exact_size': (lambda: _variant(DEMO, [
            load, dict(type='Resize', scale=(200, 150), keep_ratio=False),
            pack], test_cfg=dict(size=(160, 256)), pad_val=-7,
            bgr_to_rgb=False, rgb_to_bgr=True), 'mmseg'),
        # No resize; pad to at least a size (larger images stay unpadded).
        'pad_to_size': (lambda: _variant(DEMO, [load, pack],
                                         test_cfg=dict(size=(256, 256)),
                                         pad_val=3), 'mmseg'),
        # scale_factor, kept ratio, float image.
        'scale_factor': (lambda: _variant(DEMO, [
            dict(type='LoadImageFromFile', to_float32=True),
            dict(type='Resize', scale_factor=(0.7, 1.3), keep_ratio=True),
            pack]), 'mmseg'),
    }


CASES = _cases()


@pytest.fixture(scope='module')
def mmdet_modules():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)


def _reference(cfg, family, png):
    """Test pipeline + data preprocessor -> ((1, 3, Hp, Wp), img_shape)."""
    registry = importlib.import_module(f'{family}.registry').MODELS
    pipeline = [t for t in cfg.test_pipeline
                if t['type'] not in LABEL_LOADERS]
    with DefaultScope.overwrite_default_scope(family):
        results = Compose(pipeline)(dict(img_path=str(png), img_id=0))
        preprocessor = registry.build(cfg.model.data_preprocessor)
        data = preprocessor(pseudo_collate([results]), training=False)
    return data['inputs'], tuple(data['data_samples'][0].img_shape)


def _compare(ours, ref, std):
    """Differences in grey levels (normalised differences times std)."""
    levels = (torch.as_tensor(ours) - ref).abs() * torch.tensor(std).view(
        1, 3, 1, 1)
    return dict(max_abs=float((torch.as_tensor(ours) - ref).abs().max()),
                max_levels=float(levels.max()),
                share_1=float((levels > 0.5).float().mean()),
                share_gt1=float((levels > 1.001).float().mean()))


def _export(module, path):
    image = torch.zeros(*TRACE_HW, 3, dtype=torch.uint8)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # A size read as a Python number would freeze the traced size.
        warnings.simplefilter('error', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)  # legacy exporter
        torch.onnx.export(
            module, (image,), str(path), dynamo=False, opset_version=17,
            input_names=['image'], output_names=['inputs', 'img_hw'],
            dynamic_axes={'image': {0: 'height', 1: 'width'},
                          'inputs': {2: 'padded_height', 3: 'padded_width'}})
    print(f'export {time.perf_counter() - start:.2f} s')
    return ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])


@pytest.mark.parametrize('name', list(CASES))
def test_matches_toolbox(name, tmp_path, mmdet_modules):
    make_cfg, family = CASES[name]
    cfg = make_cfg()
    spec = PreprocessSpec.from_config(cfg)
    module = ImagePreprocess(spec).eval()
    session = _export(module, tmp_path / 'preprocess.onnx')
    rng = np.random.default_rng(0)
    for h, w in SIZES:
        # Noise: the worst case for interpolation differences.
        png = tmp_path / f'{h}x{w}.png'
        cv2.imwrite(str(png), rng.integers(0, 256, (h, w, 3), np.uint8))
        image = cv2.imread(str(png))  # what LoadImageFromFile reads (BGR)
        ref, ref_hw = _reference(cfg, family, png)
        with torch.no_grad():
            eager, eager_hw = module(torch.from_numpy(image))
        onnx_out, onnx_hw = session.run(None, {'image': image})
        assert eager.dtype == torch.float32 and onnx_out.dtype == np.float32
        assert eager_hw.dtype == torch.int64 and onnx_hw.dtype == np.int64
        for what, out, hw in (('eager', eager, eager_hw),
                              ('onnx', onnx_out, onnx_hw)):
            assert tuple(out.shape) == tuple(ref.shape), (what, h, w)
            assert tuple(int(v) for v in hw) == ref_hw, (what, h, w)
            _check(f'{name} {h}x{w} {what} vs toolbox',
                   _compare(out, ref, spec.std), spec)
        _check(f'{name} {h}x{w} onnx vs eager',
               _compare(onnx_out, eager, spec.std), spec)


def _check(label, stats, spec):
    """Bounds measured on uniform noise, the worst case (up to 12.8% of
    pixels one level off where both axes are resized, see the module doc)."""
    print(label, ' '.join(f'{k}={v:.3g}' for k, v in stats.items()))
    if spec.resize is None:
        assert stats['max_abs'] == 0, label
    elif not spec.to_float32:
        assert stats['share_gt1'] == 0 and stats['max_levels'] < 1.001, label
        assert stats['share_1'] < 0.15, label
    else:
        assert stats['max_levels'] < 0.05, label


@pytest.mark.parametrize('resize', [
    dict(scale=(2048, 512), keep_ratio=True),
    dict(scale=(1333, 800), keep_ratio=True),
    dict(scale=(2560, 640), keep_ratio=True),
    dict(scale_factor=(0.7, 1.3), keep_ratio=True),
    dict(scale_factor=(0.5, 0.5), keep_ratio=False),
    dict(scale=(200, 150), keep_ratio=False),
])
def test_resized_size_matches_mmcv(resize):
    """Bit-for-bit the sizes of mmcv's Resize, on 20000 random sizes."""
    spec = PreprocessSpec(resize=resize)
    hw = np.random.default_rng(1).integers(1, 4000, (20000, 2))
    h, w = resized_size(*torch.from_numpy(hw).T, spec.resize)
    scale, factor = spec.resize['scale'], spec.resize['scale_factor']
    for (old_h, old_w), new_h, new_w in zip(hw.tolist(), h.tolist(),
                                            w.tolist()):
        target = scale or _scale_size((old_w, old_h), factor)
        if spec.resize['keep_ratio']:
            target = rescale_size((old_w, old_h), target)
        assert (new_w, new_h) == target, (old_h, old_w)


def test_spec_json_round_trip():
    for make_cfg, _ in CASES.values():
        spec = PreprocessSpec.from_config(make_cfg())
        text = json.dumps(spec.to_dict())
        assert PreprocessSpec.from_dict(json.loads(text)) == spec
    spec = PreprocessSpec.from_config(Config.fromfile(ADE))
    assert spec.to_dict() == dict(
        channel_order='bgr', interpolation='bilinear', to_float32=False,
        resize=dict(scale=(2048, 512), scale_factor=None, keep_ratio=True),
        mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
        to_rgb=True, size_divisor=32, pad_size=None, pad_value=0.0)


def test_task_family():
    cfg = Config.fromfile(COCO_PANOPTIC)
    assert PreprocessSpec.from_config(cfg, 'mmdet').size_divisor == 32
    with pytest.raises(ValueError, match='DetDataPreprocessor'):
        PreprocessSpec.from_config(cfg, 'mmseg')


@pytest.mark.parametrize('bad, named', [
    (dict(type='RandomFlip', prob=0.5), 'RandomFlip'),
    (dict(type='TestTimeAug', transforms=[]), 'TestTimeAug'),
    (dict(type='Pad', size_divisor=32), 'Pad'),
    (dict(type='RandomResize', scale=(64, 64), keep_ratio=True),
     'RandomResize'),
])
def test_unsupported_transform(bad, named):
    cfg = Config.fromfile(ADE)
    pipeline = copy.deepcopy(cfg.test_pipeline)
    pipeline.insert(2, bad)
    with pytest.raises(ValueError, match=rf'pipeline \({named}\)') as err:
        PreprocessSpec.from_config(cfg, pipeline=pipeline)
    assert 'LoadImageFromFile -> Resize' in str(err.value)
    cfg.test_pipeline = pipeline
    with pytest.raises(ValueError, match=named):
        PreprocessSpec.from_config(cfg)


def test_tta_pipeline_and_bad_options():
    cfg = Config.fromfile(ADE)
    with pytest.raises(ValueError, match='TestTimeAug'):
        PreprocessSpec.from_config(cfg, pipeline=cfg.tta_pipeline)
    load = dict(type='LoadImageFromFile')
    for resize, match in ((dict(interpolation='bicubic'), 'bicubic'),
                          (dict(backend='pillow'), 'pillow')):
        pipeline = [load, dict(type='Resize', scale=(64, 64), **resize)]
        with pytest.raises(ValueError, match=match):
            PreprocessSpec.from_config(cfg, pipeline=pipeline)
    with pytest.raises(ValueError, match='Resize -> Resize'):
        PreprocessSpec.from_config(
            cfg, pipeline=[load] + cfg.test_pipeline[1:2] * 2)
    cfg.model.data_preprocessor.test_cfg = dict(size=(64, 64), size_divisor=32)
    with pytest.raises(ValueError, match='test_cfg'):
        PreprocessSpec.from_config(cfg)
