"""pytest plugin (entry point ``pytest11``): run tests under every portclone backend.

A test that takes the ``portclone_backend`` fixture runs once per backend
available on the machine (on Linux: linux, netbsd rules, fork), with that
backend in force for clone() inside the test.  ``--portclone-backend NAME``
(repeatable) picks backends instead, or else ``PORTCLONE_BACKEND=NAME`` in the
environment (the variable that picks portclone's backend); an unknown or unusable
name in either is a usage error.

    def test_degrades_cleanly(portclone_backend):
        child = portclone.clone(work)           # under linux, netbsd and fork rules
        ...
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator, List

import pytest

# Only the registry's names here: the plugin loads in every pytest session where portclone
# is installed, and the rest of portclone loads when a test asks for the fixture.
from ._registry import BACKENDS, ENV_VAR

if TYPE_CHECKING:
    from ._backend import Backend


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("portclone")
    group.addoption(
        "--portclone-backend",
        action="append",
        default=[],
        metavar="NAME",
        choices=list(BACKENDS),
        help="run portclone_backend tests under this backend only (repeatable; default: "
        "every backend available here)",
    )


def _named(config: pytest.Config) -> List[str]:
    """The backends the command line or the environment names, checked: [] for none."""
    from ._registry import why_unusable

    names: List[str] = config.getoption("portclone_backend")
    where = "--portclone-backend"
    if not names and os.environ.get(ENV_VAR, "").strip():
        names, where = [os.environ[ENV_VAR].strip()], ENV_VAR  # as portclone reads it
    for name in names:
        if name not in BACKENDS:
            raise pytest.UsageError(f"{where}={name}: unknown backend; portclone has {', '.join(BACKENDS)}")
        why = why_unusable(name)
        if why is not None:
            raise pytest.UsageError(f"{where}={name}: {why}")
    return names


def _chosen(config: pytest.Config) -> List[str]:
    from ._registry import available_backends

    # a name given twice runs once
    return list(dict.fromkeys(_named(config))) or available_backends()


def _parametrized_by_test(metafunc: pytest.Metafunc) -> bool:
    """The test parametrizes portclone_backend itself (``indirect=True``): its own
    choice stands, rather than a "duplicate parametrization" collection error."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = names.split(",")
        if "portclone_backend" in (str(name).strip() for name in names):
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    # a bad name is a usage error before anything is collected; with no name, nothing is
    # probed until a test asks for the fixture (the plugin loads in every pytest session)
    _named(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "portclone_backend" in metafunc.fixturenames and not _parametrized_by_test(metafunc):
        metafunc.parametrize("portclone_backend", _chosen(metafunc.config), indirect=True)


@pytest.fixture
def portclone_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend this test runs under (it is in force for clone())."""
    from ._registry import use_backend_everywhere

    with use_backend_everywhere(request.param) as backend:
        yield backend
