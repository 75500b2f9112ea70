"""Builds portclone._native; everything else is in pyproject.toml.

The extension is optional: without a C compiler (or on a platform it does not
support) portclone installs anyway and serves through the fork fallback;
``python -m portclone info`` says why.
"""

import platform
import sys

import setuptools
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: pyproject.toml's build-system: an older setuptools rejects its SPDX `license` with an
#: opaque schema error (65, 66), or ignores [project] and [tool.setuptools] altogether (58:
#: `build_ext --inplace` then fails to write portclone/_native.abi3.so, and OptionalBuildExt
#: blamed the compiler).  pip, build and tox bring their own; `setup.py build_ext` does not.
MIN_SETUPTOOLS = 77
if int(setuptools.__version__.split(".")[0]) < MIN_SETUPTOOLS:
    sys.exit(
        f"portclone needs setuptools>={MIN_SETUPTOOLS} to build (pyproject.toml); this is "
        f"setuptools {setuptools.__version__} at {setuptools.__file__}: "
        f"{sys.executable} -m pip install 'setuptools>={MIN_SETUPTOOLS}' (CONTRIBUTING.md)"
    )

#: Py_LIMITED_API for Python 3.9 (the oldest supported): the wheel is tagged cp39-abi3
LIMITED_API = "0x03090000"


#: With glibc, libpthread.so.0 stays a dependency (DT_NEEDED) where it is an empty stub
#: too (2.34+, where -lpthread finds only an empty libpthread.a): _native.h binds
#: pthread_create and friends to their original symbol versions, which glibc before 2.34
#: defines in libpthread.so.0 only.
KEEP_LIBPTHREAD = (
    ["-Wl,--push-state,--no-as-needed", "-l:libpthread.so.0", "-Wl,--pop-state"]
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    else []
)


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as e:
            self._skip(e)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            self._skip(e)

    @staticmethod
    def _skip(error: Exception) -> None:
        sys.stderr.write(
            f"WARNING: portclone._native was not built ({error}); portclone will use the "
            "fork fallback. Install a C compiler and Python headers for the linux backend.\n"
        )


setup(
    ext_modules=[
        Extension(
            "portclone._native",
            sources=[
                "src/portclone/_native.c",
                "src/portclone/_pidfd_owner.c",
                "src/portclone/_clone.c",
                "src/portclone/_clone_child.c",
                "src/portclone/_sigmask.c",
                "src/portclone/_threads.c",
                "src/portclone/_spawn.c",
                "src/portclone/_spawn_child.c",
                "src/portclone/_common.c",
                "src/portclone/_setup.c",
                "src/portclone/_maps.c",
                "src/portclone/_joinpid.c",
            ],
            depends=[
                "src/portclone/_native.h",
                "src/portclone/_spawn.h",
                "src/portclone/_clone3.h",
                "src/portclone/_constants.h",
            ],
            # the stable ABI of Python 3.9: one cp39-abi3 wheel per architecture serves 3.9+
            py_limited_api=True,
            define_macros=[("Py_LIMITED_API", LIMITED_API)],
            extra_compile_args=[
                "-std=gnu99",
                "-Wall",
                "-Wextra",
                "-Wno-unused-parameter",
                # under the limited API a non-stable function is an undeclared one: an error
                "-Werror=implicit-function-declaration",
            ],
            extra_link_args=["-pthread", *KEEP_LIBPTHREAD],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
