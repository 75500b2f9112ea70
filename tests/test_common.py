"""portclone._common's record type: what typing.NamedTuple gives, without importing typing."""

from __future__ import annotations

import pickle

import pytest
from conftest import run_python

from portclone._common import NamedTuple


class Point(NamedTuple):
    """A point."""

    x: int
    y: int = 0

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)

    def moved(self, dx: int) -> Point:
        return self._replace(x=self.x + dx)


def test_a_record_is_a_namedtuple_with_its_fields_defaults_and_methods() -> None:
    p = Point(3)
    assert p == (3, 0) and isinstance(p, tuple)
    assert Point._fields == ("x", "y") and Point._field_defaults == {"y": 0}
    assert p.norm1 == 3 and p.moved(-5) == Point(-2, 0)
    assert repr(p) == "Point(x=3, y=0)" and Point.__doc__ == "A point."
    assert Point.__module__ == __name__ and Point.__qualname__ == "Point"
    assert Point.__annotations__ == {"x": "int", "y": "int"}
    assert pickle.loads(pickle.dumps(p)) == p
    with pytest.raises(AttributeError):
        p.x = 1  # type: ignore[misc]


def test_a_field_without_default_after_one_with_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default follows"):

        class Bad(NamedTuple):
            a: int = 0
            b: int  # type: ignore[misc]


def test_first_use_loads_no_typing() -> None:
    """typing (with what it imports) was a quarter of the first use (bench/results-import.txt);
    traceback is imported only when a child shows an error (on 3.14 it brings dataclasses and
    inspect, through _colorize)."""
    result = run_python(
        """
        import sys
        before = set(sys.modules)
        import portclone
        portclone.spawn(["true"]).wait()
        portclone.clone(lambda: 0).wait()
        print(sorted({"typing", "dataclasses", "inspect", "traceback"} & (set(sys.modules) - before)))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
