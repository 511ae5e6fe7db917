"""Export a Mask2Former (``M2FHead``) segmentor to ONNX and check it.

The graph maps a normalised image (1, 3, H, W) to per-class logits
(1, K, H, W) and, unless ``--no-labels``, the label map (1, H, W) (int64
argmax). Multi-scale deformable attention runs its PyTorch ``grid_sample``
path (ONNX ``GridSample``, opset >= 16) whatever the config says.

    python -m m2f_plugin.tools.export_onnx CONFIG [--checkpoint CKPT] \\
        --out model.onnx --shape H W [--dynamic] [--opset 17] \\
        [--check IMG ...]

``--dynamic`` makes H and W free axes. ``--check`` runs onnxruntime on the
given images and compares with the PyTorch model's own inference path
(``EncoderDecoder.encode_decode``): max abs logit difference and label-map
agreement; the exit status is 1 if they miss ``--atol`` /
``--min-agreement``. See docs/export.md for the limits.
"""
from __future__ import annotations

import argparse
import contextlib
import os.path as osp
import time
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config
from torch import Tensor, nn

__all__ = [
    'build_model', 'force_pytorch_msda', 'M2FOnnxWrapper',
    'TraceableMultiheadAttention', 'traceable_attention',
    'dynamic_export_problems', 'export_onnx',
    'preprocess_image', 'check_onnx', 'main'
]

MIN_OPSET = 16  # GridSample


