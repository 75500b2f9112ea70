"""Builds portclone._native; everything else is in pyproject.toml.

The extension is optional: without a C compiler (or on a platform it does not
support) portclone installs anyway and serves through the fork fallback;
``python -m portclone info`` says why.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


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
                "src/portclone/_spawn.c",
                "src/portclone/_common.c",
                "src/portclone/_setup.c",
            ],
            depends=["src/portclone/_native.h", "src/portclone/_clone3.h", "src/portclone/_constants.h"],
            extra_compile_args=["-std=gnu99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            extra_link_args=["-pthread"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
