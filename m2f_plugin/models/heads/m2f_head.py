"""``M2FHead``: Mask2Former as an mmseg decode head.

The only module that knows about ``SegDataSample``: it turns label maps into mask
targets, runs pixel decoder -> transformer decoder, and hands the prediction
sets to the set criterion (training) or folds the last one into per-class
logits (inference).
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS, TASK_UTILS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor, nn

from ...converters import convert_mmseg_state_dict, is_mmseg_mask2former
from ...structures import sem_seg_to_masks
from ..losses import SetCriterion
from .cuda_graph import GraphedInference
from .cuda_graph_train import Encoder, GraphedTraining

__all__ = ['M2FHead', 'semantic_logits']


def _resize_grid(size: int, align_corners: bool, device: torch.device
                 ) -> Tensor:
    """Normalised source coordinates of ``F.interpolate``'s bilinear resize
    along one axis, for ``F.grid_sample`` (its border padding reproduces
    interpolate's edge clamping). Independent of the input size."""
    dst = torch.arange(size, dtype=torch.float32, device=device)
    if align_corners:
        return dst * (2.0 / max(size - 1, 1)) - 1.0
    return (2.0 * dst + 1.0) / size - 1.0


def semantic_logits(cls_logits: Tensor, mask_logits: Tensor,
                    size: Tuple[int, int], align_corners: bool = False,
                    chunk: int = 1 << 24) -> Tensor:
    """Per-class logits ``sum_q softmax(cls)[q, k] * sigmoid(up(mask_q))``.

    The same as upsampling every mask to ``size`` at once (bilinear, as
    ``F.interpolate``) and contracting over queries, but done for a band of
    output rows at a time: only (B, Q, rows, W) upsampled masks exist at once
    (``chunk`` elements), and each output element is written once. Peak extra
    memory is about ``chunk`` floats instead of (B, Q, H, W). Float32.

    Args:
        cls_logits: (B, Q, K + 1); the last class ("no object") is dropped.
        mask_logits: (B, Q, h, w).
        size: Output (H, W).
        align_corners: As in ``F.interpolate``.
        chunk: Upsampled-mask elements alive at once (<= 0: all rows).

    Returns:
        (B, K, H, W) float32. (Under ONNX export / tracing: the plain
        upsample-all formula, which exports with dynamic sizes.)
    """
    probs = cls_logits.float().softmax(-1)[..., :-1]  # (B, Q, K)
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        # exported graphs need size-agnostic ops: no Python loop over rows
        up = F.interpolate(mask_logits.float(), size=size, mode='bilinear',
                           align_corners=align_corners).sigmoid()
        return torch.einsum('bqk,bqhw->bkhw', probs, up)
    batch, num_queries, num_classes = probs.shape
    height, width = size
    masks = mask_logits.float()
    gx = _resize_grid(width, align_corners, masks.device)
    gy = _resize_grid(height, align_corners, masks.device)
    rows = height if chunk <= 0 else max(
        1, chunk // max(1, batch * num_queries * width))
    out = probs.new_empty(batch, num_classes, height * width)
    # (B, K, Q), contiguous: a view of the sliced (B, Q, K + 1) probabilities
    # has an odd leading dimension (K + 1 = 151), which sends cuBLAS to its
    # unaligned kernels for every band
    probs_t = probs.transpose(1, 2).contiguous()
    needs_grad = torch.is_grad_enabled() and (probs.requires_grad or
                                              masks.requires_grad)
    for top in range(0, height, rows):
        band = gy[top:top + rows]
        grid = torch.stack(torch.broadcast_tensors(gx[None, :], band[:, None]),
                           -1)  # (rows, W, 2) as (x, y)
        up = F.grid_sample(masks, grid.expand(batch, -1, -1, -1),
                           mode='bilinear', padding_mode='border',
                           align_corners=align_corners).sigmoid_()
        # (B, K, Q) @ (B, Q, rows*W) -> this band of the output, written in
        # place (a strided output cuBLAS takes as is: no temporary, no copy);
        # out= has no autograd, so with gradients assign the band instead
        cols = slice(top * width, (top + len(band)) * width)
        if needs_grad:
            out[:, :, cols] = torch.bmm(probs_t, up.flatten(2))
        else:
            torch.bmm(probs_t, up.flatten(2), out=out[:, :, cols])
    return out.view(batch, num_classes, height, width)


@MODELS.register_module()
class M2FHead(BaseDecodeHead):
    """Mask2Former decode head for semantic segmentation.

    Args:
        in_channels: Backbone channels, fine to coarse (stride 4 first).
        strides: Backbone strides, e.g. [4, 8, 16, 32].
        num_classes: Classes K.
        feat_channels: Channels of the pixel decoder and the queries.
        out_channels: Channels of the mask features (mmseg's ``out_channels``
            means classes, so it is not used for that here).
        num_queries: Queries Q.
        pixel_decoder: Config of the pixel decoder (``M2FPixelDecoder``).
        transformer_decoder: Config of ``M2FMaskedTransformerDecoder``.
        loss_cls: Config of the class loss (``M2FClassLoss``).
        loss_mask: Config of the point BCE loss.
        loss_dice: Config of the point Dice loss.
        matcher: Config of the matcher (TASK_UTILS).
        num_points: Points per matched mask in the mask losses.
        oversample_ratio: Candidate points per point.
        importance_sample_ratio: Share of points chosen by uncertainty.
        predict_chunk: Upsampled-mask elements alive at once in
            ``predict`` (bounds its memory; see ``semantic_logits``).
        cuda_graph: At inference on CUDA, replay the pixel decoder and the
            transformer decoder as a CUDA graph, captured once per input
            shape (see ``GraphedInference``). Pays off where the host is the
            bottleneck (small images, batch 1); each captured shape keeps a
            memory pool of the decoders' activations.
        max_graphs: Input shapes captured at most; others run eagerly.
        cuda_graph_train: In training on CUDA, replay the decoders' forward
            and backward as CUDA graphs (see ``GraphedTraining``): removes
            most of the host's per-kernel cost, which bounds small batches.
            Needs a fixed input size and one backward per forward. ``True``:
            both decoders (and the backbone under ``M2FEncoderDecoder``);
            ``'transformer_decoder'``: only the transformer decoder, the
            pixel decoder runs eagerly (its activations stay out of the
            graphs' pool).
        ignore_index: Unlabelled pixels' label.
        align_corners: For every resize.
        **kwargs: Passed to ``BaseDecodeHead``.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 strides: Sequence[int] = (4, 8, 16, 32),
                 *,
                 num_classes: int,
                 feat_channels: int = 256,
                 out_channels: int = 256,
                 num_queries: int = 100,
                 pixel_decoder: ConfigType = dict(type='M2FPixelDecoder'),
                 transformer_decoder: ConfigType = dict(
                     type='M2FMaskedTransformerDecoder'),
                 loss_cls: ConfigType = dict(type='M2FClassLoss'),
                 loss_mask: ConfigType = dict(type='M2FPointBCELoss'),
                 loss_dice: ConfigType = dict(type='M2FPointDiceLoss'),
                 matcher: ConfigType = dict(type='M2FHungarianMatcher'),
                 num_points: int = 12544,
                 oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75,
                 predict_chunk: int = 1 << 22,
                 cuda_graph: bool = False,
                 max_graphs: int = 4,
                 cuda_graph_train: Union[bool, str] = False,
                 ignore_index: int = 255,
                 align_corners: bool = False,
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        in_channels = list(in_channels)
        kwargs.setdefault('input_transform', 'multiple_select')
        kwargs.setdefault('in_index', list(range(len(in_channels))))
        super().__init__(
            in_channels=in_channels, channels=feat_channels,
            num_classes=num_classes, ignore_index=ignore_index,
            align_corners=align_corners, init_cfg=init_cfg, **kwargs)
        del self.conv_seg  # per-class logits come from queries, not a conv
        self.num_queries = num_queries
        self.predict_chunk = predict_chunk
        self.cuda_graph = cuda_graph
        self._graphed = GraphedInference(self, self._decode_last, max_graphs)
        if not (cuda_graph_train is True or cuda_graph_train is False or
                cuda_graph_train == 'transformer_decoder'):
            raise ValueError(
                f'M2FHead: cuda_graph_train={cuda_graph_train!r}; expected '
                "True (both decoders), 'transformer_decoder' (only that one) "
                'or False')
        self.cuda_graph_train = cuda_graph_train
        self._graphed_train = GraphedTraining(self)

        pixel_decoder = copy.deepcopy(dict(pixel_decoder))
        pixel_decoder.update(in_channels=in_channels, strides=list(strides),
                             feat_channels=feat_channels,
                             out_channels=out_channels)
        self.pixel_decoder = MODELS.build(pixel_decoder)
        transformer_decoder = copy.deepcopy(dict(transformer_decoder))
        transformer_decoder.update(
            num_classes=num_classes, in_channels=feat_channels,
            mask_dims=out_channels, num_queries=num_queries,
            num_levels=pixel_decoder.get('num_levels', 3))
        transformer_decoder.setdefault('embed_dims', feat_channels)
        self.transformer_decoder = MODELS.build(transformer_decoder)

        loss_cls = dict(loss_cls)
        loss_cls['num_classes'] = num_classes
        self.criterion = SetCriterion(
            num_classes=num_classes,
            matcher=TASK_UTILS.build(matcher),
            loss_cls=MODELS.build(loss_cls),
            loss_mask=MODELS.build(loss_mask),
            loss_dice=MODELS.build(loss_dice),
            num_points=num_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio)

    def forward(self, inputs: Sequence[Tensor], last_only: bool = False,
                lazy_masks: bool = False
                ) -> Tuple[List[Tensor], Sequence[Tensor]]:
        """Run both decoders.

        Args:
            inputs: Backbone maps, fine to coarse, each (B, C_i, H_i, W_i).
            last_only: Return only the last prediction set (inference).
            lazy_masks: Return the masks as a ``MaskLogitSets`` (training;
                see ``M2FMaskedTransformerDecoder``).

        Returns:
            cls_logits: S tensors (B, Q, K + 1) (1 if ``last_only``).
            mask_logits: S tensors (B, Q, H/4, W/4) (1 if ``last_only``).
        """
        feats = self._transform_inputs(inputs)
        mask_features, memories = self.pixel_decoder(feats)
        return self.transformer_decoder(memories, mask_features,
                                        last_only=last_only,
                                        lazy_masks=lazy_masks)

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: SampleList,
             train_cfg: ConfigType) -> Dict[str, Tensor]:
        """Losses of all prediction sets (keys as mmdet's Mask2Former)."""
        # masks as embeddings x features: no (B, Q, H, W) set keeps gradients
        if self.graphs_training(inputs[0]):
            feats = self._transform_inputs(inputs)
            if self.cuda_graph_train == 'transformer_decoder':
                # eager (and checkpointed with with_cp): the pixel decoder's
                # activations stay out of the graphs' pool
                mask_features, memories = self.pixel_decoder(feats)
                feats = [mask_features, *memories]
            all_cls, all_masks = self._graphed_train(feats)
        else:
            all_cls, all_masks = self.forward(inputs, lazy_masks=True)
        return self._loss_of(all_cls, all_masks, batch_data_samples)

    def graphs_training(self, x: Tensor) -> bool:
        """Whether this training step runs as CUDA graphs (``x``: any input)."""
        return (bool(self.cuda_graph_train) and x.is_cuda and
                torch.is_grad_enabled() and
                # an eager pixel decoder may use any deformable attention
                (self.cuda_graph_train == 'transformer_decoder' or
                 self._graph_safe()))

    def loss_from_images(self, images: Tensor, backbone: nn.Module,
                         neck: Optional[nn.Module],
                         batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Losses as :meth:`loss`, with the backbone (and neck) run first and
        captured in the same training graphs as the decoders.

        Called by ``M2FEncoderDecoder`` when :meth:`graphs_training` is true.

        Args:
            images: (B, 3, H, W), as the segmentor's ``extract_feat`` takes.
            backbone: The segmentor's backbone.
            neck: Its neck, or None.
            batch_data_samples: With ``gt_sem_seg``.
        """
        if self.cuda_graph_train == 'transformer_decoder':
            # this mode graphs the transformer decoder alone
            feats = backbone(images)
            return self.loss(feats if neck is None else neck(feats),
                             batch_data_samples, None)
        encoder = Encoder(backbone, neck, self._transform_inputs)
        all_cls, all_masks = self._graphed_train((images, ), encoder)
        return self._loss_of(all_cls, all_masks, batch_data_samples)

    def _loss_of(self, all_cls: List[Tensor], all_masks,
                 batch_data_samples: SampleList) -> Dict[str, Tensor]:
        targets = sem_seg_to_masks(self._stack_batch_gt(batch_data_samples),
                                   self.num_classes, self.ignore_index)
        return self.criterion(all_cls, all_masks, targets)

    def predict(self, inputs: Sequence[Tensor], batch_img_metas: List[dict],
                test_cfg: ConfigType) -> Tensor:
        """Per-class logits (B, K, H, W) at the size mmseg's heads return."""
        if (self.cuda_graph and inputs[0].is_cuda and
                not torch.is_grad_enabled() and not torch.jit.is_tracing() and
                self._graph_safe()):
            cls_logits, mask_logits = self._graphed(*inputs)
        else:
            cls_logits, mask_logits = self._decode_last(*inputs)
        return self.predict_by_feat((cls_logits, mask_logits),
                                    batch_img_metas)

    def _graph_safe(self) -> bool:
        """mmcv's PyTorch deformable attention reads the level sizes on the
        host (a sync), which a CUDA graph cannot capture."""
        impls = {getattr(m, 'impl', None) for m in self.pixel_decoder.modules()
                 if type(m).__name__ == 'MSDeformAttn'}
        if 'pytorch' in impls:
            if not self._graphed.disabled:
                # inference graphs only: training asks this every step, and
                # cuda_graph_train='transformer_decoder' does not need it
                self._graphed.disabled = True
                print_log("M2FHead: cuda_graph needs msda_impl 'mmcv' or "
                          "'triton' on CUDA ('pytorch' syncs with the host); "
                          'running eagerly', logger='current',
                          level=logging.WARNING)
            return False
        return True

    def _decode_last(self, *inputs: Tensor) -> List[Tensor]:
        """Last prediction set only: [(B, Q, K + 1), (B, Q, H/4, W/4)]."""
        all_cls, all_masks = self.forward(inputs, last_only=True)
        return [all_cls[-1], all_masks[-1]]

    def train(self, mode: bool = True) -> 'M2FHead':
        """Also drops captured inference graphs and the decoders' per-size
        caches when training resumes (validation sizes would sit idle)."""
        # training graphs hold a pool of activations: free it for validation
        self._graphed_train.clear()
        if mode:
            self._graphed.clear()
            for m in self.modules():
                for name in ('_cache', '_geometry_cache'):
                    cache = getattr(m, name, None)
                    if isinstance(cache, dict):
                        cache.clear()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .half() / channels_last may move parameters that
        # captured graphs read: capture again
        self._graphed.clear()
        self._graphed_train.clear()
        return super()._apply(fn, *args, **kwargs)

    def predict_by_feat(self, seg_logits: Tuple[Tensor, Tensor],
                        batch_img_metas: List[dict]) -> Tensor:
        """Fold (class, mask) predictions into per-class logits.

        The size follows ``BaseDecodeHead``: the crop in slide inference, else
        ``pad_shape``, else ``img_shape``.
        """
        cls_logits, mask_logits = seg_logits
        meta = batch_img_metas[0]
        if isinstance(meta['img_shape'], torch.Size):  # slide inference
            size = tuple(meta['img_shape'])
        elif 'pad_shape' in meta:
            size = tuple(meta['pad_shape'][:2])
        else:
            size = tuple(meta['img_shape'][:2])
        return semantic_logits(cls_logits, mask_logits, size,
                               self.align_corners, self.predict_chunk)

    def _drop_mismatched_class_head(self, state_dict: dict,
                                    prefix: str) -> None:
        """Fine-tuning across class counts: keep our freshly initialised class
        head when the checkpoint's has another number of classes."""
        ours = self.transformer_decoder.predictor.cls_embed
        for old_key in ('transformer_decoder.predictor.cls_embed.weight',
                        'cls_embed.weight'):  # ours, mmseg built-in
            key = prefix + old_key
            if key in state_dict and state_dict[key].shape != ours.weight.shape:
                found = state_dict[key].shape[0] - 1
                # load our own initial values: nothing missing, strict passes
                state_dict[key] = ours.weight.detach().clone()
                state_dict[key[:-len('weight')] + 'bias'] = \
                    ours.bias.detach().clone()
                print_log(
                    f'M2FHead: checkpoint class head has {found} classes, the '
                    f'config {self.num_classes}: class head re-initialised, '
                    f'everything else loaded', logger='current',
                    level=logging.WARNING)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        """Load mmseg/mmdet built-in Mask2Former checkpoints directly.

        Keys in the built-in layout are renamed to ours on the fly (the same
        rules as ``m2f_plugin.converters``), with one log line.
        """
        # load_state_dict(assign=True) replaces parameters: capture again
        self._graphed.clear()
        self._graphed_train.clear()
        self._drop_mismatched_class_head(state_dict, prefix)
        if is_mmseg_mask2former(state_dict, prefix):
            head = {k: state_dict.pop(k) for k in list(state_dict)
                    if k.startswith(prefix)}
            converted, report = convert_mmseg_state_dict(head, prefix)
            state_dict.update(converted)
            print_log(f'M2FHead: converted a built-in Mask2Former checkpoint '
                      f'on load: {report.summary()}', logger='current')
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
