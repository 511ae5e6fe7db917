"""Distributed training on CPU (gloo), e.g. for multi-process tests.

mmengine 0.10.x assumes GPUs in two places: ``init_dist`` calls
``torch.cuda.set_device`` (absent from a CPU-only torch), and the model
wrapper is always given ``device_ids=[local_rank]``, which torch's DDP refuses
for a CPU module. ``enable_cpu_distributed`` fixes both for one run.
"""
from __future__ import annotations

import torch
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS  # the root: found from any scope

__all__ = ['M2FCPUDistributedDataParallel', 'enable_cpu_distributed']


@MODEL_WRAPPERS.register_module()
class M2FCPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that drops ``device_ids`` on CPU."""

    def __init__(self, module: torch.nn.Module, **kwargs) -> None:
        if next(module.parameters()).device.type == 'cpu':
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(module=module, **kwargs)


def enable_cpu_distributed(cfg: Config) -> None:
    """Make ``cfg`` train with a distributed launcher on a machine without
    CUDA: gloo backend, CPU-capable DDP wrapper, no ``cuda.set_device``."""
    if torch.cuda.is_available():
        return
    torch.cuda.set_device = lambda device: None  # CPU-only torch lacks it
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='M2FCPUDistributedDataParallel')
