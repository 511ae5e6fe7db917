"""custom_imports registers every module, under names nobody else uses."""
from __future__ import annotations

import subprocess
import sys

PLUGIN_MODELS = ['M2FHead', 'M2FPixelDecoder', 'M2FMaskedTransformerDecoder',
                 'M2FClassLoss', 'M2FPointBCELoss', 'M2FPointDiceLoss',
                 'M2FResNet', 'M2FEncoderDecoder', 'M2FGraphedHead',
                 'M2FDetHead', 'M2FFusionHead']
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
from mmdet.registry import MODELS as DET_MODELS
for name in {PLUGIN_MODELS!r}:
    assert DET_MODELS.get(name) is MODELS.get(name), name
print('ok')
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    # (the OneDL toolboxes print a note of their own on import)
    assert out.stdout.strip().splitlines()[-1] == 'ok'


PLUGIN_HOOKS = ['M2FRandomStateHook', 'M2FNumClassesCheckHook',
                'M2FNonFiniteLossHook', 'M2FFiniteCheckpointHook',
                'M2FResumeScheduleHook', 'M2FCompileHook']


def test_same_classes_in_mmseg_and_mmdet_and_no_clash():
    """Models, task utils, hooks and the optimizer-wrapper constructor live
    in both toolboxes' registries as the same class objects; nothing else
    of ours is registered, and no name of ours is one of theirs."""
    import mmdet.models  # noqa: F401  (mmdet's own names)
    import mmdet.registry as det
    import mmseg.models  # noqa: F401
    import mmseg.registry as seg

    import m2f_plugin  # noqa: F401
    expected = dict(MODELS=PLUGIN_MODELS, TASK_UTILS=PLUGIN_TASK_UTILS,
                    HOOKS=PLUGIN_HOOKS,
                    OPTIM_WRAPPER_CONSTRUCTORS=['M2FOptimWrapperConstructor'])
    for kind, names in expected.items():
        ours_seg = {n: c for n, c in getattr(seg, kind).module_dict.items()
                    if c.__module__.startswith('m2f_plugin')}
        ours_det = {n: c for n, c in getattr(det, kind).module_dict.items()
                    if c.__module__.startswith('m2f_plugin')}
        assert set(ours_seg) == set(names), kind
        assert ours_det == ours_seg, kind  # same names, same class objects
        for name in names:  # not a name mmseg or mmdet use themselves
            assert name.startswith('M2F'), name
    assert seg.DATASETS.get('M2FSyntheticShapesDataset').__module__.startswith(
        'm2f_plugin')
    from mmengine.registry import MODEL_WRAPPERS
    assert 'M2FCPUDistributedDataParallel' in MODEL_WRAPPERS.module_dict
    # the embedded data in COCO instance/panoptic form: mmdet's data sets
    ours_det_data = {n for n, c in det.DATASETS.module_dict.items()
                     if c.__module__.startswith('m2f_plugin')}
    assert ours_det_data == {'M2FSyntheticShapesCocoDataset',
                             'M2FSyntheticShapesPanopticDataset'}
    assert not any(n.startswith('M2F') for n in det.MODEL_WRAPPERS.module_dict)


def test_mmdet_scope_builds_the_head_and_its_parts():
    """Under ``default_scope='mmdet'`` the head and the parts it builds
    inside itself resolve; ``mmseg.``/``mmdet.`` prefixes work under either
    scope."""
    from mmdet.registry import MODELS as DET
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS as SEG

    from tests.helpers import TINY_HEAD_CFG
    results = []
    with DefaultScope.overwrite_default_scope('mmdet'):
        results.append(DET.build(dict(TINY_HEAD_CFG)))
        results.append(DET.build(dict(TINY_HEAD_CFG, type='mmseg.M2FHead')))
    with DefaultScope.overwrite_default_scope('mmseg'):
        results.append(SEG.build(dict(TINY_HEAD_CFG, type='mmdet.M2FHead')))
    for head in results:
        assert type(head).__name__ == 'M2FHead'
        assert type(head.pixel_decoder).__name__ == 'M2FPixelDecoder'
        assert type(head.criterion.matcher).__name__ == 'M2FHungarianMatcher'


def test_without_usable_mmdet_the_mmseg_side_imports_with_one_warning():
    code = '''
import sys, warnings
sys.modules['mmdet'] = None  # as if mmdet were missing
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    import m2f_plugin
from mmseg.registry import MODELS
assert MODELS.get('M2FHead') is not None
ours = [str(w.message) for w in caught if 'm2f_plugin: mmdet' in str(w.message)]
assert len(ours) == 1, ours
print(ours[0])
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'mmdet is not usable' in out.stdout
    assert "registered for mmseg only" in out.stdout
