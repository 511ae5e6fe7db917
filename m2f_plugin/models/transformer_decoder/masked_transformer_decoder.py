"""Mask2Former's transformer decoder: learnable queries, masked attention."""
from __future__ import annotations

from typing import Sequence

from mmseg.registry import MODELS
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...structures import Predictions
from ..layers import SinePositionEncoding2d
from .attention_mask import attend_mask_from_embeddings, features_at
from .decoder_layer import MaskedDecoderLayer
from .predictor import MaskClassPredictor

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
        cross_attn_impl: Masked cross-attention kernel: 'auto' (matmuls in
            eval mode, SDPA in training mode), 'math' or 'sdpa'; see
            ``MultiheadAttention``.
        with_cp: Recompute each layer in the backward pass (activation
            checkpointing) instead of keeping its activations.
    """

    def __init__(self, num_classes: int, in_channels: int = 256,
                 embed_dims: int = 256, mask_dims: int = 256,
                 num_queries: int = 100, num_layers: int = 9,
                 num_levels: int = 3, num_heads: int = 8,
                 ffn_dims: int = 2048, dropout: float = 0.0,
                 cross_attn_impl: str = 'auto',
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        # without dropout the recomputation need not replay the RNG
        self._rng = dropout > 0
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
                               cross_attn_impl)
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

    def forward(self, memories: Sequence[Tensor],
                mask_features: Tensor) -> Predictions:
        """Decode: the paper's Figure 2, right.

        Args:
            memories: L maps (B, C, H_l, W_l), coarse to fine.
            mask_features: (B, C_m, H, W).

        Returns:
            ``num_layers + 1`` prediction sets: one from the initial queries,
            one after every layer. Each layer's attention mask comes from the
            previous set, made at the memory level's size
            (``attend_mask_from_embeddings``), never from full-size logits.
        """
        if len(memories) != self.num_levels:
            raise ValueError(f'decoder expects {self.num_levels} memory levels, '
                             f'got {len(memories)}')
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
        level_feats = [features_at(mask_features, size) for size in sizes]
        query = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)

        cls_logits, mask_embed = self.predictor(query)
        all_cls, all_embeds = [cls_logits], [mask_embed]
        for i, layer in enumerate(self.layers):
            level = i % self.num_levels
            attend = attend_mask_from_embeddings(mask_embed, level_feats[level])
            if self.with_cp and self.training:
                query = checkpoint(layer, query, tokens[level], query_pos,
                                   pos[level], attend, use_reentrant=False,
                                   preserve_rng_state=self._rng)
            else:
                query = layer(query, tokens[level], query_pos, pos[level],
                              attend)
            cls_logits, mask_embed = self.predictor(query)
            all_cls.append(cls_logits)
            all_embeds.append(mask_embed)
        return Predictions(all_cls, all_embeds, mask_features)
