"""Training-loop helpers (mmengine hooks, the optimizer-wrapper constructor,
CPU distributed support)."""
from .cpu_ddp import M2FCPUDistributedDataParallel, enable_cpu_distributed
from .num_classes_check_hook import M2FNumClassesCheckHook, check_num_classes
from .optim_wrapper_constructor import M2FOptimWrapperConstructor, merge_param_groups
from .rng_state_hook import M2FRandomStateHook

__all__ = ['M2FCPUDistributedDataParallel', 'M2FNumClassesCheckHook',
           'M2FOptimWrapperConstructor', 'M2FRandomStateHook',
           'check_num_classes', 'enable_cpu_distributed', 'merge_param_groups']
