"""custom_imports registers every module, under names nobody else uses."""
from __future__ import annotations

import subprocess
import sys

PLUGIN_MODELS = ['M2FHead', 'M2FPixelDecoder', 'M2FMaskedTransformerDecoder',
                 'M2FClassLoss', 'M2FPointBCELoss', 'M2FPointDiceLoss',
                 'M2FResNet', 'M2FEncoderDecoder', 'M2FGraphedHead']
PLUGIN_TASK_UTILS = ['M2FHungarianMatcher']


def test_custom_imports_registers_everything():
    """A fresh interpreter: only ``custom_imports`` in a config registers."""
    code = f'''
from mmengine.config import Config
from mmengine.utils import import_modules_from_strings
from mmseg.registry import MODELS, TASK_UTILS
cfg = Config(dict(custom_imports=dict(imports=['m2f_plugin'],
                                      allow_failed_imports=False)))
assert 'M2FHead' not in MODELS.module_dict
import_modules_from_strings(**cfg.custom_imports)
for name in {PLUGIN_MODELS!r}:
    assert MODELS.get(name).__module__.startswith('m2f_plugin'), name
for name in {PLUGIN_TASK_UTILS!r}:
    assert TASK_UTILS.get(name).__module__.startswith('m2f_plugin'), name
print('ok')
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'


def test_no_clash_with_mmseg_or_mmdet():
    import mmdet.models  # noqa: F401
    import mmdet.registry as det
    import mmseg.models  # noqa: F401
    import mmseg.registry as seg

    import m2f_plugin  # noqa: F401
    for name in PLUGIN_MODELS:
        assert name not in det.MODELS.module_dict, name
        assert seg.MODELS.module_dict[name].__module__.startswith('m2f_plugin')
    for name in PLUGIN_TASK_UTILS:
        assert name not in det.TASK_UTILS.module_dict, name
        assert seg.TASK_UTILS.module_dict[name].__module__.startswith(
            'm2f_plugin')
    # and every plugin-registered name is one we meant to register
    ours = {n for n, c in seg.MODELS.module_dict.items()
            if c.__module__.startswith('m2f_plugin')}
    assert ours == set(PLUGIN_MODELS)
    assert seg.DATASETS.get('M2FSyntheticShapesDataset').__module__.startswith(
        'm2f_plugin')
    assert seg.HOOKS.get('M2FRandomStateHook').__module__.startswith(
        'm2f_plugin')
    assert seg.OPTIM_WRAPPER_CONSTRUCTORS.get(
        'M2FOptimWrapperConstructor').__module__.startswith('m2f_plugin')
    from mmengine.registry import MODEL_WRAPPERS
    assert 'M2FCPUDistributedDataParallel' in MODEL_WRAPPERS.module_dict
    for registry in (det.DATASETS, det.HOOKS, det.MODEL_WRAPPERS,
                     det.OPTIM_WRAPPER_CONSTRUCTORS):
        assert not any(n.startswith('M2F') for n in registry.module_dict)
