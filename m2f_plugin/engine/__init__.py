"""Training-loop helpers (mmengine hooks, CPU distributed support)."""
from .cpu_ddp import M2FCPUDistributedDataParallel, enable_cpu_distributed
from .num_classes_check_hook import M2FNumClassesCheckHook, check_num_classes
from .rng_state_hook import M2FRandomStateHook

__all__ = ['M2FCPUDistributedDataParallel', 'M2FNumClassesCheckHook',
           'M2FRandomStateHook', 'check_num_classes', 'enable_cpu_distributed']
