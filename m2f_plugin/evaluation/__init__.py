"""Metric adapters (mmseg's and mmdet's metrics, read across toolboxes)."""
from .sem_seg_metric import M2FSemSegMetric

try:  # registered in mmdet's METRICS: it scores mmdet detectors
    from mmdet.registry import METRICS as MMDET_METRICS
except Exception:  # noqa: BLE001 - missing, or refusing the installed mmcv
    MMDET_METRICS = None
if MMDET_METRICS is not None:
    MMDET_METRICS.register_module(module=M2FSemSegMetric)

__all__ = ['M2FSemSegMetric']
