"""Map mmseg 1.x / mmdet 3.x built-in Mask2Former keys to m2f_plugin's.

The built-in head (``Mask2FormerHead`` wrapping mmdet's) names its modules after
mmcv's generic transformer bricks (``norms.0``, ``ffn.layers.0.0``,
``cross_attn.attn``); ours name them after what they are. Every rule below is a
regular expression on the key *after* the decode-head prefix.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

from torch import Tensor

__all__ = ['ConversionReport', 'convert_mmseg_state_dict',
           'is_mmseg_mask2former', 'mmseg_head_key_to_ours']

_RULES: List[Tuple[str, str]] = [
    # pixel decoder
    (r'^pixel_decoder\.input_convs\.(\d+)\.conv\.', r'pixel_decoder.input_projs.\1.0.'),
    (r'^pixel_decoder\.input_convs\.(\d+)\.gn\.', r'pixel_decoder.input_projs.\1.1.'),
    (r'^pixel_decoder\.lateral_convs\.(\d+)\.conv\.', r'pixel_decoder.lateral_convs.\1.0.'),
    (r'^pixel_decoder\.lateral_convs\.(\d+)\.gn\.', r'pixel_decoder.lateral_convs.\1.1.'),
    (r'^pixel_decoder\.output_convs\.(\d+)\.conv\.', r'pixel_decoder.output_convs.\1.0.'),
    (r'^pixel_decoder\.output_convs\.(\d+)\.gn\.', r'pixel_decoder.output_convs.\1.1.'),
    (r'^pixel_decoder\.mask_feature\.', r'pixel_decoder.mask_proj.'),
    (r'^pixel_decoder\.level_encoding\.weight$', r'pixel_decoder.level_embed'),
    (r'^pixel_decoder\.encoder\.layers\.(\d+)\.self_attn\.', r'pixel_decoder.encoder.layers.\1.self_attn.'),
    (r'^pixel_decoder\.encoder\.layers\.(\d+)\.norms\.0\.', r'pixel_decoder.encoder.layers.\1.norm1.'),
    (r'^pixel_decoder\.encoder\.layers\.(\d+)\.norms\.1\.', r'pixel_decoder.encoder.layers.\1.norm2.'),
    (r'^pixel_decoder\.encoder\.layers\.(\d+)\.ffn\.layers\.0\.0\.', r'pixel_decoder.encoder.layers.\1.ffn.fc1.'),
    (r'^pixel_decoder\.encoder\.layers\.(\d+)\.ffn\.layers\.1\.', r'pixel_decoder.encoder.layers.\1.ffn.fc2.'),
    # transformer decoder layers
    (r'^transformer_decoder\.layers\.(\d+)\.cross_attn\.attn\.', r'transformer_decoder.layers.\1.cross_attn.'),
    (r'^transformer_decoder\.layers\.(\d+)\.self_attn\.attn\.', r'transformer_decoder.layers.\1.self_attn.'),
    (r'^transformer_decoder\.layers\.(\d+)\.norms\.0\.', r'transformer_decoder.layers.\1.norm1.'),
    (r'^transformer_decoder\.layers\.(\d+)\.norms\.1\.', r'transformer_decoder.layers.\1.norm2.'),
    (r'^transformer_decoder\.layers\.(\d+)\.norms\.2\.', r'transformer_decoder.layers.\1.norm3.'),
    (r'^transformer_decoder\.layers\.(\d+)\.ffn\.layers\.0\.0\.', r'transformer_decoder.layers.\1.ffn.fc1.'),
    (r'^transformer_decoder\.layers\.(\d+)\.ffn\.layers\.1\.', r'transformer_decoder.layers.\1.ffn.fc2.'),
    (r'^transformer_decoder\.post_norm\.', r'transformer_decoder.predictor.norm.'),
    # queries, level embedding, input projections, prediction heads
    (r'^query_embed\.', r'transformer_decoder.query_embed.'),
    (r'^query_feat\.', r'transformer_decoder.query_feat.'),
    (r'^level_embed\.', r'transformer_decoder.level_embed.'),
    (r'^decoder_input_projs\.(\d+)\.', r'transformer_decoder.input_projs.\1.'),
    (r'^cls_embed\.', r'transformer_decoder.predictor.cls_embed.'),
    (r'^mask_embed\.0\.', r'transformer_decoder.predictor.mask_embed.layers.0.'),
    (r'^mask_embed\.2\.', r'transformer_decoder.predictor.mask_embed.layers.1.'),
    (r'^mask_embed\.4\.', r'transformer_decoder.predictor.mask_embed.layers.2.'),
]
_COMPILED = [(re.compile(p), r) for p, r in _RULES]

# a key only the built-in head has: tells a built-in checkpoint apart
_SIGNATURE = 'pixel_decoder.input_convs.'


@dataclass
class ConversionReport:
    """What a conversion did."""

    mapped: Dict[str, str] = field(default_factory=dict)  # old -> new
    kept: List[str] = field(default_factory=list)  # outside the head, as is
    unmapped: List[str] = field(default_factory=list)  # head keys, no rule

    def summary(self) -> str:
        lines = [f'mapped {len(self.mapped)} head keys, kept {len(self.kept)} '
                 f'other keys (backbone, ...) unchanged']
        if self.unmapped:
            lines.append(f'UNMAPPED head keys ({len(self.unmapped)}), dropped:')
            lines += [f'  {k}' for k in self.unmapped]
        return '\n'.join(lines)


def mmseg_head_key_to_ours(key: str) -> str | None:
    """Our key for one built-in head key (without the head prefix), or None."""
    for pattern, repl in _COMPILED:
        if pattern.search(key):
            return pattern.sub(repl, key, count=1)
    return None


def is_mmseg_mask2former(state_dict: Mapping[str, Tensor],
                         head_prefix: str = 'decode_head.') -> bool:
    """True if the keys look like mmseg's built-in Mask2Former head."""
    return any(k.startswith(head_prefix + _SIGNATURE) for k in state_dict)


def convert_mmseg_state_dict(state_dict: Mapping[str, Tensor],
                             head_prefix: str = 'decode_head.'
                             ) -> Tuple['OrderedDict[str, Tensor]',
                                        ConversionReport]:
    """Convert a built-in Mask2Former ``EncoderDecoder`` state dict to ours.

    Args:
        state_dict: The model's state dict (``checkpoint['state_dict']``).
        head_prefix: Prefix of the decode head's keys.

    Returns:
        The converted state dict and a report of mapped/kept/unmapped keys.

    Raises:
        ValueError: the state dict is not a built-in Mask2Former.
    """
    if not is_mmseg_mask2former(state_dict, head_prefix):
        raise ValueError(
            f'not an mmseg/mmdet Mask2Former state dict: no key starts with '
            f'{head_prefix + _SIGNATURE!r}. Pass the model state dict (a '
            f"checkpoint's 'state_dict') of mmseg's mask2former_* configs.")
    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    report = ConversionReport()
    for key, value in state_dict.items():
        if not key.startswith(head_prefix):
            out[key] = value
            report.kept.append(key)
            continue
        new = mmseg_head_key_to_ours(key[len(head_prefix):])
        if new is None:
            report.unmapped.append(key)
            continue
        out[head_prefix + new] = value
        report.mapped[key] = head_prefix + new
    return out, report
