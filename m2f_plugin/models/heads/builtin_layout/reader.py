"""Reading a built-in ``Mask2FormerHead`` config: every key accounted for.

A :class:`Reader` reads one config dict key by key with the defaults of the
class the built-in builds from it; :meth:`Reader.finish` refuses the keys
nobody read, so nothing is dropped silently.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Optional

__all__ = ['MISSING', 'BuiltinLayoutError', 'Reader', 'bare_type']

# a key's default when the built-in requires it
MISSING = object()


class BuiltinLayoutError(ValueError):
    """A built-in ``Mask2FormerHead`` setting our heads cannot honour."""


def bare_type(type_name: Any) -> Any:
    """``'mmdet.DiceCost'`` -> ``'DiceCost'`` (a registry scope dropped)."""
    if isinstance(type_name, str):
        return type_name.rsplit('.', 1)[-1]
    return type_name


class Reader:
    """One config dict read key by key: defaults as the built-in's, every
    key accounted for (:meth:`finish` refuses the ones nobody read)."""

    def __init__(self, cfg: Optional[dict], path: str, head: str) -> None:
        self.cfg = dict(cfg or {})
        self.path = path
        self.head = head
        self.used: set = set()

    def name(self, key: str) -> str:
        """``key``'s path from the head, for messages."""
        return f'{self.path}.{key}' if self.path else key

    def has(self, key: str) -> bool:
        """Whether the config sets ``key`` (does not count as read)."""
        return key in self.cfg

    def get(self, key: str, default: Any = MISSING) -> Any:
        """The value (or ``default``); a missing key without default is an
        error, as in the built-in."""
        self.used.add(key)
        if key in self.cfg:
            return self.cfg[key]
        if default is MISSING:
            self.fail(f'{self.name(key)} is required by the built-in head; '
                      'set it')
        return copy.deepcopy(default)

    def sub(self, key: str, default: Any = MISSING) -> Reader:
        """A reader of the nested dict at ``key``."""
        return Reader(self.get(key, default), self.name(key), self.head)

    def expect(self, key: str, default: Any, allowed: Iterable[Any],
               fix: str) -> Any:
        """The value, which must be one of ``allowed``."""
        value = self.get(key, default)
        if not any(value == a for a in allowed):
            self.fail(f'{self.name(key)}={value!r} cannot be honoured '
                      f'exactly; {fix}')
        return value

    def fail(self, message: str) -> None:
        """Raise ``BuiltinLayoutError`` naming the head."""
        raise BuiltinLayoutError(f'{self.head}: {message}')

    def finish(self) -> None:
        """Refuse every key that was not read."""
        unused = [k for k in self.cfg if k not in self.used]
        if unused:
            names = ', '.join(self.name(k) for k in unused)
            self.fail(f'{names}: not a setting of the built-in Mask2Former '
                      'head at this place, so it would have no effect; '
                      'delete it or move it where the built-in reads it')
