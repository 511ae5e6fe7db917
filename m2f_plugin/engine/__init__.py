"""Training-loop helpers (mmengine hooks, CPU distributed support)."""
from .cpu_ddp import M2FCPUDistributedDataParallel, enable_cpu_distributed
from .rng_state_hook import M2FRandomStateHook

__all__ = ['M2FCPUDistributedDataParallel', 'M2FRandomStateHook',
           'enable_cpu_distributed']
