"""Readable overlays: mmdet's ``DetLocalVisualizer`` with three changes.

- **One kind of prediction per image.** mmdet's ``DetLocalVisualizer`` draws
  instances, the semantic map and the panoptic map of a sample on top of
  each other. Ours draws the panoptic map alone when the sample has one with
  at least one segment, otherwise the instances, otherwise the semantic map
  (the same rule for ground truth).
- **The image shows through.** ``alpha`` (default 0.5 here, 0.8 in mmdet)
  is the masks' opacity for every kind, stuff included. (Semantic configs
  give mmseg's ``SegLocalVisualizer`` ``alpha=0.5`` for the same reason.)
- **Labels inside the image.** Text anchored near a border is moved in so
  it is not cut off.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

__all__ = ['M2FDetLocalVisualizer', 'keep_inside']

# kinds of prediction / ground truth, in the order one is chosen
_PRED_KINDS = ('pred_panoptic_seg', 'pred_instances', 'pred_sem_seg')
_GT_KINDS = ('gt_panoptic_seg', 'gt_instances', 'gt_sem_seg')


def keep_inside(positions: np.ndarray, texts: Sequence[str],
                font_sizes: Union[int, Sequence[int], np.ndarray],
                width: int, height: int,
                horizontal: Union[str, Sequence[str]] = 'left',
                vertical: Union[str, Sequence[str]] = 'top') -> np.ndarray:
    """Move text anchors so each text's box lies inside the image.

    Args:
        positions: Anchors, ``(N, 2)`` x, y in pixels.
        texts: The N texts (their box is about 0.6 font sizes per
            character wide and 1.3 font sizes high).
        font_sizes: One size or N sizes, in pixels.
        width, height: The image size.
        horizontal, vertical: Where the anchor is on the box
            (``'left'``/``'center'``/``'right'``,
            ``'top'``/``'center'``/``'bottom'``), one or N.

    Returns:
        The moved anchors, ``(N, 2)`` float64; a box larger than the image
        keeps its top-left corner at 0.
    """
    positions = np.array(positions, dtype=np.float64).reshape(-1, 2)
    n = len(positions)
    sizes = np.broadcast_to(np.asarray(font_sizes, np.float64), (n,))
    box_w = np.array([0.6 * len(t) for t in texts], np.float64) * sizes
    box_h = 1.3 * sizes
    # fraction of the box before the anchor, per text
    before = {'left': 0.0, 'top': 0.0, 'center': 0.5, 'right': 1.0,
              'bottom': 1.0, 'baseline': 1.0}
    fx = np.array([before[a] for a in np.broadcast_to(horizontal, (n,))])
    fy = np.array([before[a] for a in np.broadcast_to(vertical, (n,))])
    for axis, size, extent, frac in ((0, box_w, width, fx),
                                     (1, box_h, height, fy)):
        low = frac * size
        high = np.maximum(extent - (1 - frac) * size, low)
        positions[:, axis] = np.clip(positions[:, axis], low, high)
    return positions


class _KeepLabelsInside:
    """``draw_texts`` with anchors moved so the labels are not cut off."""

    def draw_texts(self, texts, positions, font_sizes=None, colors='g',
                   vertical_alignments='top', horizontal_alignments='left',
                   *args, **kwargs):
        texts_list = [texts] if isinstance(texts, str) else list(texts)
        sizes = self._default_font_size if font_sizes is None else font_sizes
        as_array = np.asarray(positions.cpu() if hasattr(positions, 'cpu')
                              else positions, np.float64)
        moved = keep_inside(as_array, texts_list, sizes, self.width,
                            self.height, horizontal_alignments,
                            vertical_alignments).reshape(as_array.shape)
        return super().draw_texts(texts, moved, font_sizes, colors,
                                  vertical_alignments, horizontal_alignments,
                                  *args, **kwargs)


def _one_kind(sample, kinds: Sequence[str], void_label: Optional[int]):
    """A copy of ``sample`` keeping only the first of ``kinds`` it holds that
    has something to draw (an all-VOID panoptic map has nothing)."""
    if sample is None:
        return None
    present = [k for k in kinds if k in sample]
    if not present:
        return sample
    keep = present[0]
    if keep == kinds[0] and void_label is not None:
        panoptic = sample.get(kinds[0]).sem_seg
        if bool((panoptic == void_label).all()):
            keep = present[1] if len(present) > 1 else None
    out = sample.clone()
    for key in present:
        if key != keep:
            delattr(out, key)
    return out


def _register_det():
    try:
        from mmdet.registry import VISUALIZERS as MMDET_VISUALIZERS
        from mmdet.visualization import DetLocalVisualizer
    except Exception:  # noqa: BLE001 - missing, or refusing the mmcv
        return None

    @MMDET_VISUALIZERS.register_module()
    class M2FDetLocalVisualizer(_KeepLabelsInside, DetLocalVisualizer):
        """mmdet's ``DetLocalVisualizer`` drawing one kind of result per
        image, with see-through masks and labels kept inside the image.

        Args:
            alpha: Opacity of every drawn mask (things and stuff).
            **kwargs: ``DetLocalVisualizer`` arguments.
        """

        def __init__(self, name: str = 'visualizer', alpha: float = 0.5,
                     **kwargs) -> None:
            super().__init__(name=name, alpha=alpha, **kwargs)

        def add_datasample(self, name: str, image: np.ndarray,
                           data_sample=None, *args, **kwargs) -> None:
            void = (len(self.dataset_meta['classes'])
                    if self.dataset_meta.get('classes') else None)
            data_sample = _one_kind(data_sample, _PRED_KINDS, void)
            data_sample = _one_kind(data_sample, _GT_KINDS, void)
            super().add_datasample(name, image, data_sample, *args, **kwargs)

    return M2FDetLocalVisualizer


M2FDetLocalVisualizer = _register_det()
