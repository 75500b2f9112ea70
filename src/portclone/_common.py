"""What every module of portclone may import: the platform, the backend names, a record type.

This module imports nothing of the package, and nothing of the standard library beyond
``sys`` and ``collections`` (psutil's ``_common.py`` rule).  It is the one place that tests
``sys.platform`` (``tests/test_layering.py`` checks that).

``NamedTuple`` here is the record type of the package's modules.  To a type checker it is
``typing.NamedTuple``; at run time it builds the same ``collections.namedtuple`` from the
class body's annotations and defaults, as ``typing.NamedTuple`` does, without importing
``typing``: that import, with the ``re`` it pulls in, was a quarter of portclone's first
use (``bench/results-import.txt``).  Modules that use it keep
``from __future__ import annotations``, so that annotations stay strings.
"""

from __future__ import annotations

import collections
import sys

# typing.TYPE_CHECKING without importing typing: type checkers take this name as true.
TYPE_CHECKING = False

PLATFORM = sys.platform
LINUX = PLATFORM.startswith("linux")
NETBSD = PLATFORM.startswith("netbsd")
MACOS = PLATFORM == "darwin"
WINDOWS = PLATFORM == "win32"

#: Every backend, in the order ``available_backends()`` prefers them.
BACKENDS = ("linux", "netbsd", "fork")

if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    # Names of a class body that are not fields, methods or the docstring.
    _NOT_COPIED = frozenset(
        (
            "__module__",
            "__qualname__",
            "__annotations__",
            "__slots__",
            "__orig_bases__",
            "__static_attributes__",
            "__firstlineno__",
            "__classcell__",
        )
    )

    class _RecordMeta(type):
        def __new__(mcls, name, bases, namespace):
            if not bases:  # NamedTuple itself
                return super().__new__(mcls, name, bases, namespace)
            if "__annotations__" not in namespace:
                raise TypeError(
                    f"{name}: a record needs 'from __future__ import annotations' and annotated fields"
                )
            fields = tuple(namespace["__annotations__"])
            defaults = []
            for field in fields:
                if field in namespace:
                    defaults.append(namespace[field])
                elif defaults:
                    raise TypeError(f"{name}: field {field} without a default follows one with a default")
            cls = collections.namedtuple(name, fields, defaults=defaults, module=namespace["__module__"])
            cls.__qualname__ = namespace["__qualname__"]
            cls.__annotations__ = namespace["__annotations__"]
            for key, value in namespace.items():
                if key not in fields and key not in _NOT_COPIED:
                    setattr(cls, key, value)
            return cls

    class NamedTuple(metaclass=_RecordMeta):
        """Base of a record: ``class Point(NamedTuple): x: int; y: int = 0``."""
