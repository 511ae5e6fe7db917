"""The test pipeline's resize and the data preprocessor as a traceable module.

``ImagePreprocess`` takes the raw decoded image, uint8 (H, W, 3), and does
what ``LoadImageFromFile -> Resize -> data preprocessor`` do at test time:
mmcv's keep-ratio or exact-size bilinear resize, the channel flip,
``(x - mean) / std`` and bottom/right padding. Every size is computed from
``torch._shape_as_tensor(image)`` with tensor ops, so a trace keeps H and W
free. ``PreprocessSpec.from_config`` reads these settings from a config and
refuses any test-time transform it cannot reproduce.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['ImagePreprocess', 'PreprocessSpec', 'padded_size', 'resized_size']

_LOADERS = ('LoadImageFromFile', 'LoadImageFromNDArray')
_IGNORED = ('LoadAnnotations', 'LoadPanopticAnnotations', 'PackSegInputs',
            'PackDetInputs')
_RESIZE_ARGS = ('scale', 'scale_factor', 'keep_ratio', 'interpolation',
                'backend', 'clip_object_border')
_FAMILY_OF_MODEL = {'EncoderDecoder': 'mmseg', 'M2FEncoderDecoder': 'mmseg',
                    'Mask2Former': 'mmdet'}
_FAMILY_OF_PREPROCESSOR = {'SegDataPreProcessor': 'mmseg',
                           'DetDataPreprocessor': 'mmdet'}


def _type_name(cfg: Mapping) -> str:
    """``'mmseg.Resize'`` or a class -> ``'Resize'``."""
    t = cfg.get('type', '')
    return t.__name__ if isinstance(t, type) else str(t).rsplit('.', 1)[-1]


def _pair(value: Any, cast: type) -> Optional[tuple]:
    """None, or mmcv's reading of a scale: a number ``s`` means ``(s, s)``."""
    if value is None:
        return None
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f'expected a number or a pair, got {value!r}')
    return tuple(cast(v) for v in pair)


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """What the exported graph does to the raw image.

    Attributes:
        channel_order: ``'bgr'`` or ``'rgb'``: what ``LoadImageFromFile``
            yields, hence what the graph expects.
        resize: None, or ``dict(scale, scale_factor, keep_ratio)`` as mmcv's
            ``Resize`` reads them: ``scale`` (w, h) is the exact size, or with
            ``keep_ratio`` the bound (long edge <= max, short edge <= min);
            exactly one of ``scale`` and ``scale_factor`` (fw, fh) is set.
        interpolation: ``'bilinear'`` (cv2 INTER_LINEAR), the only one.
        to_float32: The loader makes the image float32, so the resized image
            is not rounded to grey levels.
        mean: Per channel, in the order after ``to_rgb``.
        std: Per channel, in the order after ``to_rgb``.
        to_rgb: Reverse the channels (``bgr_to_rgb`` or ``rgb_to_bgr``).
        size_divisor: Pad H and W up to a multiple of this, or None.
        pad_size: Pad to at least this (h, w), or None.
        pad_value: The value of padded pixels (after normalisation).
    """

    channel_order: str = 'bgr'
    resize: Optional[Dict[str, Any]] = None
    interpolation: str = 'bilinear'
    to_float32: bool = False
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    to_rgb: bool = False
    size_divisor: Optional[int] = None
    pad_size: Optional[Tuple[int, int]] = None
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        # Normalise types, so that a spec read back from JSON compares equal.
        put = functools.partial(object.__setattr__, self)
        if self.channel_order not in ('bgr', 'rgb'):
            raise ValueError(f'channel_order {self.channel_order!r}: '
                             "expected 'bgr' or 'rgb'")
        if self.interpolation != 'bilinear':
            raise ValueError(f'interpolation {self.interpolation!r}: only '
                             "'bilinear' (cv2 INTER_LINEAR) is exported")
        if self.resize is not None:
            scale = _pair(self.resize.get('scale'), int)
            factor = _pair(self.resize.get('scale_factor'), float)
            if (scale is None) == (factor is None):
                raise ValueError(f'resize {self.resize!r}: expected exactly '
                                 'one of scale and scale_factor')
            put('resize', dict(scale=scale, scale_factor=factor, keep_ratio=bool(
                self.resize.get('keep_ratio', False))))
        put('mean', tuple(float(m) for m in self.mean))
        put('std', tuple(float(s) for s in self.std))
        divisor = self.size_divisor
        put('size_divisor', int(divisor) if divisor and divisor > 1 else None)
        put('pad_size', _pair(self.pad_size, int))
        if self.size_divisor and self.pad_size:
            raise ValueError('set at most one of size_divisor and pad_size')
        put('pad_value', float(self.pad_value))

    def to_dict(self) -> Dict[str, Any]:
        """Plain, JSON-serialisable fields (tuples become lists in JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'PreprocessSpec':
        """Inverse of ``to_dict``, also after a JSON round trip."""
        return cls(**data)

    @classmethod
    def from_config(cls, cfg: Any, task_family: Optional[str] = None,
                    pipeline: Optional[Iterable[Mapping]] = None
                    ) -> 'PreprocessSpec':
        """Read the test pipeline and the model's data preprocessor.

        Args:
            cfg: An mmengine ``Config`` (or a dict with its fields).
            task_family: ``'mmseg'`` or ``'mmdet'``; None infers it from the
                model type, else the data preprocessor type.
            pipeline: Instead of ``cfg.test_pipeline`` (which, when absent,
                is ``cfg.test_dataloader.dataset.pipeline``).

        Raises:
            ValueError: A transform, preprocessor or option the export does
                not reproduce.
        """
        model = cfg.get('model') or {}
        prep = model.get('data_preprocessor')
        if not prep:
            raise ValueError('the config has no model.data_preprocessor')
        prep_type = _type_name(prep)
        family = task_family or _FAMILY_OF_MODEL.get(_type_name(model)) \
            or _FAMILY_OF_PREPROCESSOR.get(prep_type)
        if family not in ('mmseg', 'mmdet') \
                or _FAMILY_OF_PREPROCESSOR.get(prep_type) != family:
            raise ValueError(f'data preprocessor {prep_type} with task family '
                             f'{family!r}: supported are SegDataPreProcessor '
                             "('mmseg') and DetDataPreprocessor ('mmdet')")
        if pipeline is None:
            pipeline = cfg.get('test_pipeline') or (cfg.get(
                'test_dataloader') or {}).get('dataset', {}).get('pipeline')
        if not pipeline:
            raise ValueError('the config has no test_pipeline')
        return cls(**_read_pipeline(list(pipeline)),
                   **_read_preprocessor(prep, family))


def _read_pipeline(pipeline: list) -> Dict[str, Any]:
    """The loader's and the (single) Resize's settings."""
    names = [_type_name(t) for t in pipeline]
    unsupported = [n for n in names
                   if n not in _LOADERS + _IGNORED + ('Resize',)]
    if unsupported or not names or names[0] not in _LOADERS \
            or names.count('Resize') > 1:
        found = ', '.join(unsupported) or ' -> '.join(names)
        raise ValueError(
            f'cannot export the test pipeline ({found}): the export reproduces '
            'only LoadImageFromFile -> Resize (at most one) -> the data '
            'preprocessor; annotation loaders and Pack*Inputs are ignored. '
            'Edit the config\'s test_pipeline (and test_dataloader\'s) to this '
            'form, or pass a pipeline override (PreprocessSpec.from_config('
            'cfg, pipeline=[...])).')
    load = pipeline[0]
    if load.get('color_type', 'color') not in ('color', 'color_ignore_orientation'):
        raise ValueError(f"color_type {load['color_type']!r}: not colour")
    if load.get('imdecode_backend') == 'tifffile':
        raise ValueError('imdecode_backend tifffile: channel order unknown')
    out: Dict[str, Any] = dict(channel_order=load.get('channel_order', 'bgr'),
                               to_float32=bool(load.get('to_float32', False)))
    for step in pipeline:
        if _type_name(step) != 'Resize':
            continue
        extra = set(step) - set(_RESIZE_ARGS) - {'type', '_scope_'}
        if extra:
            raise ValueError(f'Resize options not exported: {sorted(extra)}')
        if step.get('backend', 'cv2') != 'cv2':
            # Pillow's bilinear filter antialiases when downscaling.
            raise ValueError(f"Resize backend {step['backend']!r}: only cv2")
        out['interpolation'] = step.get('interpolation', 'bilinear')
        scale = step.get('scale')
        out['resize'] = dict(
            scale=scale, keep_ratio=step.get('keep_ratio', False),
            scale_factor=None if scale is not None else step.get('scale_factor'))
    return out


def _read_preprocessor(prep: Mapping, family: str) -> Dict[str, Any]:
    """Normalisation, channel flip and test-time padding."""
    mean, std = prep.get('mean'), prep.get('std')
    if (mean is None) != (std is None):
        raise ValueError('the data preprocessor needs both mean and std')
    out: Dict[str, Any] = dict(
        mean=mean if mean is not None else (0.0, 0.0, 0.0),
        std=std if std is not None else (1.0, 1.0, 1.0),
        to_rgb=bool(prep.get('bgr_to_rgb') or prep.get('rgb_to_bgr')))
    if family == 'mmdet':
        out.update(size_divisor=prep.get('pad_size_divisor', 1),
                   pad_value=prep.get('pad_value', 0))
        return out
    # SegDataPreProcessor pads at test time only as test_cfg says (its
    # size/size_divisor are for training), with exactly one of the two.
    test_cfg = prep.get('test_cfg') or {}
    size, divisor = test_cfg.get('size'), test_cfg.get('size_divisor')
    if test_cfg and (size is None) == (divisor is None):
        raise ValueError(f'data_preprocessor.test_cfg {dict(test_cfg)}: '
                         'expected exactly one of size and size_divisor')
    out.update(size_divisor=divisor, pad_size=size,
               pad_value=prep.get('pad_val', 0))
    return out


def _round_half_up(x: Tensor) -> Tensor:
    """``int(x + 0.5)`` of mmcv's ``_scale_size``, for x >= 0."""
    return torch.floor(x + 0.5).to(torch.int64)


