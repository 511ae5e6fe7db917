"""Training-loop helpers (mmengine hooks)."""
from .rng_state_hook import M2FRandomStateHook

__all__ = ['M2FRandomStateHook']
