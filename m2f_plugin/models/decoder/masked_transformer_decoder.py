"""Mask2Former's transformer decoder: learnable queries, masked attention."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmseg.registry import MODELS
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..heads.prediction_head import MaskClassPredictor
from ..layers import MaskLogitSets, SinePositionEncoding2d
from ..layers.mask_logits import mask_logits_product
from .attention_mask import attend_mask_from_embeddings, features_at
from .decoder_layer import MaskedDecoderLayer

__all__ = ['M2FMaskedTransformerDecoder']


@MODELS.register_module()
class M2FMaskedTransformerDecoder(nn.Module):
    """Queries cycle over the pixel decoder's memories, coarse to fine.

    A prediction is made from the initial queries and after every layer, so
    ``num_layers + 1`` prediction sets come out, all supervised. Each layer's
    cross-attention is restricted to the previous prediction's foreground.

    Args:
        num_classes: Classes K.
        in_channels: Channels of the memories.
        embed_dims: Query channels C.
        mask_dims: Channels of the mask features.
        num_queries: Queries Q.
        num_layers: Decoder layers.
        num_levels: Memory levels L the layers cycle over.
        num_heads: Attention heads.
        ffn_dims: FFN hidden channels.
        dropout: Dropout in attention and FFN.
        cross_attn_impl: Masked cross-attention kernel: 'auto' (matmuls at
            inference, SDPA in training), 'math' or 'sdpa'; see
            ``MultiheadAttention``.
        cross_attn_split_keys: At inference on CUDA, split the
            cross-attention's probabilities x values over the keys (up to
            32768 at 1024x2048); see ``MultiheadAttention.split_keys``.
        with_cp: Recompute each layer in the backward pass (activation
            checkpointing) instead of keeping its activations.
    """

    def __init__(self, num_classes: int, in_channels: int = 256,
                 embed_dims: int = 256, mask_dims: int = 256,
                 num_queries: int = 100, num_layers: int = 9,
                 num_levels: int = 3, num_heads: int = 8,
                 ffn_dims: int = 2048, dropout: float = 0.0,
                 cross_attn_impl: str = 'auto',
                 cross_attn_split_keys: bool = True,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self._rng = dropout > 0  # see MSDeformEncoder: no RNG state to keep
        self.num_levels = num_levels
        self.num_queries = num_queries
        self.input_projs = nn.ModuleList(
            nn.Conv2d(in_channels, embed_dims, 1)
            if in_channels != embed_dims else nn.Identity()
            for _ in range(num_levels))
        self.pos_encoding = SinePositionEncoding2d(embed_dims // 2)
        self.level_embed = nn.Embedding(num_levels, embed_dims)
        self.query_feat = nn.Embedding(num_queries, embed_dims)
        self.query_embed = nn.Embedding(num_queries, embed_dims)
        self.layers = nn.ModuleList(
            MaskedDecoderLayer(embed_dims, num_heads, ffn_dims, dropout,
                               cross_attn_impl, cross_attn_split_keys)
            for _ in range(num_layers))
        self.predictor = MaskClassPredictor(embed_dims, num_classes, mask_dims)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-normal for the layers' matrices (as the reference)."""
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for m in self.input_projs:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, memories: Sequence[Tensor], mask_features: Tensor,
                last_only: bool = False, lazy_masks: bool = False
                ) -> Tuple[List[Tensor], Union[List[Tensor], MaskLogitSets]]:
        """Decode.

        Args:
            memories: L maps (B, C, H_l, W_l), coarse to fine.
            mask_features: (B, C_m, H, W).
            last_only: Keep only the last prediction set (inference): the
                earlier sets' (B, Q, H, W) masks are never made.
            lazy_masks: Return the masks as ``MaskLogitSets`` (training): no
                (B, Q, H, W) logits are made here; the loss multiplies out
                what it reads from the embeddings.

        Attention masks are made from logits at each memory level's size
        (``attend_mask_from_embeddings``), never from full-size ones.

        Returns:
            cls_logits: ``num_layers + 1`` tensors (B, Q, K + 1), or 1.
            mask_logits: ``num_layers + 1`` tensors (B, Q, H, W), or 1; a
                ``MaskLogitSets`` of them if ``lazy_masks``.
        """
        if len(memories) != self.num_levels:
            raise ValueError(f'decoder expects {self.num_levels} memory levels, '
                             f'got {len(memories)}')
        if last_only and lazy_masks:
            raise ValueError('last_only (inference) and lazy_masks (training) '
                             'exclude each other; pass one of them')
        batch = mask_features.shape[0]
        tokens, pos, sizes = [], [], []
        for i, memory in enumerate(memories):
            x = self.input_projs[i](memory)
            _, _, h, w = x.shape
            # (B, C, H, W) -> (B, HW, C)
            tokens.append(x.flatten(2).transpose(1, 2) +
                          self.level_embed.weight[i].to(x.dtype))
            pos.append(
                self.pos_encoding(batch, h, w, x.device,
                                  x.dtype).flatten(2).transpose(1, 2))
            sizes.append((h, w))
        query = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)

        # attention masks come from logits made at each level's size
        level_feats = [features_at(mask_features, size) for size in sizes]
        num_sets = len(self.layers) + 1

        def predict(query: Tensor, index: int) -> Optional[Tensor]:
            """Append set ``index``; return the attention mask of layer
            ``index`` (None after the last layer)."""
            cls_logits, mask_embed = self.predictor.classify_and_embed(query)
            all_cls.append(cls_logits)
            if lazy_masks:
                all_masks.append(mask_embed)
            elif not last_only or index == num_sets - 1:
                all_masks.append(mask_logits_product(mask_embed,
                                                     mask_features))
            else:  # inference: earlier sets only mask the next layer
                all_masks.append(None)
            if index == num_sets - 1:
                return None
            return attend_mask_from_embeddings(
                mask_embed, level_feats[index % self.num_levels])

        all_cls, all_masks = [], []
        attend = predict(query, 0)
        for i, layer in enumerate(self.layers):
            level = i % self.num_levels
            if self.with_cp and self.training and torch.is_grad_enabled():
                query = checkpoint(layer, query, tokens[level], query_pos,
                                   pos[level], attend, use_reentrant=False,
                                   preserve_rng_state=self._rng)
            else:
                query = layer(query, tokens[level], query_pos, pos[level],
                              attend)
            attend = predict(query, i + 1)
            if last_only:
                del all_cls[0], all_masks[0]
        if lazy_masks:
            return all_cls, MaskLogitSets(all_masks, mask_features)
        return all_cls, all_masks