def resized_size(h: Tensor, w: Tensor, resize: Optional[Mapping[str, Any]]
                 ) -> Tuple[Tensor, Tensor]:
    """The (h, w) that mmcv's ``Resize`` (as ``PreprocessSpec.resize``
    says) gives an h x w image; int64 tensors (0-dim, or any shape) in and
    out."""
    if resize is None:
        return h, w
    # float64 so that the rounding matches mmcv's Python floats bit for bit;
    # constants via full_like because ``2048 / t`` runs as 2048 * (1 / t).
    hf, wf = h.to(torch.float64), w.to(torch.float64)
    if resize['scale'] is not None:
        tw, th = (torch.full_like(hf, float(s)) for s in resize['scale'])
    else:
        fw, fh = resize['scale_factor']
        tw = _round_half_up(wf * fw).to(torch.float64)
        th = _round_half_up(hf * fh).to(torch.float64)
    if not resize['keep_ratio']:
        return th.to(torch.int64), tw.to(torch.int64)
    factor = torch.minimum(
        torch.maximum(tw, th) / torch.maximum(hf, wf),
        torch.minimum(tw, th) / torch.minimum(hf, wf))
    return _round_half_up(hf * factor), _round_half_up(wf * factor)


def padded_size(h: Tensor, w: Tensor, size_divisor: Optional[int],
                pad_size: Optional[Tuple[int, int]]) -> Tuple[Tensor, Tensor]:
    """The padded (h, w): up to a multiple of ``size_divisor``, or at least
    ``pad_size``; 0-dim int64 tensors in and out."""
    if size_divisor:
        return tuple(torch.div(s + size_divisor - 1, size_divisor,
                               rounding_mode='floor') * size_divisor
                     for s in (h, w))
    if pad_size:
        return torch.clamp(h, min=pad_size[0]), torch.clamp(w, min=pad_size[1])
    return h, w


