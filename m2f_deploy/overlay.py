"""Overlays in the style of the toolboxes' inferencers.

Each mask is blended over the image in its palette colour (opacity ``alpha``,
0.5 by default so the image shows through), outlined, and named by a label
drawn inside the image. Images are BGR (OpenCV's order); palettes are RGB, as
in the model's metadata.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .formats import import_cv2

__all__ = [
    'jitter_color', 'draw_label', 'semantic_overlay', 'panoptic_overlay',
    'instance_overlay'
]

Color = Tuple[int, int, int]


def _bgr(rgb: Sequence[int]) -> Color:
    return int(rgb[2]), int(rgb[1]), int(rgb[0])


def jitter_color(rgb: Sequence[int], seed: int) -> Color:
    """A colour near ``rgb``, the same for the same ``seed``: tells apart
    instances of one class."""
    offset = np.random.default_rng(seed).integers(-48, 49, size=3)
    return tuple(int(v) for v in np.clip(np.asarray(rgb) + offset, 0, 255))


def _font(image: np.ndarray) -> Tuple[float, int]:
    """Font scale and line thickness for the image size."""
    scale = float(np.clip(min(image.shape[:2]) / 900, 0.35, 1.0))
    return scale, 1 if scale < 0.7 else 2


def draw_label(image: np.ndarray, text: str, anchor: Tuple[float, float],
               color: Color, centered: bool = True) -> None:
    """Draw ``text`` on a box of ``color`` (BGR), kept inside the image.

    Args:
        image: BGR image, drawn on in place.
        text: The label.
        anchor: ``(x, y)``: the box's centre if ``centered`` else its
            top-left corner. The box is moved inside the image if needed.
        color: Box colour; the text is black or white, whichever reads.
        centered: How ``anchor`` is read.
    """
    cv2 = import_cv2()
    scale, thick = _font(image)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale,
                                     thick)
    pad = 2
    box_w, box_h = tw + 2 * pad, th + base + 2 * pad
    x0, y0 = anchor
    if centered:
        x0, y0 = x0 - box_w / 2, y0 - box_h / 2
    height, width = image.shape[:2]
    # a box larger than the image keeps its top-left corner at 0
    x0 = int(round(max(0, min(x0, width - box_w))))
    y0 = int(round(max(0, min(y0, height - box_h))))
    cv2.rectangle(image, (x0, y0), (x0 + box_w - 1, y0 + box_h - 1), color,
                  thickness=-1)
    luma = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    ink = (0, 0, 0) if luma > 128 else (255, 255, 255)
    cv2.putText(image, text, (x0 + pad, y0 + pad + th),
                cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thick, cv2.LINE_AA)


def _inner_point(mask: np.ndarray) -> Tuple[int, int]:
    """``(x, y)`` of the mask pixel farthest from its edge (a label placed
    there lies on the region even when the region is not convex)."""
    cv2 = import_cv2()
    # a zero border makes the image's edge count as the region's edge
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x) - 1, int(y) - 1


def _blend_regions(image: np.ndarray, masks: List[np.ndarray],
                   colors: List[Color], alpha: float) -> np.ndarray:
    """Image with each mask blended in its colour and outlined."""
    cv2 = import_cv2()
    out = image.astype(np.float32)
    for mask, color in zip(masks, colors):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.float32(color)
    out = np.clip(out.round(), 0, 255).astype(np.uint8)
    for mask, color in zip(masks, colors):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, 1)
    return out


def semantic_overlay(image: np.ndarray, labels: np.ndarray,
                     classes: Sequence[str], palette: Sequence[Sequence[int]],
                     alpha: float = 0.5) -> np.ndarray:
    """Colour each class's pixels and name each class present.

    Args:
        image: ``(H, W, 3)`` BGR uint8.
        labels: ``(H, W)`` class indices; others (e.g. 255) stay uncoloured.
        classes: Class names.
        palette: RGB colour per class.
        alpha: Mask opacity.

    Returns:
        A new BGR image.
    """
    present = [int(c) for c in np.unique(labels) if 0 <= c < len(classes)]
    masks = [labels == c for c in present]
    colors = [_bgr(palette[c]) for c in present]
    out = _blend_regions(image, masks, colors, alpha)
    for c, mask, color in zip(present, masks, colors):
        draw_label(out, classes[c], _inner_point(mask), color)
    return out


def panoptic_overlay(image: np.ndarray, panoptic: np.ndarray,
                     segments: Sequence[Dict], palette: Sequence[Sequence[int]],
                     alpha: float = 0.5) -> np.ndarray:
    """One colour per segment: its class's colour, jittered per thing.

    Args:
        image: ``(H, W, 3)`` BGR uint8.
        panoptic: ``(H, W)`` segment ids.
        segments: Dicts with ``id``, ``category_id``, ``category_name``,
            ``isthing``, ``score``.
        palette: RGB colour per class.
        alpha: Mask opacity.

    Returns:
        A new BGR image.
    """
    masks, colors, texts = [], [], []
    for seg in segments:
        rgb = palette[seg['category_id']]
        if seg['isthing']:
            rgb = jitter_color(rgb, seg['id'])
            texts.append(f"{seg['category_name']} {seg['score']:.2f}")
        else:
            texts.append(seg['category_name'])
        masks.append(panoptic == seg['id'])
        colors.append(_bgr(rgb))
    out = _blend_regions(image, masks, colors, alpha)
    for mask, color, text in zip(masks, colors, texts):
        if mask.any():
            draw_label(out, text, _inner_point(mask), color)
    return out


def instance_overlay(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray,
                     labels: np.ndarray, scores: np.ndarray,
                     classes: Sequence[str], palette: Sequence[Sequence[int]],
                     alpha: float = 0.5,
                     score_thr: Optional[float] = None) -> np.ndarray:
    """Masks, boxes and ``name score`` labels of detected instances.

    Args:
        image: ``(H, W, 3)`` BGR uint8.
        masks: ``(N, H, W)`` bool.
        boxes: ``(N, 4)`` x1, y1, x2, y2 (x2, y2 exclusive).
        labels: ``(N,)`` class indices.
        scores: ``(N,)`` scores.
        classes: Class names.
        palette: RGB colour per class.
        alpha: Mask opacity.
        score_thr: Instances scoring below it are not drawn (all if None).

    Returns:
        A new BGR image.
    """
    cv2 = import_cv2()
    keep = [i for i in range(len(labels))
            if score_thr is None or scores[i] >= score_thr]
    colors = [_bgr(jitter_color(palette[int(labels[i])], i)) for i in keep]
    out = _blend_regions(image, [masks[i].astype(bool) for i in keep], colors,
                         alpha)
    _, thick = _font(out)
    for i, color in zip(keep, colors):
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)),
                      color, thick)
        draw_label(out, f'{classes[int(labels[i])]} {float(scores[i]):.2f}',
                   (x1, y1), color, centered=False)
    return out
