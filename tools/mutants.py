"""Mutation testing of m2f_plugin: do the fast tests notice a small code change?

Each mutant is one small edit of a target module (a flipped comparison, a
swapped operator, an off-by-one constant, ...). It is applied in a copy of the
tree (the checkout itself is never modified), the test files mapped to the
module run with ``-x``, and the mutant counts as *killed* (a test failed),
*survived* (all passed: a gap in the tests, or an equivalent mutant) or
*timeout*. Mutants are enumerated deterministically, so ``--sample N --seed S``
picks the same mutants again as long as the target modules are unchanged.

Example::

    python tools/mutants.py --sample 40 --seed 1 --json mutants.json
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

DEFAULT_TARGETS = ('m2f_plugin/ops', 'm2f_plugin/models/heads',
                   'm2f_plugin/models/matcher', 'm2f_plugin/structures',
                   'm2f_plugin/engine')

# target file or folder -> the fast test files that exercise it; the longest
# matching prefix of a target module's path wins. The equivalence tests with
# mmseg's and mmdet's own Mask2Former (~2 min each) are left to the suite.
DEFAULT_TESTS: Dict[str, Tuple[str, ...]] = {
    'm2f_plugin/ops': (
        'tests/structures', 'tests/models/test_fast_costs.py',
        'tests/models/test_matcher.py'),
    'm2f_plugin/ops/mask_products.py': (
        'tests/accel/test_splitk.py', 'tests/structures/test_predictions.py'),
    'm2f_plugin/ops/msda.py': ('tests/accel/test_msda_ops.py',),
    'm2f_plugin/models/heads': (
        'tests/models/test_head.py', 'tests/models/test_fusion_head.py',
        'tests/models/test_mmdet_head_inputs.py',
        'tests/models/test_mmdet_head_host_work.py'),
    'm2f_plugin/models/heads/mmseg_head.py': ('tests/models/test_head.py',),
    'm2f_plugin/postprocess/semantic.py': (
        'tests/models/test_head.py', 'tests/models/test_fusion_head.py'),
    'm2f_plugin/models/heads/mmdet_head.py': (
        'tests/models/test_mmdet_head_inputs.py',
        'tests/models/test_mmdet_head_host_work.py',
        'tests/models/test_mmdet_head_amp.py'),
    'm2f_plugin/models/heads/fusion_head.py': (
        'tests/models/test_fusion_head.py',
        'tests/models/test_mmdet_head_inputs.py'),
    'm2f_plugin/models/matcher': (
        'tests/models/test_matcher.py', 'tests/models/test_fast_costs.py'),
    'm2f_plugin/structures': (
        'tests/structures', 'tests/models/test_matcher.py'),
    'm2f_plugin/structures/instances_to_masks.py': (
        'tests/structures', 'tests/datasets/test_shapes_mmdet.py',
        'tests/models/test_mmdet_head_inputs.py'),
    'm2f_plugin/engine': ('tests/engine', 'tests/test_finetune_class_count.py'),
    'm2f_plugin/engine/optim_wrapper_constructor.py': (
        'tests/test_optim_wrapper_constructor.py',),
    'm2f_plugin/engine/nonfinite_loss_hook.py': (
        'tests/engine/test_nonfinite_loss_hook.py',),
    'm2f_plugin/engine/finite_checkpoint_hook.py': (
        'tests/engine/test_finite_checkpoint_hook.py',),
    'm2f_plugin/engine/resume_schedule_hook.py': (
        'tests/engine/test_resume_schedule_hook.py',
        'tests/engine/test_resume_advice.py'),
    'm2f_plugin/engine/nonfinite_error.py': (
        'tests/engine/test_resume_advice.py',
        'tests/engine/test_nonfinite_loss_hook.py'),
    'm2f_plugin/engine/train_command.py': ('tests/engine/test_resume_advice.py',),
    'm2f_plugin/engine/num_classes_check_hook.py': (
        'tests/engine/test_num_classes_things_stuff.py',
        'tests/test_finetune_class_count.py'),
}

PYTEST_ARGS = ('-x', '-q', '-p', 'no:cacheprovider')
DEFAULT_MARKERS = 'not slow'

COMPARE_FLIPS = {ast.GtE: (ast.Gt, '>=', '>'), ast.Gt: (ast.GtE, '>', '>='),
                 ast.Lt: (ast.LtE, '<', '<='), ast.LtE: (ast.Lt, '<=', '<'),
                 ast.Eq: (ast.NotEq, '==', '!='),
                 ast.NotEq: (ast.Eq, '!=', '==')}
BINOP_FLIPS = {ast.Add: '+-', ast.Sub: '-+', ast.Mult: '*/', ast.Div: '/*'}
AUGOP_FLIPS = {ast.Add: ('+=', '-='), ast.Sub: ('-=', '+='),
               ast.Mult: ('*=', '/='), ast.Div: ('/=', '*=')}
NO_MUTATE = 'pragma: no mutate'


@dataclass(frozen=True)
class Mutant:
    """One edit of one module: replace bytes ``[start, end)`` by ``new``."""

    path: str  # relative to the tree root
    line: int
    operator: str
    start: int
    end: int
    new: str
    original_line: str = ''
    mutated_line: str = ''

    @property
    def key(self) -> str:
        return f'{self.path}:{self.line}:{self.start}:{self.operator}'


@dataclass
class Result:
    """What the mapped tests said about one mutant."""

    file: str
    line: int
    operator: str
    status: str  # killed | survived | timeout
    seconds: float
    original: str
    mutated: str
    tests: List[str] = field(default_factory=list)
    failure: str = ''


class _Source:
    """A module's text with byte offsets of its lines (ast columns are
    UTF-8 byte offsets)."""

    def __init__(self, text: str) -> None:
        self.data = text.encode()
        self.line_starts = [0]
        for match in re.finditer(b'\n', self.data):
            self.line_starts.append(match.end())

    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def line_of(self, offset: int) -> int:
        lo, hi = 0, len(self.line_starts)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.line_starts[mid] <= offset:
                lo = mid
            else:
                hi = mid
        return lo + 1

    def line_text(self, line: int, data: Optional[bytes] = None) -> str:
        data = self.data if data is None else data
        start = self.line_starts[line - 1]
        end = data.find(b'\n', start)
        return data[start:end if end >= 0 else len(data)].decode().strip()


def _find_op(source: _Source, start: int, end: int,
             symbol: str) -> Optional[int]:
    """Byte offset of ``symbol`` between two operands (comments blanked)."""
    gap = source.data[start:end].decode()
    gap = re.sub(r'#[^\n]*', lambda m: ' ' * len(m.group().encode()), gap)
    if symbol.isalpha():
        pattern = rf'\b{symbol}\b'
    else:
        pattern = rf'(?<![<>=!*/+\-]){re.escape(symbol)}(?![<>=*/])'
    found = [m.start() for m in re.finditer(pattern, gap)]
    if len(found) != 1:
        return None
    return start + len(gap[:found[0]].encode())


def _end(source: _Source, node: ast.AST) -> int:
    return source.offset(node.end_lineno, node.end_col_offset)


def _begin(source: _Source, node: ast.AST) -> int:
    return source.offset(node.lineno, node.col_offset)


def _skipped_lines(tree: ast.Module, text: str) -> set:
    """Lines never mutated: ``__all__``, ``TYPE_CHECKING`` blocks and lines
    marked ``# pragma: no mutate``."""
    skipped = {i + 1 for i, line in enumerate(text.splitlines())
               if NO_MUTATE in line}
    for node in ast.walk(tree):
        spans = []
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '__all__'
                for t in node.targets):
            spans.append(node)
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test):
            spans.append(node)
        for span in spans:
            skipped.update(range(span.lineno, span.end_lineno + 1))
    return skipped