class ImagePreprocess(nn.Module):
    """Raw image -> the model's input, as the config's test time does.

    Args:
        spec: What to do; see ``PreprocessSpec``.
    """

    def __init__(self, spec: PreprocessSpec) -> None:
        super().__init__()
        self.spec = spec
        for name in ('mean', 'std'):
            self.register_buffer(name, torch.tensor(getattr(spec, name)).view(
                1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor]:
        """Resize, flip, normalise and pad one image.

        Args:
            image: uint8 (H, W, 3) in ``spec.channel_order``.

        Returns:
            ``inputs``, float32 (1, 3, Hp, Wp): normalised, padded at the
            bottom and right; ``img_hw``, int64 (2,): (h, w) after the resize,
            before padding.
        """
        spec = self.spec
        shape = torch._shape_as_tensor(image)
        h, w = resized_size(shape[0], shape[1], spec.resize)
        x = image.permute(2, 0, 1).unsqueeze(0).float()
        if spec.resize is not None:
            x = F.interpolate(x, size=(h, w), mode='bilinear',
                              align_corners=False)
            if not spec.to_float32:
                # cv2 resizes a uint8 image to uint8 levels.
                x = x.round().clamp(0, 255)
        if spec.to_rgb:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        hp, wp = padded_size(h, w, spec.size_divisor, spec.pad_size)
        x = F.pad(x, (0, wp - w, 0, hp - h), value=spec.pad_value)
        return x, torch.stack([h, w])
