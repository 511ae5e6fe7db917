"""Toolbox adapters of the core: the mmseg decode head, the mmdet panoptic
head and the mmdet fusion head that post-processes its predictions."""
from ...postprocess import semantic_logits
from .mmdet_head import M2FDetHead
from .mmseg_head import M2FHead

try:  # the fusion head subclasses mmdet's: only where mmdet is usable
    from .fusion_head import M2FFusionHead
except Exception:  # noqa: BLE001 - missing, or refusing the installed mmcv
    M2FFusionHead = None  # m2f_plugin.registry warns once why

__all__ = ['M2FDetHead', 'M2FFusionHead', 'M2FHead', 'semantic_logits']