def _annotation_nodes(tree: ast.Module) -> set:
    """ids of every node inside a type annotation."""
    inside = set()
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations.append(node.returns)
            args = node.args
            for arg in (args.posonlyargs + args.args + args.kwonlyargs
                        + [args.vararg, args.kwarg]):
                if arg is not None:
                    annotations.append(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for annotation in annotations:
            if annotation is not None:
                inside.update(id(n) for n in ast.walk(annotation))
    return inside


def generate(path: str, text: str) -> List[Mutant]:
    """Every mutant of one module, in source order."""
    tree = ast.parse(text)
    source = _Source(text)
    skipped = _skipped_lines(tree, text)
    in_annotation = _annotation_nodes(tree)
    edits: List[Tuple[int, int, str, str]] = []  # start, end, new, operator

    def at(node_start: int, symbol: str, new: str, name: str) -> None:
        edits.append((node_start, node_start + len(symbol.encode()), new, name))

    for node in ast.walk(tree):
        if id(node) in in_annotation:
            continue
        if isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                flip = COMPARE_FLIPS.get(type(op))
                if flip is not None:
                    _, old, new = flip
                    pos = _find_op(source, _end(source, left),
                                   _begin(source, right), old)
                    if pos is not None:
                        at(pos, old, new, f'{old} -> {new}')
                left = right
        elif isinstance(node, ast.BinOp) and type(node.op) in BINOP_FLIPS:
            old, new = BINOP_FLIPS[type(node.op)]
            pos = _find_op(source, _end(source, node.left),
                           _begin(source, node.right), old)
            if pos is not None:
                at(pos, old, new, f'{old} -> {new}')
        elif isinstance(node, ast.AugAssign) and type(node.op) in AUGOP_FLIPS:
            old, new = AUGOP_FLIPS[type(node.op)]
            pos = _find_op(source, _end(source, node.target),
                           _begin(source, node.value), old)
            if pos is not None:
                at(pos, old, new, f'{old} -> {new}')
        elif isinstance(node, ast.BoolOp):
            old, new = ('and', 'or') if isinstance(node.op, ast.And) else ('or', 'and')
            for left, right in zip(node.values, node.values[1:]):
                pos = _find_op(source, _end(source, left),
                               _begin(source, right), old)
                if pos is not None:
                    at(pos, old, new, f'{old} -> {new}')
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            start, end = _begin(source, node), _end(source, node)
            new = str(not node.value)
            edits.append((start, end, new, f'{node.value} -> {new}'))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            start, end = _begin(source, node), _end(source, node)
            new = {0: 1, 1: 0}.get(node.value, node.value + 1)
            edits.append((start, end, str(new), f'{node.value} -> {new}'))
        elif isinstance(node, ast.Call):
            named = [k for k in node.keywords
                     if k.arg is not None and isinstance(k.value, ast.Name)]
            for a, b in zip(named, named[1:]):
                if a.value.id == b.value.id:
                    continue
                # one edit of the span from a's value to b's value
                start, end = _begin(source, a.value), _end(source, b.value)
                middle = source.data[_end(source, a.value):
                                     _begin(source, b.value)].decode()
                edits.append((start, end, f'{b.value.id}{middle}{a.value.id}',
                              f'swap {a.arg}={a.value.id}, {b.arg}={b.value.id}'))
        elif isinstance(node, ast.If):
            body = node.body
            if len(body) == 1 and isinstance(body[0], ast.Raise):
                start, end = _begin(source, body[0]), _end(source, body[0])
                edits.append((start, end, 'pass', 'raise -> pass'))

    mutants = []
    for start, end, new, name in sorted(set(edits)):
        line = source.line_of(start)
        if line in skipped:
            continue
        data = source.data[:start] + new.encode() + source.data[end:]
        try:
            compile(data, path, 'exec', dont_inherit=True)
        except SyntaxError:
            continue
        mutants.append(Mutant(path, line, name, start, end, new,
                              source.line_text(line),
                              _Source(data.decode()).line_text(line)))
    return mutants


def target_files(root: Path, targets: Sequence[str]) -> List[str]:
    """The ``.py`` files under ``targets`` (files or folders), relative to
    ``root``, sorted; ``__init__.py`` files only when named."""
    files = set()
    for target in targets:
        path = root / target
        if path.is_file():
            files.add(path.relative_to(root).as_posix())
        elif path.is_dir():
            files.update(p.relative_to(root).as_posix()
                         for p in path.rglob('*.py') if p.name != '__init__.py')
        else:
            raise SystemExit(f'no such target: {target}')
    return sorted(files)


def tests_for(path: str, mapping: Dict[str, Sequence[str]]) -> List[str]:
    """The test files of the longest prefix of ``path`` in ``mapping``."""
    best = None
    for prefix in mapping:
        norm = prefix.rstrip('/')
        if path == norm or path.startswith(norm + '/'):
            if best is None or len(norm) > len(best.rstrip('/')):
                best = prefix
    if best is None:
        raise SystemExit(f'no tests mapped to {path}; pass --tests {path}=...')
    return list(mapping[best])


def copy_tree(root: Path, dest: Path) -> None:
    """Copy the tracked and untracked, not ignored, files of ``root``."""
    listed = subprocess.run(
        ['git', '-C', str(root), 'ls-files', '-z', '--cached', '--others',
         '--exclude-standard'], capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split('\0')):
        src = root / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_tests(python: str, tree: Path, tests: Sequence[str], markers: str,
              timeout: float) -> Tuple[str, float, str]:
    """Run ``tests`` in ``tree``: ``('passed'|'failed'|'timeout', seconds,
    output tail)``."""
    cmd = [python, '-m', 'pytest', *PYTEST_ARGS, *tests]
    if markers:
        cmd += ['-m', markers]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1',
               PYTHONPATH=os.pathsep.join(
                   [str(tree)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    began = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return 'timeout', time.monotonic() - began, ''
    tail = out.decode(errors='replace').strip().splitlines()[-3:]
    status = 'passed' if proc.returncode == 0 else 'failed'
    return status, time.monotonic() - began, '\n'.join(tail)


def _covering(paths: Iterable[str]) -> List[str]:
    """``paths`` without those inside another of them, sorted."""
    paths = {p.rstrip('/') for p in paths}
    return sorted(p for p in paths
                  if not any(p.startswith(q + '/') for q in paths))


def _write(tree: Path, path: str, data: bytes) -> None:
    """Write a module in the copy and drop its cached bytecode."""
    target = tree / path
    target.write_bytes(data)
    cache = target.parent / '__pycache__'
    for stale in cache.glob(target.stem + '.*.pyc') if cache.is_dir() else ():
        stale.unlink()


def _parse_mapping(entries: Sequence[str]) -> Dict[str, Tuple[str, ...]]:
    mapping = dict(DEFAULT_TESTS)
    for entry in entries:
        target, sep, tests = entry.partition('=')
        if not sep or not tests:
            raise SystemExit(f'--tests wants TARGET=TEST[,TEST...], got {entry!r}')
        mapping[target.rstrip('/')] = tuple(t for t in tests.split(',') if t)
    return mapping


def _group(path: str, targets: Sequence[str]) -> str:
    """The ``--targets`` entry a module belongs to (for the summary)."""
    for target in sorted(targets, key=len, reverse=True):
        norm = target.rstrip('/')
        if path == norm or path.startswith(norm + '/'):
            return norm
    return path


def summarize(results: Sequence[Result], targets: Sequence[str]) -> Dict:
    """Counts per target and in total."""
    groups: Dict[str, Dict[str, int]] = {}
    for result in results:
        for name in (_group(result.file, targets), 'total'):
            counts = groups.setdefault(
                name, {'killed': 0, 'survived': 0, 'timeout': 0})
            counts[result.status] += 1
    for counts in groups.values():
        total = sum(counts.values())
        counts['survival_rate'] = round(counts['survived'] / total, 3) if total else 0
    return groups


def _command_line(args: argparse.Namespace) -> str:
    parts = ['python', 'tools/mutants.py', '--targets', *args.targets]
    if args.replay:
        parts += ['--replay', str(args.replay)]
    else:
        parts += ['--sample', str(args.sample), '--seed', str(args.seed)]
    parts += ['--timeout', f'{args.timeout:g}', '-m', args.markers]
    for entry in args.tests:
        parts += ['--tests', entry]
    return shlex.join(parts)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--targets', nargs='+', default=list(DEFAULT_TARGETS),
                        help='modules or folders to mutate (relative to --root)')
    parser.add_argument('--tests', action='append', default=[],
                        metavar='TARGET=TEST[,TEST...]',
                        help='test files or folders for a target file or '
                             'folder (the longest prefix wins; adds to or '
                             'replaces the built-in mapping); repeatable')
    parser.add_argument('--sample', type=int, default=0,
                        help='run a random sample of N mutants (0: all)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the sample')
    parser.add_argument('--timeout', type=float, default=120,
                        help='seconds per mutant before it counts as a timeout')
    parser.add_argument('-m', '--markers', default=DEFAULT_MARKERS,
                        help='pytest -m expression (default: %(default)r)')
    parser.add_argument('--json', type=Path, help='write the report here')
    parser.add_argument('--replay', type=Path, metavar='REPORT.json',
                        help='run the mutants of an earlier report again '
                             '(instead of --sample/--seed), e.g. after the '
                             'tests or other modules changed')
    parser.add_argument('--root', type=Path, default=Path('.'),
                        help='the tree to copy (a git checkout; default: .)')
    parser.add_argument('--python', default=sys.executable,
                        help='interpreter that runs pytest')
    parser.add_argument('--list', action='store_true',
                        help='print the (sampled) mutants and exit')
    parser.add_argument('--keep', action='store_true',
                        help='keep the copy of the tree (its path is printed)')
    return parser.parse_args(argv)


def select(mutants: List[Mutant], sample: int, seed: int) -> List[Mutant]:
    """``sample`` of ``mutants`` drawn with ``seed`` (all if 0), in source
    order."""
    mutants = sorted(mutants, key=lambda m: (m.path, m.start, m.operator))
    if 0 < sample < len(mutants):
        picked = sorted(random.Random(seed).sample(range(len(mutants)), sample))
        mutants = [mutants[i] for i in picked]
    return mutants


def replay(mutants: Sequence[Mutant], report: Dict) -> List[Mutant]:
    """The mutants of an earlier ``--json`` report, found again by file,
    mutation and the text of the original and mutated line (the nearest line
    number decides between equal ones), so edits elsewhere in a module do not
    change the set. Mutants whose line changed are reported and dropped."""
    found, missing = [], []
    for old in report['results']:
        same = [m for m in mutants
                if (m.path, m.operator, m.original_line, m.mutated_line)
                == (old['file'], old['operator'], old['original'],
                    old['mutated']) and m not in found]
        if same:
            found.append(min(same, key=lambda m: abs(m.line - old['line'])))
        else:
            missing.append(f"{old['file']}:{old['line']} {old['operator']}")
    for name in missing:
        print(f'not found again (its line changed): {name}')
    return sorted(found, key=lambda m: (m.path, m.start, m.operator))


def _iter_runs(args: argparse.Namespace, tree: Path,
               chosen: Sequence[Mutant],
               mapping: Dict[str, Sequence[str]]) -> Iterator[Result]:
    originals = {m.path: (tree / m.path).read_bytes() for m in chosen}
    for i, mutant in enumerate(chosen, 1):
        tests = tests_for(mutant.path, mapping)
        original = originals[mutant.path]
        _write(tree, mutant.path, original[:mutant.start] + mutant.new.encode()
               + original[mutant.end:])
        try:
            status, seconds, tail = run_tests(args.python, tree, tests,
                                              args.markers, args.timeout)
        finally:
            _write(tree, mutant.path, original)
        status = {'passed': 'survived', 'failed': 'killed'}.get(status, status)
        print(f'[{i}/{len(chosen)}] {status:8s} {seconds:5.1f}s '
              f'{mutant.path}:{mutant.line} {mutant.operator}', flush=True)
        yield Result(mutant.path, mutant.line, mutant.operator, status,
                     round(seconds, 1), mutant.original_line,
                     mutant.mutated_line, tests,
                     tail if status == 'killed' else '')


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    root = args.root.resolve()
    mapping = _parse_mapping(args.tests)
    mutants: List[Mutant] = []
    for path in target_files(root, args.targets):
        mutants += generate(path, (root / path).read_text())
    if args.replay:
        chosen = replay(mutants, json.loads(args.replay.read_text()))
    else:
        chosen = select(mutants, args.sample, args.seed)
    print(f'{len(mutants)} mutants, running {len(chosen)}; reproduce with:\n'
          f'  {_command_line(args)}', flush=True)
    if args.list:
        for mutant in chosen:
            print(f'{mutant.path}:{mutant.line} {mutant.operator}: '
                  f'{mutant.original_line}  ->  {mutant.mutated_line}')
        return 0
    tree = Path(tempfile.mkdtemp(prefix='m2f_mutants_'))
    try:
        copy_tree(root, tree)
        where = subprocess.run(
            [args.python, '-c', 'import m2f_plugin; print(m2f_plugin.__file__)'],
            cwd=tree, capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=str(tree))).stdout.strip()
        if not where.startswith(str(tree)):
            raise SystemExit(f'm2f_plugin imports from {where!r}, not the copy')
        union = _covering({t for m in chosen for t in tests_for(m.path, mapping)})
        status, baseline, tail = run_tests(args.python, tree, union,
                                           args.markers, 10 * args.timeout)
        print(f'baseline {status} {baseline:5.1f}s {" ".join(union)}', flush=True)
        if status != 'passed':
            raise SystemExit(f'the unmutated tests do not pass:\n{tail}')
        began = time.monotonic()
        results = list(_iter_runs(args, tree, chosen, mapping))
    finally:
        if args.keep:
            print(f'copy kept at {tree}')
        else:
            shutil.rmtree(tree, ignore_errors=True)
    summary = summarize(results, args.targets)
    report = {
        'command': _command_line(args),
        'mutants_total': len(mutants),
        'sampled': len(chosen),
        'seconds': round(time.monotonic() - began, 1),
        'baseline_seconds': round(baseline, 1),
        'summary': summary,
        'survivors': [asdict(r) for r in results if r.status == 'survived'],
        'results': [asdict(r) for r in results],
    }
    for name, counts in summary.items():
        print(f'{name}: {counts}')
    for r in results:
        if r.status == 'survived':
            print(f'SURVIVED {r.file}:{r.line} {r.operator}: {r.original}  ->  '
                  f'{r.mutated}')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
