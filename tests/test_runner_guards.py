"""The training guards are the configs' own ``custom_hooks``
(``configs/_base_/m2f_runtime.py``): a plain ``Runner.from_cfg(cfg)`` builds
them, ``tools/train.py`` / ``tools/test.py`` only apply their options to the
config and add back guards that a config leaves out.

Nothing trains here: the hooks are registered when the runner is built.
"""
from __future__ import annotations

import copy
import glob
import importlib.util
import os.path as osp
from typing import List

import pytest
from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.runner import Runner
from mmseg.registry import HOOKS

from m2f_plugin.engine import (
    M2FFiniteCheckpointHook,
    M2FNonFiniteLossHook,
    M2FNumClassesCheckHook,
    M2FRandomStateHook,
    M2FResumeScheduleHook,
    train_command,
)
from m2f_plugin.engine.train_command import (
    add_missing_hooks,
    config_hooks,
    guard_hooks,
    runtime_base,
)
from tests.helpers import CONFIGS, DEMO_CONFIG, REPO

PANOPTIC_DEMO = osp.join(
    CONFIGS, 'demo',
    'mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py')
SHIPPED = sorted(p for p in glob.glob(osp.join(CONFIGS, '**', '*.py'),
                                      recursive=True)
                 if '_base_' not in p.split(osp.sep))
GUARDS = [M2FNumClassesCheckHook, M2FNonFiniteLossHook,
          M2FFiniteCheckpointHook, M2FResumeScheduleHook]
GUARD_NAMES = [g.__name__ for g in GUARDS]


def _tool(name: str):
    """``tools/<name>.py`` as a module (its ``parse_args``, ``load_config``)."""
    spec = importlib.util.spec_from_file_location(
        f'm2f_tools_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def warnings_logged(monkeypatch) -> List[str]:
    """The messages ``add_missing_hooks`` logs."""
    logged: List[str] = []
    monkeypatch.setattr(train_command, 'print_log',
                        lambda msg, *a, **k: logged.append(msg))
    return logged


def _names(entries) -> List[str]:
    return [str(e['type']).rsplit('.', 1)[-1] for e in entries]


def _runner(cfg: Config, work_dir: str, name: str) -> Runner:
    """``Runner.from_cfg``, the way a user's own script builds it."""
    cfg.work_dir = work_dir
    cfg.experiment_name = name
    cfg.visualizer.name = name  # one instance per runner
    return Runner.from_cfg(cfg)


def _write_user_config(tmp_path, text: str) -> str:
    path = tmp_path / 'user_cfg.py'
    path.write_text(f'_base_ = [{DEMO_CONFIG!r}]\n' + text)
    return str(path)


def test_runtime_base_is_the_guards_file():
    """The installed copy (m2f_plugin/.mim, a link in a checkout) or the
    checkout's: the file the configs inherit."""
    assert osp.realpath(runtime_base()) == osp.realpath(
        osp.join(CONFIGS, '_base_', 'm2f_runtime.py'))
    assert _names(guard_hooks()) == GUARD_NAMES


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: osp.relpath(p, CONFIGS))
def test_every_shipped_config_declares_the_guards(path):
    """Each guard once, with the runtime base's options; the compile hook
    (m2f_plugin.accel) only in a config that compiles."""
    cfg = Config.fromfile(path)
    hooks = cfg.get('custom_hooks') or []
    for guard in guard_hooks():
        assert [dict(h) for h in hooks if h['type'] == guard['type']] == \
            [guard], (guard, hooks)
    compiles = cfg.get('compile', None) not in (None, False)
    assert ('M2FCompileHook' in _names(hooks)) == compiles


@pytest.mark.parametrize('config', [DEMO_CONFIG, PANOPTIC_DEMO],
                         ids=['semantic', 'panoptic'])
def test_plain_runner_from_cfg_registers_the_guards(config, tmp_path):
    """``Runner.from_cfg`` on the demo configs (mmseg's segmentor, mmdet's
    detector) builds every guard once, in the order tools/train.py used to
    register them: the loss guard before the checkpoint guard before
    mmengine's CheckpointHook."""
    name = f'guards_{osp.basename(config)[:-3]}'
    runner = _runner(Config.fromfile(config), str(tmp_path), name)
    hooks = runner.hooks
    for guard in GUARDS + [M2FRandomStateHook]:
        assert sum(isinstance(h, guard) for h in hooks) == 1, (guard, hooks)
    order = [i for i, h in enumerate(hooks) if isinstance(
        h, (M2FNonFiniteLossHook, M2FFiniteCheckpointHook, CheckpointHook))]
    assert [type(hooks[i]) for i in order] == [
        M2FNonFiniteLossHook, M2FFiniteCheckpointHook, CheckpointHook]
    resume = next(h for h in hooks if isinstance(h, M2FResumeScheduleHook))
    assert resume.on_change == 'error'
    loss = next(h for h in hooks if isinstance(h, M2FNonFiniteLossHook))
    assert loss.policy == 'auto'


