"""The C sources' own rules: constants from the Python side.

These read the source tree (src/portclone, tools/), not the installed package.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "portclone"
GENERATOR = ROOT / "tools" / "gen_constants.py"
C_FILES = sorted(SRC.glob("*.c"))

pytestmark = pytest.mark.skipif(not GENERATOR.exists() or not C_FILES,
                                reason="needs the source tree (src/portclone/*.c, tools/)")


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_portclone_gen_constants", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_constants_header_is_generated() -> None:
    """_constants.h is exactly what tools/gen_constants.py makes of _flags.py and _errors.py."""
    expected = _generator().render()
    assert (SRC / "_constants.h").read_text() == expected, (
        "src/portclone/_constants.h is stale: run python tools/gen_constants.py")


def test_constants_header_matches_the_python_values() -> None:
    from portclone._errors import Stage
    from portclone._flags import CSIGNAL, CloneFlags

    defines = dict(re.findall(r"^#define (PC_\w+)\s+\(?(-?\w+?)(?:ULL)?\)?$",
                              (SRC / "_constants.h").read_text(), re.M))
    for name, member in CloneFlags.__members__.items():
        assert int(defines[f"PC_{name}"], 0) == int(member), name
    assert int(defines["PC_CSIGNAL"], 0) == CSIGNAL
    for name, member in Stage.__members__.items():
        assert int(defines[f"PC_STAGE_{name}"], 0) == int(member), name

def test_native_exports_the_stages() -> None:
    from portclone._errors import Stage

    try:
        native = importlib.import_module("portclone._native")
    except ImportError:
        pytest.skip("portclone._native is not built here")
    for name, member in Stage.__members__.items():
        assert getattr(native, f"STAGE_{name}") == member, name


def _flag_literal(text: str) -> Iterator[Tuple[int, str]]:
    from portclone._flags import CloneFlags

    values = {int(m) for m in CloneFlags.__members__.values()}
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("/*")[0].split("//")[0]
        for literal in re.findall(r"\b0[xX][0-9a-fA-F]+", code):
            if int(literal, 16) in values:
                yield number, line.strip()


@pytest.mark.parametrize("path", [*C_FILES, SRC / "_native.h"], ids=lambda p: p.name)
def test_no_raw_clone_flags_in_c(path: Path) -> None:
    """The C names clone flags through _constants.h, never by value.  PC_WALL (__WALL) is
    a waitpid option that shares CLONE_NEWNET's value."""
    found = [f"{path.name}:{n}: {line}" for n, line in _flag_literal(path.read_text())
             if not line.startswith("#define PC_WALL ")]
    assert not found, "raw clone-flag values (use PC_CLONE_*):\n" + "\n".join(found)

