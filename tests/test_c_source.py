"""The C sources' own rules: constants from the Python side, and small functions.

These read the source tree (src/portclone, tools/), not the installed package.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "portclone"
GENERATOR = ROOT / "tools" / "gen_constants.py"
C_FILES = sorted(SRC.glob("*.c"))
#: what tests/test_c_source.py allows a C function body, in lines
MAX_FUNCTION_LINES = 150

pytestmark = pytest.mark.skipif(
    not GENERATOR.exists() or not C_FILES, reason="needs the source tree (src/portclone/*.c, tools/)"
)


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
        "src/portclone/_constants.h is stale: run python tools/gen_constants.py"
    )


def test_constants_header_matches_the_python_values() -> None:
    from portclone._errors import Stage
    from portclone._flags import CSIGNAL, CloneFlags

    defines = dict(
        re.findall(r"^#define (PC_\w+)\s+\(?(-?\w+?)(?:ULL)?\)?$", (SRC / "_constants.h").read_text(), re.M)
    )
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
    found = [
        f"{path.name}:{n}: {line}"
        for n, line in _flag_literal(path.read_text())
        if not line.startswith("#define PC_WALL ")
    ]
    assert not found, "raw clone-flag values (use PC_CLONE_*):\n" + "\n".join(found)


def c_functions(text: str) -> List[Tuple[str, int, int]]:
    """(name, first line, body lines) of each function defined in ``text``.

    portclone's C style: a body opens with ``{`` alone at column 0, right below its
    signature, and closes with ``}`` at column 0.  The name is the identifier before the
    signature's first ``(``; a ``{`` at column 0 below anything else (a comment, a
    declaration ending in ``=``) is no function.
    """
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line != "{":
            continue
        start = i
        while (
            start > 0
            and lines[start - 1].strip()
            and not re.search(r"(\*/|;|}|=|^#.*)$", lines[start - 1].strip())
        ):
            start -= 1
        name = re.search(r"(\w+)\s*\(", " ".join(lines[start:i]))
        if name is None:
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("}"))
        found.append((name.group(1), i + 1, end - i - 1))
    return found


def test_function_scanner_sees_every_function() -> None:
    text = (
        "static int\nf(void)\n{\n    return 0;\n}\n\nint\ng(int a,\n  int b)\n{\n    a++;\n"
        "    return a + b;\n}\nstatic struct s x = {\n    0,\n};\n"
    )
    assert c_functions(text) == [("f", 3, 1), ("g", 10, 2)]


@pytest.mark.parametrize("path", C_FILES, ids=lambda p: p.name)
def test_c_functions_are_small(path: Path) -> None:
    text = path.read_text()
    functions = c_functions(text)
    # every body at column 0 is seen, or the scanner needs updating for a new style
    assert len(functions) == text.splitlines().count("{"), path.name
    long = [
        f"{path.name}:{line}: {name}() has {count} lines"
        for name, line, count in functions
        if count > MAX_FUNCTION_LINES
    ]
    assert not long, f"C functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def _c_setup_fields() -> List[str]:
    text = (SRC / "_setup.c").read_text()
    block = re.search(r"pc_setup_fields\[\] = \{(.*?)NULL", text, re.S)
    assert block is not None, "_setup.c declares pc_setup_fields"
    return re.findall(r'"(\w+)"', block.group(1))


def test_the_setup_tuple_is_named_as_the_c_reads_it() -> None:
    """portclone._setup.NativeSetup's fields are pc_setup_fields, by name and in order; every
    setup option of the flag table (but map_root, which is written as the two maps) is one."""
    from portclone._flags import OPTIONS
    from portclone._setup import NativeSetup

    fields = _c_setup_fields()
    assert list(NativeSetup._fields) == fields
    assert {o.name for o in OPTIONS} - {"map_root"} <= set(fields)
    assert {o.field for o in OPTIONS if o.field} <= set(fields)  # the row's own field


def test_the_built_extension_names_the_same_fields() -> None:
    native = pytest.importorskip("portclone._native", reason="the C extension is not built here")
    if not hasattr(native, "SETUP_FIELDS"):
        pytest.skip("this platform's extension has no setup (no libc clone)")
    assert list(native.SETUP_FIELDS) == _c_setup_fields()