def test_train_tool_resume_schedule_reaches_the_hook(tmp_path,
                                                     warnings_logged):
    """``--resume-schedule config`` sets the option on the config's entry
    (nothing added, nothing logged); the runner's hook has it."""
    train = _tool('train')
    args = train.parse_args([DEMO_CONFIG, '--work-dir', str(tmp_path),
                             '--resume-schedule', 'config', '--amp'])
    cfg = train.load_config(args)
    entries = config_hooks(cfg, 'M2FResumeScheduleHook')
    assert [dict(e) for e in entries] == [
        dict(type='M2FResumeScheduleHook', on_change='config')]
    assert _names(cfg.custom_hooks) == ['M2FRandomStateHook'] + GUARD_NAMES
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'  # --amp still applies
    assert warnings_logged == []
    assert 'M2FCompileHook' not in _names(cfg.custom_hooks)
    runner = _runner(cfg, str(tmp_path), 'guards_resume_schedule')
    hooks = [h for h in runner.hooks if isinstance(h, M2FResumeScheduleHook)]
    assert [h.on_change for h in hooks] == ['config']
    # without the option, the config's value stays
    cfg = train.load_config(train.parse_args([DEMO_CONFIG]))
    assert config_hooks(cfg, 'M2FResumeScheduleHook')[0].on_change == 'error'


def test_train_tool_adds_the_guards_a_user_config_replaced(tmp_path,
                                                          warnings_logged):
    """A child config that sets its own custom_hooks replaces the base's list
    (mmengine's merge rule): a plain runner has no guards, tools/train.py adds
    them (with --resume-schedule's option) and says so."""
    path = _write_user_config(
        tmp_path, "custom_hooks = [dict(type='M2FRandomStateHook')]\n")
    cfg = Config.fromfile(path)
    assert _names(cfg.custom_hooks) == ['M2FRandomStateHook']
    train = _tool('train')
    cfg = train.load_config(train.parse_args(
        [path, '--work-dir', str(tmp_path), '--resume-schedule',
         'checkpoint']))
    assert _names(cfg.custom_hooks) == ['M2FRandomStateHook'] + GUARD_NAMES
    assert config_hooks(cfg, 'M2FResumeScheduleHook')[0].on_change == \
        'checkpoint'
    assert len(warnings_logged) == 1
    msg = warnings_logged[0]
    assert msg.startswith('tools/train.py: the config does not declare '
                          + ', '.join(GUARD_NAMES)), msg
    assert '_base_/m2f_runtime.py' in msg


def test_train_tool_keeps_a_subclass_and_scoped_names(tmp_path,
                                                     warnings_logged):
    """A guard declared as a subclass, or by a scoped name, counts: not
    added a second time."""

    @HOOKS.register_module(force=True)
    class StricterLossHook(M2FNonFiniteLossHook):
        pass

    path = _write_user_config(
        tmp_path,
        "custom_hooks = [dict(type='StricterLossHook', policy='raise'),\n"
        "                dict(type='mmseg.M2FNumClassesCheckHook')]\n")
    train = _tool('train')
    cfg = train.load_config(train.parse_args([path]))
    assert _names(cfg.custom_hooks) == [
        'StricterLossHook', 'M2FNumClassesCheckHook',
        'M2FFiniteCheckpointHook', 'M2FResumeScheduleHook']
    assert 'M2FNonFiniteLossHook' not in warnings_logged[0]


def test_train_tool_adds_the_compile_hook_only_when_compiling(tmp_path,
                                                             warnings_logged):
    path = _write_user_config(tmp_path, 'compile = True\n')
    train = _tool('train')
    cfg = train.load_config(train.parse_args([path]))
    assert _names(cfg.custom_hooks) == [
        'M2FRandomStateHook'] + GUARD_NAMES + ['M2FCompileHook']
    assert len(warnings_logged) == 1 and 'M2FCompileHook' in warnings_logged[0]
    bad = _write_user_config(tmp_path, "compile = 'yes'\n")
    with pytest.raises(TypeError, match='compile must be a bool'):
        train.load_config(train.parse_args([bad]))


def test_test_tool_adds_only_the_test_time_guards(tmp_path, warnings_logged):
    path = _write_user_config(tmp_path, 'custom_hooks = []\n')
    test = _tool('test')
    cfg = test.load_config(test.parse_args([path, 'ckpt.pth']))
    assert _names(cfg.custom_hooks) == ['M2FNumClassesCheckHook',
                                        'M2FFiniteCheckpointHook']
    assert warnings_logged[0].startswith('tools/test.py: ')
    # the demo's own: nothing added
    cfg = test.load_config(test.parse_args([DEMO_CONFIG, 'ckpt.pth']))
    assert _names(cfg.custom_hooks) == ['M2FRandomStateHook'] + GUARD_NAMES
    assert len(warnings_logged) == 1


def test_add_missing_hooks_leaves_the_list_it_was_given():
    cfg = Config(dict(default_scope='mmdet',
                      custom_hooks=[dict(type='mmdet.M2FFiniteCheckpointHook')]))
    before = copy.deepcopy(cfg.custom_hooks)
    added = add_missing_hooks(cfg, guard_hooks())
    assert added == ['M2FNumClassesCheckHook', 'M2FNonFiniteLossHook',
                     'M2FResumeScheduleHook']
    assert cfg.custom_hooks[:1] == before
    assert add_missing_hooks(cfg, guard_hooks()) == []
