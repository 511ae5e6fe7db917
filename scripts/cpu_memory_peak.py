"""Peak of live tensors in a CPU profile: shared by the ``cpu_*`` scripts."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action


def created_tensors_peak(fn: Callable[[], object]) -> Tuple[int, Dict]:
    """Run ``fn`` under the profiler and replay its memory timeline.

    Returns the peak bytes of tensors created inside ``fn`` and still alive
    (tensors that existed before it do not count), and the live tensors at
    that peak as ``{key: bytes}``.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                 record_shapes=True, with_stack=True) as prof:
        fn()
    live, current, peak, at_peak = {}, 0, 0, {}
    for _, action, (key, _), size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            live[key] = size
            current += size
        elif action == Action.DESTROY:
            current -= live.pop(key, 0)
        if current > peak:
            peak, at_peak = current, dict(live)
    return peak, at_peak
