"""Imports between the packages of ``m2f_plugin`` only go downward.

Every module is read with ``ast`` (nothing is imported), relative imports are
resolved, and each import of another ``m2f_plugin`` package is checked
against ``RULES``. The layers, low to high:

    ops                          numeric primitives (torch, mmcv's op)
    structures    postprocess    data of a batch | inference post-processing
    models                       the network, matcher and losses
    accel  engine  export        opt-in wrappers | hooks | tracing
    tools, the package __init__  entry points, registration

and the side packages (``utils``, ``version``, ``registry``, ``converters``,
``datasets``, ``evaluation``, ``visualization``) with their own rules: none
of them imports the model (``models`` may use ``converters``). Nothing but
the package ``__init__`` and ``tools`` imports ``accel``. Imports within one
package are not checked.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / 'm2f_plugin'
ROOT = '__init__'  # the package's own __init__: registers everything

_CORE = ('ops', 'structures', 'postprocess', 'models')

# unit (subpackage, or top-level module) -> (units it may import, why)
RULES: Dict[str, Tuple[FrozenSet[str], str]] = {
    'ops': (frozenset(),
            'ops is the bottom layer: tensors in, tensors out'),
    'structures': (frozenset({'ops'}),
                   'structures hold a batch\'s data over the primitives'),
    'postprocess': (frozenset({'ops'}),
                    'postprocess is torch-only, beside structures'),
    'models': (frozenset({'ops', 'structures', 'postprocess', 'converters'}),
               'models build on ops and structures; the heads post-process '
               'at inference and translate built-in configs (converters)'),
    'accel': (frozenset({'ops', 'structures', 'models'}),
              'accel wraps the model; the model never needs it'),
    'engine': (frozenset({'structures', 'models'}),
               'engine hooks inspect the model they train'),
    'export': (frozenset(_CORE) | {'version'},
               'export traces the plain model (never accel) and its '
               'post-processing, and stamps the version'),
    'converters': (frozenset(),
                   'converters map checkpoint keys and configs; they must '
                   'not import the model'),
    'datasets': (frozenset({'utils'}),
                 'datasets write their files with utils\' folder guards'),
    'evaluation': (frozenset(), 'evaluation wraps mmseg\'s metrics only'),
    'visualization': (frozenset(), 'visualization draws results only'),
    'utils': (frozenset(), 'utils are leaves: version checks, warning '
              'filters, folder guards'),
    'version': (frozenset(), 'version is a constant'),
    'registry': (frozenset(),
                 'registry mirrors registered classes by name only'),
    'tools': (frozenset(), 'tools are entry points: anything'),  # see ANY
    ROOT: (frozenset(), 'the package __init__ registers everything'),
}
ANY = frozenset({'tools', ROOT})  # the top: may import every unit

# ``import m2f_plugin`` (the package itself) registers every module: a
# function that builds a model from a config calls it at run time. Allowed
# only inside a function (at import time the package may still be
# initialising) and only in the units that build models from configs.
ROOT_IMPORTERS = frozenset({'converters', 'export', 'tools'})

# third-party modules the bottom layers may use: ops stays numeric (mmcv for
# the deformable-attention op; triton and projects_ops' kernels only at first
# use, inside functions), structures add mmengine at most
THIRD_PARTY = {
    'ops': (frozenset({'torch', 'mmcv'}),
            frozenset({'torch', 'mmcv', 'triton', 'projects_ops'})),
    'structures': (frozenset({'torch', 'mmengine'}),
                   frozenset({'torch', 'mmengine'})),
}


@dataclass(frozen=True)
class Import:
    """One imported module (``name``, absolute) of a file."""

    path: Path
    line: int
    name: str
    in_function: bool

    def where(self) -> str:
        return f'{self.path.relative_to(PACKAGE.parent)}:{self.line}'


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _unit(path: Path) -> str:
    """The unit of a file: its subpackage, top-level module, or ROOT."""
    rel = path.relative_to(PACKAGE).parts
    if len(rel) == 1:
        return Path(rel[0]).stem  # __init__ (ROOT), registry, version
    return rel[0]


def _target_unit(name: str) -> Optional[str]:
    """The unit of an imported ``m2f_plugin...`` module; None: not ours."""
    parts = name.split('.')
    if parts[0] != 'm2f_plugin':
        return None
    return ROOT if len(parts) == 1 else parts[1]


def _is_unit(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f'{name}.py').is_file()


def _imports(path: Path, source: Optional[str] = None) -> Iterator[Import]:
    """Every module a file (or ``source`` as if it were that file) imports,
    relative imports resolved. ``from m2f_plugin import x`` (``from . import
    x`` in the root) yields ``m2f_plugin.x`` for a unit x, else the root."""
    tree = ast.parse(path.read_text() if source is None else source,
                     str(path))
    module = _module_name(path)
    package = module if path.name == '__init__.py' else module.rpartition(
        '.')[0]
    # nodes inside a def: imported at call time
    lazy = {id(n) for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        in_function = id(node) in lazy
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                name = '.'.join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ''
            names = [name]
            if name == 'm2f_plugin':
                names = [f'{name}.{a.name}' if _is_unit(a.name) else name
                         for a in node.names]
        else:
            continue
        for name in names:
            yield Import(path, node.lineno, name, in_function)


def _all_imports() -> List[Tuple[str, Import]]:
    return [(_unit(p), imp) for p in sorted(PACKAGE.rglob('*.py'))
            for imp in _imports(p)]


def _violation(unit: str, imp: Import) -> Optional[str]:
    """Why ``imp`` of a file of ``unit`` breaks a rule; None if it is fine."""
    target = _target_unit(imp.name)
    if target is None or target == unit:
        return None
    if target == ROOT:
        if unit in ROOT_IMPORTERS and imp.in_function:
            return None
        return (f'{imp.where()}: {unit} imports `{imp.name}` (the package '
                'root, which registers every module); rule: only inside a '
                f'function of {sorted(ROOT_IMPORTERS)}')
    if unit in ANY:
        return None
    allowed, why = RULES[unit]
    if target in allowed:
        return None
    return (f'{imp.where()}: {unit} imports `{imp.name}` ({target}); rule: '
            f'{unit} may import only {sorted(allowed) or "nothing of ours"} '
            f'({why})')


def test_every_unit_has_a_rule():
    units = {_unit(p) for p in PACKAGE.rglob('*.py')}
    missing = sorted(units - set(RULES))
    assert not missing, f'add a layering rule for {missing} in {__file__}'


def test_imports_only_go_downward():
    found = [_violation(unit, imp) for unit, imp in _all_imports()]
    problems = [f for f in found if f]
    assert not problems, 'upward imports:\n' + '\n'.join(problems)


def test_only_the_root_and_tools_import_accel():
    # the claim "accel is optional; the model never needs it", by itself
    users = sorted({imp.where() for unit, imp in _all_imports()
                    if _target_unit(imp.name) == 'accel'
                    and unit not in ('accel', ROOT, 'tools')})
    assert not users, f'accel is opt-in; imported by {users}'


def test_bottom_layers_use_few_third_party_modules():
    stdlib = sys.stdlib_module_names | {'__future__'}
    problems = []
    for unit, imp in _all_imports():
        if unit not in THIRD_PARTY or _target_unit(imp.name) is not None:
            continue
        top = imp.name.split('.')[0]
        eager, lazy = THIRD_PARTY[unit]
        allowed = lazy if imp.in_function else eager
        if top and top not in stdlib and top not in allowed:
            problems.append(
                f'{imp.where()}: {unit} imports `{imp.name}`; rule: {unit} '
                f'may use only {sorted(allowed)} besides the standard '
                'library' + ('' if imp.in_function else
                             f' at module level ({sorted(lazy)} in functions)'))
    assert not problems, '\n'.join(problems)


def test_the_checker_sees_upward_imports():
    """The checker itself, on sources placed in ``structures/``: upward
    imports are caught with the rule named, a downward one passes."""
    here = PACKAGE / 'structures' / 'predictions.py'
    cases = {
        'from ..models.layers import FFN\n':
            'structures imports `m2f_plugin.models.layers` (models)',
        'from .. import accel\n': '`m2f_plugin.accel` (accel); rule: '
            "structures may import only ['ops']",
        'def f():\n    import m2f_plugin\n': 'the package root',
        'from ..ops import point_sample\n': None,
        'from .mask_targets import SemanticTargets\n': None,
    }
    for source, expected in cases.items():
        messages = [m for m in (_violation('structures', i)
                                for i in _imports(here, source)) if m]
        if expected is None:
            assert not messages, messages
        else:
            assert len(messages) == 1 and expected in messages[0], messages
