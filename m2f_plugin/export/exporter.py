"""Build a trained model from its config and export it, image to result.

``export_model`` traces ``DeployedSegmentor`` with the TorchScript-based
exporter (dynamic image height and width), checks the file with ONNX's
checker and writes the metadata; the file appears only when all of that
succeeded.
"""
from __future__ import annotations

import os
import os.path as osp
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
from mmengine.config import Config, ConfigDict
from torch import nn

from ..postprocess import INSTANCE_OFFSET
from .graphs import DeployedSegmentor
from .metadata import class_info, metadata_props, write_metadata
from .preprocess import ImagePreprocess, PreprocessSpec
from .traceable_attention import traceable_attention

__all__ = ['LoadedModel', 'load_model', 'export_model', 'MIN_OPSET']

MIN_OPSET = 16  # GridSample (deformable attention's sampling)


@dataclass
class LoadedModel:
    """A model ready to export, with what its config says about it.

    Attributes:
        model: The segmentor (mmseg) or detector (mmdet), CPU, eval mode.
        cfg: Its config.
        family: ``mmseg`` or ``mmdet``.
        task: ``semantic``, ``panoptic`` or ``instance``.
    """

    model: nn.Module
    cfg: Config
    family: str
    task: str


def _plain_bn(obj):
    """SyncBN -> BN everywhere in a config (a CPU export has no process
    group)."""
    if isinstance(obj, dict):
        return {k: ('BN' if k == 'type' and v == 'SyncBN' else _plain_bn(v))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain_bn(v) for v in obj)
    return obj


def _family(model_cfg: dict) -> str:
    if 'decode_head' in model_cfg:
        return 'mmseg'
    if 'panoptic_head' in model_cfg:
        return 'mmdet'
    raise ValueError(
        f"export: model type {model_cfg.get('type')!r} has neither a "
        'decode_head (mmseg) nor a panoptic_head (mmdet Mask2Former); only '
        'Mask2Former models with M2FHead / M2FDetHead export')


def _default_task(family: str, test_cfg: dict) -> str:
    if family == 'mmseg':
        return 'semantic'
    if test_cfg.get('panoptic_on', True):
        return 'panoptic'
    return 'instance'


def load_model(config: Union[str, Config], checkpoint: Optional[str] = None,
               task: Optional[str] = None, whole: bool = False
               ) -> LoadedModel:
    """Build the config's model on the CPU and load its weights.

    SyncBN becomes BN and the backbone's pretrained ``init_cfg`` is dropped
    (nothing is downloaded): the weights come from ``checkpoint``, loaded
    strictly (the heads convert the toolboxes' built-in Mask2Former
    checkpoints on load), or stay random without one.

    Args:
        config: Config file or ``Config``.
        checkpoint: Checkpoint path, or None (random weights, for tests).
        task: ``semantic`` (mmseg models), ``panoptic`` or ``instance``
            (mmdet models); default: what the config's ``test_cfg`` turns on.
        whole: Export a ``mode='slide'`` semantic config as whole-image
            inference.

    Raises:
        ValueError: The model is not a Mask2Former of this package, the task
            does not fit it, or its test mode is ``slide`` without ``whole``.
    """
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    from mmengine.utils import import_modules_from_strings
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    import m2f_plugin  # noqa: F401  (registers the heads)
    model_cfg = _plain_bn(cfg.to_dict()['model'])
    family = _family(model_cfg)
    test_cfg = model_cfg.get('test_cfg') or {}
    task = task or _default_task(family, test_cfg)
    allowed = ('semantic', ) if family == 'mmseg' else ('panoptic', 'instance')
    if task not in allowed:
        raise ValueError(
            f'export: task {task!r} does not fit this {family} model; it '
            f'exports {" or ".join(allowed)}')
    if family == 'mmseg' and test_cfg.get('mode', 'whole') == 'slide':
        if not whole:
            raise ValueError(
                "export: this config's test_cfg.mode is 'slide' (sliding-"
                'window inference), which the exported graph does not '
                'reproduce. Pass --whole to export whole-image inference '
                '(the image resized as the test pipeline says, one forward '
                'pass), and check its accuracy with deploy_test.')
        model_cfg['test_cfg'] = dict(test_cfg, mode='whole')
    if family == 'mmdet':  # the PyTorch reference predicts the task too
        model_cfg['test_cfg'] = dict(test_cfg, **{f'{task}_on': True})
    model_cfg.pop('pretrained', None)
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg['backbone']['init_cfg'] = None
        model_cfg['backbone'].pop('pretrained', None)
    if family == 'mmseg':
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    else:
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    # the toolbox's scope for this build only: the caller's stays as it is
    with DefaultScope.overwrite_default_scope(family):
        model = MODELS.build(ConfigDict(model_cfg))
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                        logger='silent')
    model.cfg = cfg
    return LoadedModel(model.eval(), cfg, family, task)


