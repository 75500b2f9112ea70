"""The backends portclone has, and which one is in force.

``BACKENDS`` (from ``_common``) names them; backend NAME is the class ``BACKEND`` of
module ``portclone.backends.NAME``, imported only when it is asked for, and that class
answers why it cannot work here
(``Backend.why_unusable``).  The default is chosen once, at first use, from the
platform (Linux -> linux, NetBSD -> netbsd, any other POSIX system -> fork), unless
``PORTCLONE_BACKEND`` names one; :func:`use_backend` overrides it for a block.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import sys

from ._common import BACKENDS, LINUX, NETBSD, TYPE_CHECKING
from ._errors import TRANSIENT_ERRNOS, BackendUnavailableError, not_now

if TYPE_CHECKING:  # the backends' modules import _backend when one is asked for
    from typing import Dict, Iterator, List, Optional, Type

    from ._backend import Backend

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "available_backends",
    "current_backend",
    "get_backend",
    "use_backend",
    "use_backend_everywhere",
    "why_unusable",
]

ENV_VAR = "PORTCLONE_BACKEND"


def _class(name: str) -> Type[Backend]:
    module = f"portclone.backends.{name}"
    try:
        found: Type[Backend] = importlib.import_module(module).BACKEND
    except OSError as e:  # no fd or memory to read the module now: Python remembers nothing
        if e.errno in TRANSIENT_ERRNOS:
            raise not_now(e, f"importing {module}, portclone's {name} backend") from None
        raise
    return found


def why_unusable(name: str) -> Optional[str]:
    """Why backend ``name`` cannot work in this process, or None if it can."""
    if name not in BACKENDS:
        return f"unknown backend {name!r}: portclone has {', '.join(BACKENDS)}"
    return _class(name).why_unusable()


def available_backends() -> List[str]:
    """The backends that work on this machine, best first."""
    return [name for name in BACKENDS if why_unusable(name) is None]


_instances: Dict[str, Backend] = {}
_default: Optional[str] = None
_default_backend: Optional[Backend] = None  # _default's instance, once made
_override: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("portclone_backend", default=None)
#: use_backend_everywhere's choices, innermost last: in force in every thread and task
_everywhere: List[str] = []


def get_backend(name: str) -> Backend:
    """The backend called ``name``; BackendUnavailableError if it cannot work here."""
    backend = _instances.get(name)
    if backend is None:
        why = why_unusable(name)
        if why is not None:
            raise BackendUnavailableError(name, why)
        backend = _instances.setdefault(name, _class(name)())
    return backend


def _platform_default() -> str:
    if LINUX:
        return "linux"
    if NETBSD:
        return "netbsd"
    return "fork"


def current_backend() -> Backend:
    """The backend clone() and spawn() use here and now (see the module's docstring)."""
    global _default, _default_backend
    name = _override.get()
    if name is None and _everywhere:
        name = _everywhere[-1]
    if name is None:
        if _default_backend is not None:  # every call but the first: one global read
            return _default_backend
        if _default is None:
            for other in BACKENDS:  # loaded now: a chroot or privilege drop may follow
                _class(other)
            chosen = os.environ.get(ENV_VAR, "").strip()
            if chosen:
                why = why_unusable(chosen)
                if why is not None:
                    raise BackendUnavailableError(chosen, f"{why} (from {ENV_VAR}={chosen})")
            else:
                chosen = _platform_default()
                # no native extension: the fork backend serves, and info says why.  (A
                # transient failure to load it raises, and nothing is chosen.)
                why = why_unusable(chosen) if chosen != "fork" else None
                if why is not None:
                    _default = "fork"  # first: a warning filter set to "error" raises here
                    _warn_fallback(chosen, why)
                    chosen = "fork"
            _default = chosen
        _default_backend = get_backend(_default)
        return _default_backend
    return get_backend(name)


#: One token: the thread that pops it warns (list.pop is atomic, and no lock is held that a
#: signal handler or finalizer re-entering portclone could wait for).  Threads racing through
#: the first selection would otherwise each warn.
_warning_token: List[None] = [None]


def _warn_fallback(expected: str, why: str) -> None:
    """Once per process, at the first backend selection (never at import): on Linux and
    NetBSD, where the extension is expected, the fork fallback is a degraded install."""
    import warnings

    try:
        _warning_token.pop()
    except IndexError:
        return  # another thread warned

    # the warning points at the first caller outside portclone (clone, spawn, check, the CLI
    # and current_backend itself reach here through different depths)
    package = os.path.dirname(__file__) + os.sep  # the form co_filename has too
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        level, frame = level + 1, frame.f_back
    warnings.warn(
        f"portclone: the {expected} backend is unusable ({why}); the fork fallback serves, "
        f"without the clone flags it cannot honour. With a C compiler and Python's headers, "
        f"{_reinstall_advice()}; `python -m portclone info` says more",
        RuntimeWarning,
        stacklevel=level,
    )


def _reinstall_advice() -> str:
    """How to get the extension, for the way this copy of portclone was installed: from
    an index, from a path or a VCS (pip's direct_url.json, PEP 610), or not at all (a
    checkout or a copy on sys.path)."""
    import json
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    here = os.path.realpath(os.path.dirname(__file__))
    dist = None
    try:
        found = metadata.distribution("portclone")
        if os.path.realpath(str(found.locate_file("portclone"))) == here:
            dist = found
    except (metadata.PackageNotFoundError, OSError, ValueError):
        pass
    if dist is None:  # not installed: this directory was put on sys.path
        for root in (os.path.dirname(os.path.dirname(here)), os.path.dirname(here)):  # src/ or flat
            if os.path.exists(os.path.join(root, "setup.py")):
                return (
                    f"build it in place (cd {root} && python setup.py build_ext --inplace) or "
                    f"install the checkout (pip install --no-cache-dir {root})"
                )
        return f"install portclone (pip install --no-cache-dir portclone) rather than use the copy in {here}"
    command = "pip install --force-reinstall --no-cache-dir"
    why = "pip reuses the wheel it built without them"
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        direct = None
    if isinstance(direct, dict) and isinstance(direct.get("url"), str):
        url = direct["url"]
        editable = bool((direct.get("dir_info") or {}).get("editable"))
        source = unquote(urlparse(url).path) if url.startswith("file:") else url
        if "vcs_info" in direct:
            source = f"{direct['vcs_info'].get('vcs', 'git')}+{url}"
        return f"reinstall it from where it came ({command} {'-e ' if editable else ''}{source}: {why})"
    return f"reinstall it ({command} portclone: {why}), or install a wheel"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Use backend ``name`` for clone() and spawn() inside the ``with`` block (this thread
    or task)."""
    backend = get_backend(name)
    token = _override.set(name)
    try:
        yield backend
    finally:
        _override.reset(token)


@contextlib.contextmanager
def use_backend_everywhere(name: str) -> Iterator[Backend]:
    """Use backend ``name`` inside the ``with`` block in every thread and task of the
    process, as ``PORTCLONE_BACKEND`` would (the pytest plugin's fixture: code under test
    may make children from worker threads); :func:`use_backend` still wins where used."""
    backend = get_backend(name)
    _everywhere.append(name)
    try:
        yield backend
    finally:
        del _everywhere[len(_everywhere) - 1 - _everywhere[::-1].index(name)]  # this block's
