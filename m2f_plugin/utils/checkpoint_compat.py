"""Let mmengine's checkpoints load under ``torch.load(weights_only=True)``.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True`` and refuses any
global that is not allow-listed. mmengine 0.10.7 calls ``torch.load`` without the
argument and writes a few of its own and NumPy's types into a checkpoint's
``meta`` (the message hub's ``HistoryBuffer`` holds NumPy arrays and scalars, and
its statistics methods, which pickle as ``getattr(HistoryBuffer, 'mean')``), so
``resume`` and ``load_from`` fail. We allow-list exactly those types; ``getattr``
is replaced by a stand-in that only resolves HistoryBuffer's statistics methods.
Loading stays restricted for everything else.
"""
from __future__ import annotations

import importlib
import pickle
from typing import List

import numpy as np
import torch

__all__ = ['allow_mmengine_checkpoints', 'history_buffer_getattr',
           'mmengine_checkpoint_globals']


def history_buffer_getattr(obj: object, name: str) -> object:
    """``getattr`` as mmengine pickles it, and nothing more.

    A ``HistoryBuffer`` stores its statistics methods (``min``, ``max``,
    ``current``, ``mean`` and registered ones), which pickle as
    ``getattr(HistoryBuffer, name)``. Any other use is refused.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed = {'min', 'max', 'current', 'mean'} | set(
        HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'm2f_plugin: refusing getattr({obj!r}, {name!r}) while loading a '
        f'checkpoint with weights_only=True; only HistoryBuffer statistics '
        f'methods ({sorted(allowed)}) are allowed')


def mmengine_checkpoint_globals() -> List[object]:
    """The globals that mmengine (0.10.x) pickles into a checkpoint."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if int(np.__version__.split('.')[0]) >= 2:  # NumPy 2 renamed np.core
        multiarray = importlib.import_module('numpy._core.multiarray')
    else:
        multiarray = importlib.import_module('numpy.core.multiarray')
    types: List[type] = [HistoryBuffer, np.ndarray, np.dtype]
    # NumPy >= 1.25 pickles the dtype's class (np.dtypes.Float64DType, ...).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in ('Float64DType', 'Float32DType', 'Float16DType',
                     'Int64DType', 'Int32DType', 'Int16DType', 'Int8DType',
                     'UInt8DType', 'UInt16DType', 'UInt32DType', 'UInt64DType',
                     'BoolDType'):
            if hasattr(dtypes, name):
                types.append(getattr(dtypes, name))
    # each as (object, its pickled name), not bare: torch's safe_globals()
    # context manager removes its entries on exit by equality, so a loader
    # that lists the same bare types (OneDL's mmengine does) would otherwise
    # remove ours for every later torch.load
    globals_ = [(t, f'{t.__module__}.{t.__qualname__}') for t in types]
    globals_.append((history_buffer_getattr, 'builtins.getattr'))
    for package in ('numpy._core', 'numpy.core'):
        globals_ += [(multiarray._reconstruct,
                      f'{package}.multiarray._reconstruct'),
                     (multiarray.scalar, f'{package}.multiarray.scalar')]
    return globals_


def allow_mmengine_checkpoints() -> bool:
    """Allow-list mmengine's checkpoint types; return False on old torch."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4 loads everything anyway
        return False
    add_safe_globals(mmengine_checkpoint_globals())
    return True
