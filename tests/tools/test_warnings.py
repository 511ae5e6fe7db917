"""A clean first run: only the listed third-party messages are hidden, our
own code prints no warnings, the optimizer logs one line per group, and the
converter's printed next step works."""
from __future__ import annotations

import copy
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from m2f_plugin.tools import demo
from m2f_plugin.utils.warning_filters import (
    LOG_FILTERS,
    WARNING_FILTERS,
    MMEngineLogFilter,
    install_warning_filters,
    python_warnings_option,
)

DEMO_CONFIG = osp.join(demo.REPO, demo.DEMO_CONFIG)


def _warn_from(message: str, category, module: str) -> None:
    warnings.warn_explicit(message, category, f'{module}.py', 1, module=module)


def _shown(message: str, category, module: str) -> bool:
    """Whether ``message`` issued from ``module`` gets through our filters
    (on top of 'always', i.e. of everything else being shown)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        install_warning_filters()
        _warn_from(message, category, module)
    return len(caught) == 1


@pytest.mark.parametrize('entry', WARNING_FILTERS,
                         ids=[f.message[:30] for f in WARNING_FILTERS])
def test_python_filters_hide_exactly_the_listed_warnings(entry):
    text = entry.message + ' (and the rest of the message)'
    for module in entry.modules:
        assert not _shown(text, entry.category, module)
        # the same text from another module, of another category, or another
        # message from the same module: shown
        assert _shown(text, entry.category, 'm2f_plugin.models')
        assert _shown(text, entry.category, module + '_other')
        assert _shown(text, FutureWarning, module)
        assert _shown('something else went wrong', entry.category, module)


def test_pytest_ini_repeats_the_runtime_filters(pytestconfig):
    """pytest resets warning filters for every test: pytest.ini must list
    every runtime filter (same message, category and module)."""
    ini = pytestconfig.getini('filterwarnings')
    assert ini, 'pytest.ini has no filterwarnings'
    parsed = []
    for line in ini:
        action, message, category, module = (line.split(':') + [''] * 4)[:4]
        parsed.append((action, re.compile(message, re.I), category,
                       re.compile(module)))
    for f in WARNING_FILTERS:
        for module in f.modules:
            assert any(
                action == 'ignore' and message.match(f.message)
                and category == f.category.__name__
                and mod.match(module) and not mod.match(module + '_other')
                for action, message, category, mod in parsed), (f, module)


def test_pythonwarnings_option_for_child_processes():
    """The demo passes the filters to ``mim`` (which does not import us)."""
    code = ('import warnings\n'
            'for module in ("mim.commands.list", "other"):\n'
            '    warnings.warn_explicit("pkg_resources is deprecated as an API. '
            'See ...", UserWarning, "x.py", 1, module=module)\n')
    env = dict(os.environ, PYTHONWARNINGS=python_warnings_option())
    proc = subprocess.run([sys.executable, '-c', code], env=env,
                          capture_output=True, text=True, check=True)
    assert proc.stderr.count('pkg_resources is deprecated') == 1
    assert 'x.py:1' in proc.stderr  # the one from "other"


@pytest.fixture
def new_logger():
    """Makes MMLoggers like the Runner's (a new instance, the 'current' one
    from then on); call it in the test body, where its stream handler binds
    to the captured stdout. Removed at teardown."""
    names = []

    def make(logger_name: str = 'mmengine') -> MMLogger:
        names.append(f'm2f_test_{logger_name}_{len(MMLogger._instance_dict)}')
        return MMLogger.get_instance(names[-1], logger_name=logger_name)

    yield make
    for name in names:
        MMLogger._instance_dict.pop(name, None)


def test_log_filter_drops_exactly_the_listed_mmengine_warnings(new_logger,
                                                               capsys):
    import logging

    from mmengine.fileio import FileClient

    fresh_logger = new_logger()
    # loggers created after the import get the filter too (the Runner's)
    assert any(isinstance(f, MMEngineLogFilter) for f in fresh_logger.filters)
    FileClient.infer_client(None, '/tmp')  # mmengine's real deprecation log
    for message, _ in LOG_FILTERS:
        fresh_logger.warning(message + ' (rest)')
        fresh_logger.info(message + ' (as INFO)')
    fresh_logger.warning('Failed to search registry with scope "mmseg" in the '
                         '"model" registry tree.')
    new_logger('other').warning(LOG_FILTERS[0][0])
    out = capsys.readouterr().out
    # FileClient's own warning is gone; the INFO line and the other logger's
    # WARNING with the same text are kept
    assert out.count('"FileClient" will be deprecated') == 2
    assert '(rest)' not in out
    assert out.count('(as INFO)') == len(LOG_FILTERS)
    assert 'in the "model" registry tree' in out  # only "function" is hidden
    assert f'other - WARNING - {LOG_FILTERS[0][0]}' in out
    assert logging.getLogger('mmengine').filters == []  # nothing global


def _build_demo_model():
    from mmseg.registry import MODELS
    cfg = Config.fromfile(DEMO_CONFIG)
    torch.manual_seed(0)
    return cfg, MODELS.build(cfg.model)


def test_demo_model_and_optimizer_build_without_warnings(new_logger, capsys):
    """Loading the demo config and building our model and optimizer warns
    about nothing but the listed third-party messages (mmengine's
    pkg_resources use), and the optimizer constructor logs one line per
    merged group instead of one per parameter."""
    from mmengine.optim import build_optim_wrapper
    new_logger()  # the constructor logs to the current logger
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        install_warning_filters()
        cfg, model = _build_demo_model()
        wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    assert [f'{w.category.__name__}: {w.message}' for w in caught] == []

    groups = wrapper.optimizer.param_groups
    lines = [line for line in capsys.readouterr().out.splitlines()
             if 'paramwise_options' in line]
    assert len(groups) == len(lines) == 3
    counts = [int(re.search(r'-> (\d+) parameters', line).group(1))
              for line in lines]
    assert counts == [len(g['params']) for g in groups]
    assert sum(counts) == sum(p.requires_grad for p in model.parameters())
    for line, group in zip(lines, groups):
        assert f"lr={group['lr']}" in line
        assert f"weight_decay={group['weight_decay']}" in line
    assert '(optimizer defaults)' in lines[0]
    assert 'custom keys: level_embed, query_feat, query_embed' in lines[2]


def test_convert_next_step_works_for_a_model_only_config(tmp_path, capsys):
    """No mmseg data set has 5 classes: the config holds the model only, so
    the converter says what to add and prints a command that works now."""
    pytest.importorskip('transformers')
    from m2f_plugin.tools.convert import main
    from tests.converters import tiny_hf_model

    tiny_hf_model('swin', seed=0).save_pretrained(tmp_path / 'hf')
    dst = tmp_path / 'out' / 'm2f.pth'
    assert main([str(tmp_path / 'hf'), str(dst), '--from', 'hf']) == 0
    out = capsys.readouterr().out
    cfg_path = tmp_path / 'out' / 'm2f.py'
    assert 'evaluate:' not in out
    assert 'holds the model only' in out
    assert 'test_dataloader, test_evaluator, test_cfg' in out
    assert f'mim test m2f_plugin {cfg_path} --checkpoint {dst}' in out
    command = out.strip().splitlines()[-1].strip()
    assert command.startswith('python -c ')
    argv = shlex.split(command)
    proc = subprocess.run([sys.executable] + argv[1:], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
