"""Config comparison helpers shared by the segmentor and detector config tests."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Sequence, Tuple

__all__ = ['assert_pairs_equal', 'config_diff', 'flat', 'strip_scope']


def strip_scope(obj: Any) -> Any:
    """Drop the ``_scope_`` keys that ``mmseg::``/``mmdet::`` bases add."""
    if isinstance(obj, dict):
        return {k: strip_scope(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return type(obj)(strip_scope(v) for v in obj)
    return obj


def flat(obj: Any, prefix: str = '') -> Dict[str, Any]:
    """Nested dicts -> {'a.b.c': leaf}; lists are leaves."""
    if isinstance(obj, dict) and obj:
        out: Dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flat(v, f'{prefix}.{k}' if prefix else str(k)))
        return out
    return {prefix: obj}


def config_diff(ours: Dict[str, Any], ref: Dict[str, Any],
                skip: Tuple[str, ...]) -> Dict[str, Tuple[Any, Any]]:
    """Flat keys (outside ``skip`` prefixes) whose values differ, with both
    values (``'<missing>'`` where one side lacks the key)."""
    keys = {k for k in set(ours) | set(ref) if not k.startswith(skip)}
    return {k: (ours.get(k, '<missing>'), ref.get(k, '<missing>'))
            for k in keys if ours.get(k, '<missing>') != ref.get(k, '<missing>')}


def assert_pairs_equal(pairs: Iterable[Sequence[Any]]) -> None:
    """Each (ours, reference) pair equal; lists and tuples compare alike."""
    for i, (a, b) in enumerate(pairs):
        a = list(a) if isinstance(a, (list, tuple)) else a
        b = list(b) if isinstance(b, (list, tuple)) else b
        assert a == b, (i, a, b)
