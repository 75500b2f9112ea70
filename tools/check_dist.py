"""Checks the built distributions in a directory (tox -e packaging): one sdist and one wheel,
the wheel tagged cp39-abi3 (the limited API, setup.py) and, on Linux, what ``auditwheel show``
says of it (the manylinux tag the host's glibc allows; vm/vmctl.py wheels builds the
published ones in older guests).

    python tools/check_dist.py DIST_DIR
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile


def main(dist: str) -> int:
    sdists = glob.glob(os.path.join(dist, "portclone-*.tar.gz"))
    wheels = glob.glob(os.path.join(dist, "portclone-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        print(f"check_dist: expected one sdist and one wheel in {dist}, found {sdists + wheels}")
        return 1
    wheel = os.path.basename(wheels[0])
    # name-version-python-abi-platform.whl
    _, _, python, abi, _ = wheel[: -len(".whl")].split("-")
    problems = []
    if (python, abi) != ("cp39", "abi3"):
        problems.append(f"the wheel is tagged {python}-{abi}, not cp39-abi3 (the limited API)")
    with zipfile.ZipFile(wheels[0]) as z:
        names = z.namelist()
    native = [n for n in names if n.startswith("portclone/_native") and n.endswith(".so")]
    if sys.platform.startswith(("linux", "netbsd")) and native != ["portclone/_native.abi3.so"]:
        problems.append(f"the extension in the wheel is {native}, not portclone/_native.abi3.so")
    sources = [n for n in names if n.endswith((".c", ".h"))]
    if sources:
        problems.append(f"C sources in the wheel: {sources}")
    print(f"check_dist: {os.path.basename(sdists[0])}, {wheel}: {native}")
    if sys.platform.startswith("linux") and shutil.which("auditwheel"):
        show = subprocess.run(["auditwheel", "show", wheels[0]], capture_output=True, text=True)
        print(" ".join((show.stdout + show.stderr).split())[:600])
        if show.returncode != 0:
            problems.append("auditwheel show failed")
    for p in problems:
        print(f"check_dist: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
