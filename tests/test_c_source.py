"""The C sources' own rules: constants from the Python side.

These read the source tree (src/portclone, tools/), not the installed package.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

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