def _trace_size(model: nn.Module, preprocess: ImagePreprocess,
                trace_hw: Tuple[int, int]) -> Tuple[int, int]:
    """An image size whose trace runs at every size.

    mmseg's ``VisionTransformer`` resizes its position embedding only when
    the patch grid differs from its own; traced at a size whose grid equals
    it, the resize would be missing from the graph. Such a size is moved.
    """
    backbone = getattr(model, 'backbone', None)
    if type(backbone).__name__ != 'VisionTransformer':
        return trace_hw
    patch = backbone.patch_size
    grid = tuple(s // patch for s in backbone.img_size)
    h, w = trace_hw
    for _ in range(8):
        inputs, _ = preprocess(torch.zeros(h, w, 3, dtype=torch.uint8))
        if tuple(s // patch for s in inputs.shape[-2:]) != grid:
            return h, w
        h, w = h + 2 * patch + 1, w + 3 * patch + 1
    raise ValueError('export: no trace size found whose patch grid differs '
                     f'from the position embedding grid {grid}')


def _output_axes(outputs) -> Dict[str, Dict[int, str]]:
    """Names of the outputs' free axes (else the exporter makes some up)."""
    axes = dict(labels={0: 'height', 1: 'width'},
                scores={1: 'height', 2: 'width'},
                panoptic={0: 'height', 1: 'width'}, segments={0: 'segments'})
    if 'masks' in outputs:  # instance outputs
        axes = dict(labels={0: 'instances'}, scores={0: 'instances'},
                    boxes={0: 'instances'},
                    masks={0: 'instances', 1: 'height', 2: 'width'})
    return {name: axes[name] for name in outputs}


def export_model(loaded: LoadedModel, out: str, with_scores: bool = False,
                 opset: int = 17, trace_hw: Tuple[int, int] = (161, 243)
                 ) -> Dict[str, object]:
    """Export ``loaded`` to ``out``: image (H, W, 3) uint8 -> its task's
    outputs (see ``TASK_OUTPUTS``), H and W dynamic.

    Args:
        loaded: From ``load_model``.
        out: The .onnx file to write (replaced only on success).
        with_scores: Semantic: add the per-class ``scores`` output.
        opset: ONNX opset, >= 16.
        trace_hw: Size of the random image traced (any: the graph is
            dynamic; odd sizes make size bugs visible; moved where a
            backbone would freeze it, see ``_trace_size``).

    Returns:
        ``path``, ``seconds`` (export), ``bytes``, ``opset``, ``task``,
        ``outputs``, ``exporter``, ``swapped_attention``.
    """
    import onnx
    if with_scores and loaded.task != 'semantic':
        raise ValueError(f'--with-scores is for semantic models; this is a '
                         f'{loaded.task} export')
    if opset < MIN_OPSET:
        raise ValueError(f'opset {opset} < {MIN_OPSET}: deformable attention '
                         'needs GridSample (opset 16+)')
    spec = PreprocessSpec.from_config(loaded.cfg, loaded.family)
    test_cfg = loaded.cfg.model.get('test_cfg') or {}
    preprocess = ImagePreprocess(spec)
    graph = DeployedSegmentor(loaded.model, preprocess, loaded.task, test_cfg,
                              with_scores).eval()
    trace_hw = _trace_size(loaded.model, preprocess, trace_hw)
    divisor = spec.size_divisor or 0
    if type(getattr(loaded.model, 'backbone', None)).__name__ == \
            'SwinTransformer' and divisor % 32:
        warnings.warn(
            'export: SwinTransformer pads each stage by Python amounts and '
            'this config does not pad its inputs to multiples of 32: the '
            'file is exact only at such sizes; set the data preprocessor\'s '
            'size_divisor=32 or verify with --check at your sizes')
    image = torch.randint(0, 256, (*trace_hw, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    outputs = list(graph.output_names)
    dynamic_axes = {'image': {0: 'height', 1: 'width'}}
    dynamic_axes.update(_output_axes(outputs))
    out_dir = osp.dirname(osp.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.onnx.part', dir=out_dir)
    os.close(fd)
    umask = os.umask(0)  # mkstemp's file is private; give it a new file's mode
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        start = time.perf_counter()
        with warnings.catch_warnings():
            # expected: shape-to-int conversions of fixed dims; --check and
            # the tests compare the file at untraced sizes
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            warnings.simplefilter('ignore', DeprecationWarning)
            warnings.filterwarnings('ignore', message='Constant folding')
            with torch.no_grad(), traceable_attention(loaded.model) as swapped:
                torch.onnx.export(
                    graph, (image, ), tmp, input_names=['image'],
                    output_names=outputs, dynamic_axes=dynamic_axes,
                    opset_version=opset, do_constant_folding=True,
                    dynamo=False)
        seconds = time.perf_counter() - start
        onnx.checker.check_model(tmp)
        classes, palette = class_info(loaded.cfg, loaded.family,
                                      graph.head.num_classes,
                                      getattr(graph.head, 'num_things_classes',
                                              0))
        num_things = (0 if loaded.task == 'semantic' else
                      graph.head.num_things_classes)
        write_metadata(tmp, metadata_props(
            loaded.task, classes, num_things, palette, spec.to_dict(),
            outputs, osp.basename(loaded.cfg.filename or ''),
            INSTANCE_OFFSET))
        os.replace(tmp, out)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return dict(path=out, seconds=seconds, bytes=osp.getsize(out),
                opset=opset, task=loaded.task, outputs=outputs,
                exporter='torchscript', swapped_attention=swapped)