def _replace_syncbn(obj):
    """SyncBN -> BN everywhere in a config (CPU export has no process group)."""
    if isinstance(obj, dict):
        return {k: ('BN' if k == 'type' and v == 'SyncBN' else
                    _replace_syncbn(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace_syncbn(v) for v in obj)
    return obj


def _load_config(config: Union[str, Config, dict]) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return Config(config)
    return Config.fromfile(config)


def build_model(config: Union[str, Config, dict],
                checkpoint: Optional[str] = None) -> nn.Module:
    """Build the segmentor of ``config`` on the CPU, ready to export.

    SyncBN becomes BN and the backbone's pretrained ``init_cfg`` is dropped
    (nothing is downloaded): the weights come from ``checkpoint`` (loaded
    strictly; mmseg built-in Mask2Former checkpoints are converted on load by
    ``M2FHead``), or stay random without one. Deformable attention is forced
    to its PyTorch path (``force_pytorch_msda``).

    Args:
        config: Config file, ``Config`` or a dict with a ``model`` key.
        checkpoint: Checkpoint path or URL, or None.

    Returns:
        The model in eval mode.
    """
    from mmengine.runner import load_checkpoint
    from mmengine.utils import import_modules_from_strings
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    cfg = _load_config(config)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    import m2f_plugin  # noqa: F401  (registers M2FHead & co.)
    register_all_modules(init_default_scope=True)
    model_cfg = _replace_syncbn(cfg.to_dict()['model'])
    model_cfg.pop('pretrained', None)
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg['backbone']['init_cfg'] = None
        model_cfg['backbone'].pop('pretrained', None)
    model = MODELS.build(model_cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    force_pytorch_msda(model)
    return model.eval()


def force_pytorch_msda(model: nn.Module) -> int:
    """Switch ``model`` to its exportable paths (``prepare_for_export``:
    the PyTorch deformable attention, no per-size caches, the one-step
    per-class map). Returns the number of deformable-attention layers."""
    from m2f_plugin.accel.export import prepare_for_export
    return prepare_for_export(model)


def _level_shapes(feats: Sequence[Tensor], num_levels: int) -> Tensor:
    """(L, 2) int64 (H, W) of the pixel decoder's encoder levels, coarse to
    fine, computed from the tensors (``Shape`` ops in a trace, not
    constants)."""
    n = len(feats)
    return torch.stack([
        torch._shape_as_tensor(feats[n - 1 - i])[-2:]
        for i in range(num_levels)
    ])


class TraceableMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (no masks) in plain ops, for a dynamic trace.

    torch's own implementation freezes the key length into a ``Reshape`` of
    the legacy ONNX trace, so a model with it (mmseg's MiT, ViT, ... through
    mmcv's ``MultiheadAttention``) only runs at the traced size.
    ``traceable_attention`` swaps this in for the export; it keeps the wrapped
    module (and so its weights) as ``mha``.

    Args:
        mha: The module to replace.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if mha.bias_k is not None or mha.add_zero_attn or \
                not mha._qkv_same_embed_dim:
            raise NotImplementedError(
                'export_onnx: nn.MultiheadAttention with bias_k/bias_v, '
                'add_zero_attn or kdim/vdim != embed_dim is not supported')
        self.mha = mha

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True,
                attn_mask: Optional[Tensor] = None,
                average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, None]:
        """As ``nn.MultiheadAttention.forward`` in eval mode, without masks;
        query (L, B, C) and key/value (S, B, C) (batch first if the module
        is). Returns (output, None): no attention weights."""
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise NotImplementedError('export_onnx: attention masks in '
                                      'nn.MultiheadAttention are not supported')
        m = self.mha
        if m.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        w_q, w_k, w_v = m.in_proj_weight.chunk(3)
        b_q, b_k, b_v = (m.in_proj_bias.chunk(3) if m.in_proj_bias is not None
                         else (None, None, None))

        def split_heads(x: Tensor) -> Tensor:  # (L, B, C) -> (B, h, L, C/h)
            return x.reshape(x.shape[0], -1, m.num_heads,
                             m.head_dim).permute(1, 2, 0, 3)

        out = torch.nn.functional.scaled_dot_product_attention(
            split_heads(torch.nn.functional.linear(query, w_q, b_q)),
            split_heads(torch.nn.functional.linear(key, w_k, b_k)),
            split_heads(torch.nn.functional.linear(value, w_v, b_v)))
        out = m.out_proj(out.permute(2, 0, 1, 3).flatten(2))  # (L, B, C)
        return (out.transpose(0, 1) if m.batch_first else out), None


@contextlib.contextmanager
def traceable_attention(model: nn.Module) -> Iterator[int]:
    """Temporarily replace every ``nn.MultiheadAttention`` in ``model`` by
    ``TraceableMultiheadAttention``; yields how many were replaced."""
    swapped = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children()
               if isinstance(child, nn.MultiheadAttention)]
    for parent, name, child in swapped:
        setattr(parent, name, TraceableMultiheadAttention(child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


class M2FOnnxWrapper(nn.Module):
    """The exported function: normalised image -> logits [, label map].

    The wrapped model is used as is, with one exception during ``forward``:
    ``M2FPixelDecoder`` turns the levels' sizes into a tensor with
    ``torch.as_tensor``, which a trace records as a constant; a forward
    pre-hook on its encoder hands it the same (H, W) computed from the
    feature tensors instead, so H and W stay symbolic in a dynamic export.
    In eager mode the values are identical.

    Args:
        model: An mmseg ``EncoderDecoder`` with an ``M2FHead``.
        with_labels: Also return the argmax label map.
    """

    def __init__(self, model: nn.Module, with_labels: bool = True) -> None:
        super().__init__()
        from m2f_plugin.models.heads import M2FHead
        if not isinstance(getattr(model, 'decode_head', None), M2FHead):
            raise TypeError('export_onnx expects a segmentor whose decode_head '
                            f'is an M2FHead, got {type(model).__name__}')
        self.model = model
        self.with_labels = with_labels

    def forward(self, img: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """img (1, 3, H, W) -> logits (1, K, H, W) [, labels (1, H, W)]."""
        from m2f_plugin.models.heads import semantic_logits
        head = self.model.decode_head
        feats = self.model.extract_feat(img)
        pixel_decoder = head.pixel_decoder
        shapes = _level_shapes(head._transform_inputs(feats),
                               pixel_decoder.num_levels)
        sizes = shapes.prod(1)
        starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])

        def dynamic_shapes(module, args):
            query, query_pos, ref, _, _ = args
            return query, query_pos, ref, shapes, starts

        handle = pixel_decoder.encoder.register_forward_pre_hook(
            dynamic_shapes)
        try:
            cls_logits, mask_logits = head.prediction_sets(feats).last()
        finally:
            handle.remove()
        logits = semantic_logits(cls_logits, mask_logits, img.shape[-2:],
                                 head.align_corners, chunk=0)
        if self.with_labels:
            return logits, logits.argmax(1)
        return logits


def _annotate_outputs(path: str, num_classes: int) -> None:
    """Write the known output dims (batch 1, K classes) into the graph.

    In a dynamic export the exporter's shape inference leaves them as
    generated names (e.g. ``Einsumlogits_dim_0``) although they are fixed.
    """
    import onnx
    m = onnx.load(path)
    for out in m.graph.output:
        dims = out.type.tensor_type.shape.dim
        dims[0].dim_value = 1
        if out.name == 'logits':
            dims[1].dim_value = num_classes
    onnx.save(m, path)


def dynamic_export_problems(model: nn.Module, shape: Tuple[int, int]
                            ) -> Tuple[List[str], List[str]]:
    """Known backbone traps of a dynamic trace at ``shape``.

    Returns:
        (errors, warnings): errors make the export wrong at any other size;
        warnings restrict the sizes it is exact for.
    """
    errors, notes = [], []
    backbone = getattr(model, 'backbone', None)
    name = type(backbone).__name__
    h, w = shape
    if name == 'VisionTransformer':
        p = backbone.patch_size
        grid = tuple(s // p for s in backbone.img_size)
        if (h // p, w // p) == grid:
            errors.append(
                f'VisionTransformer: at --shape {h} {w} the patch grid equals '
                f'the position embedding\'s {grid}, so the trace skips its '
                'resize and only runs at this size; trace at another size '
                f'(e.g. --shape {h - 2 * p} {w - 2 * p})')
    elif name == 'SwinTransformer':
        notes.append(
            'SwinTransformer: its padding amounts are Python ints in a trace; '
            'the export is exact for inputs whose H and W are multiples of 32 '
            'if the traced size is one too and needs window padding at every '
            'stage (e.g. 512x512 for window 7, 640x640 for window 12); pad '
            'inputs to multiples of 32 and verify with --check')
    return errors, notes


def export_onnx(model: nn.Module, out: str, shape: Tuple[int, int],
                dynamic: bool = False, opset: int = 17,
                with_labels: bool = True) -> Dict[str, object]:
    """Export ``model`` to ``out`` with the TorchScript-based exporter.

    Args:
        model: Segmentor with an ``M2FHead`` (see ``build_model``).
        out: The .onnx file to write.
        shape: (H, W) of the traced input; the only accepted size unless
            ``dynamic``.
        dynamic: Make H and W of the input and outputs free axes.
        opset: ONNX opset, >= 16 (GridSample).
        with_labels: Add the (1, H, W) int64 label map output.

    Returns:
        dict with ``path``, ``seconds``, ``bytes``, ``opset``, ``dynamic``,
        ``outputs`` and ``swapped_attention`` (how many
        ``nn.MultiheadAttention`` were traced as
        ``TraceableMultiheadAttention``).

    Raises:
        ValueError: ``opset`` < 16, or a dynamic trace that could only run at
            the traced size (see ``dynamic_export_problems``).
    """
    import onnx
    if opset < MIN_OPSET:
        raise ValueError(f'opset {opset} < {MIN_OPSET}: deformable attention '
                         'needs GridSample (opset 16+)')
    if dynamic:
        errors, notes = dynamic_export_problems(model, shape)
        if errors:
            raise ValueError('; '.join(errors))
        for note in notes:
            warnings.warn(note)
    force_pytorch_msda(model)
    model.eval()
    wrapper = M2FOnnxWrapper(model, with_labels).eval()
    h, w = shape
    dummy = torch.randn(1, 3, h, w)
    outputs = ['logits', 'labels'] if with_labels else ['logits']
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {'img': {2: 'height', 3: 'width'},
                        'logits': {2: 'height', 3: 'width'}}
        if with_labels:
            dynamic_axes['labels'] = {1: 'height', 2: 'width'}
    start = time.perf_counter()
    with warnings.catch_warnings():
        # expected: iterating over the (L, 2) level-shape tensor (L is fixed)
        # and shape-to-int conversions; check_onnx verifies the result
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)  # legacy exporter
        warnings.filterwarnings('ignore', message='Constant folding')
        with torch.no_grad(), traceable_attention(model) as swapped:
            torch.onnx.export(
                wrapper, (dummy, ), out, input_names=['img'],
                output_names=outputs, dynamic_axes=dynamic_axes,
                opset_version=opset, do_constant_folding=True, dynamo=False)
    seconds = time.perf_counter() - start
    _annotate_outputs(out, model.decode_head.num_classes)
    onnx.checker.check_model(out)
    return dict(path=out, seconds=seconds, bytes=osp.getsize(out), opset=opset,
                dynamic=dynamic, outputs=outputs, swapped_attention=swapped)


def preprocess_image(img: np.ndarray, mean: Sequence[float],
                     std: Sequence[float], bgr_to_rgb: bool = True,
                     size: Optional[Tuple[int, int]] = None,
                     size_divisor: int = 32
                     ) -> Tuple[Tensor, Tuple[int, int]]:
    """An image as mmseg's ``SegDataPreProcessor`` hands it to the model.

    Args:
        img: (H, W, 3) uint8 BGR (as ``mmcv.imread``).
        mean, std: Per-channel, in the model's channel order.
        bgr_to_rgb: Swap channels first.
        size: (H, W) to resize to (a static export's size), or None to keep
            the image's size and zero-pad (after normalisation, as mmseg) to a
            multiple of ``size_divisor`` at the bottom and right.
        size_divisor: See ``size``.

    Returns:
        (1, 3, H', W') float32 and the (H, W) of the image in it (mmseg crops
        the prediction to it).
    """
    import mmcv
    if size is not None:
        img = mmcv.imresize(img, (size[1], size[0]))
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
    if bgr_to_rgb:
        x = x[[2, 1, 0]]
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    h, w = x.shape[-2:]
    if size is None and size_divisor > 1:
        x = torch.nn.functional.pad(
            x, (0, -w % size_divisor, 0, -h % size_divisor), value=0.0)
    return x[None].contiguous(), (int(h), int(w))


@torch.no_grad()
def check_onnx(onnx_path: str, model: nn.Module, images: Sequence[Tensor],
               valid_shapes: Optional[Sequence[Tuple[int, int]]] = None
               ) -> List[Dict[str, object]]:
    """Compare onnxruntime with the PyTorch model on normalised images.

    The reference is the model's own inference path
    (``EncoderDecoder.encode_decode``, no wrapper, no hook). Both are
    compared on the valid (unpadded) region, as mmseg crops the padding
    before taking the argmax.

    Args:
        onnx_path: Exported model.
        model: The PyTorch model it was exported from.
        images: Tensors (1, 3, H, W).
        valid_shapes: Per image the (h, w) of the image inside the padded
            tensor (see ``preprocess_image``); None: all of it.

    Returns:
        One dict per image: ``shape`` (H, W) fed, ``valid`` (h, w) compared,
        ``max_abs_diff`` of the logits, ``max_abs_logit`` (scale),
        ``agreement`` of the label maps (share of equal pixels; the ONNX
        ``labels`` output if present, else the argmax of its logits),
        ``flips_beyond_noise`` (differing labels where PyTorch's top-2 logit
        gap exceeds 2 * max_abs_diff, i.e. not explained by rounding at a
        near-tie), ``ort_seconds``, ``torch_seconds``.
    """
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_path,
                                providers=['CPUExecutionProvider'])
    input_name = sess.get_inputs()[0].name
    output_names = [o.name for o in sess.get_outputs()]
    model.eval()
    results = []
    for i, img in enumerate(images):
        h, w = (int(v) for v in img.shape[-2:])
        vh, vw = valid_shapes[i] if valid_shapes is not None else (h, w)
        start = time.perf_counter()
        outs = dict(zip(output_names,
                        sess.run(None, {input_name: img.numpy()})))
        ort_s = time.perf_counter() - start
        meta = dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w))
        start = time.perf_counter()
        ref = model.encode_decode(img, [meta]).numpy()
        torch_s = time.perf_counter() - start
        logits = outs['logits']
        if logits.shape != ref.shape:
            raise AssertionError(f'ONNX logits {logits.shape} != PyTorch '
                                 f'{ref.shape}')
        labels = outs.get('labels', logits.argmax(1))[:, :vh, :vw]
        logits, ref = logits[..., :vh, :vw], ref[..., :vh, :vw]
        diff = float(np.abs(logits - ref).max())
        differ = labels != ref.argmax(1)
        top2 = np.sort(ref, axis=1)[:, -2:]
        gap = top2[:, 1] - top2[:, 0]
        results.append(dict(
            shape=(h, w), valid=(vh, vw), max_abs_diff=diff,
            max_abs_logit=float(np.abs(ref).max()),
            agreement=float(1.0 - differ.mean()),
            flips_beyond_noise=int((differ & (gap > 2 * diff)).sum()),
            ort_seconds=ort_s, torch_seconds=torch_s))
    return results


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export a Mask2Former (M2FHead) segmentor to ONNX.')
    parser.add_argument('config', help='config file')
    parser.add_argument('--checkpoint', default=None,
                        help='weights (none: random init, for testing)')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--shape', type=int, nargs=2, required=True,
                        metavar=('H', 'W'), help='traced input size')
    parser.add_argument('--dynamic', action='store_true',
                        help='free H and W axes')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--no-labels', action='store_true',
                        help='export only the logits output')
    parser.add_argument('--check', nargs='+', default=None, metavar='IMG',
                        help='images to compare onnxruntime with PyTorch on '
                        '(static: resized to --shape; dynamic: own size, '
                        'padded to a multiple of 32)')
    parser.add_argument('--atol', type=float, default=1e-3,
                        help='max abs logit difference accepted by --check')
    parser.add_argument('--min-agreement', type=float, default=0.999,
                        help='min label-map agreement accepted by --check')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    import mmcv
    args = _parse_args(argv)
    cfg = _load_config(args.config)
    model = build_model(cfg, args.checkpoint)
    if not args.checkpoint:
        print('[export_onnx] no --checkpoint: exporting random weights')
    info = export_onnx(model, args.out, tuple(args.shape), args.dynamic,
                       args.opset, not args.no_labels)
    print(f"[export_onnx] wrote {info['path']} ({info['bytes'] / 2**20:.1f} "
          f"MiB, opset {info['opset']}, "
          f"{'dynamic' if info['dynamic'] else 'static'} "
          f'{args.shape[0]}x{args.shape[1]}, outputs {info["outputs"]}) in '
          f"{info['seconds']:.1f} s")
    if not args.check:
        return 0
    pre = cfg.model.get('data_preprocessor', cfg.get('data_preprocessor'))
    divisor = (pre.get('test_cfg') or {}).get('size_divisor', 32) or 1
    prepared = [
        preprocess_image(mmcv.imread(p), pre['mean'], pre['std'],
                         pre.get('bgr_to_rgb', False),
                         None if args.dynamic else tuple(args.shape), divisor)
        for p in args.check
    ]
    results = check_onnx(args.out, model, [x for x, _ in prepared],
                         [v for _, v in prepared])
    ok = True
    for path, r in zip(args.check, results):
        good = (r['max_abs_diff'] <= args.atol
                and r['agreement'] >= args.min_agreement)
        ok &= good
        (h, w), (vh, vw) = r['shape'], r['valid']
        size = f'{vh}x{vw}' + ('' if (h, w) == (vh, vw) else
                               f' (padded to {h}x{w})')
        print(f"[check] {path}: {size} max |dlogit| {r['max_abs_diff']:.3g} "
              f"(logits up to {r['max_abs_logit']:.3g}), labels agree "
              f"{100 * r['agreement']:.3f}% ({r['flips_beyond_noise']} "
              f"flips beyond noise), onnxruntime {r['ort_seconds']:.2f} s, "
              f"torch {r['torch_seconds']:.2f} s"
              f"{'' if good else '  <-- FAIL'}")
    worst = max(r['max_abs_diff'] for r in results)
    least = min(r['agreement'] for r in results)
    print(f'[check] {len(results)} images: max |dlogit| {worst:.3g}, min '
          f'label agreement {100 * least:.3f}% -> {"OK" if ok else "FAIL"} '
          f'(atol {args.atol:g}, min agreement '
          f'{100 * args.min_agreement:g}%)')
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
