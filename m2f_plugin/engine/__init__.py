"""Training-loop helpers (mmengine hooks, the optimizer-wrapper constructor,
CPU distributed support, the guards that stop a diverged run)."""
from .cpu_ddp import M2FCPUDistributedDataParallel, enable_cpu_distributed
from .finite_checkpoint_hook import M2FFiniteCheckpointHook, nonfinite_tensors
from .nonfinite_error import M2FNonFiniteError
from .nonfinite_loss_hook import M2FNonFiniteLossHook
from .num_classes_check_hook import M2FNumClassesCheckHook, check_num_classes
from .optim_wrapper_constructor import M2FOptimWrapperConstructor, merge_param_groups
from .resume_schedule_hook import M2FResumeScheduleHook, replay_schedule
from .rng_state_hook import M2FRandomStateHook

__all__ = ['M2FCPUDistributedDataParallel', 'M2FFiniteCheckpointHook',
           'M2FNonFiniteError', 'M2FNonFiniteLossHook',
           'M2FNumClassesCheckHook', 'M2FOptimWrapperConstructor',
           'M2FRandomStateHook', 'M2FResumeScheduleHook', 'check_num_classes',
           'enable_cpu_distributed', 'merge_param_groups', 'nonfinite_tensors',
           'replay_schedule']
