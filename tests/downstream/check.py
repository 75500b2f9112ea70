"""Type-check the downstream example as a user's CI would, against the installed portclone.

``typed_user.py`` must pass ``mypy --strict`` and pyright (strict); ``misspelled.py``
must fail both, on exactly its two misspelt names.  Run by the ``type`` tox env.

    python tests/downstream/check.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD = os.path.join(HERE, "typed_user.py")
BAD = os.path.join(HERE, "misspelled.py")
#: the misspelt names of misspelled.py, each of which must be reported
MISSPELT = ["CLONE_NEWPDI", "spawnn"]


def run(argv: List[str]) -> subprocess.CompletedProcess[str]:
    # from a directory without portclone's sources: the installed package is checked
    out = subprocess.run(argv, cwd=HERE, capture_output=True, text=True)
    print(f"$ {' '.join(argv)}  -> exit {out.returncode}")
    return out


def main() -> int:
    failures = []
    checkers = {
        "mypy": [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir=/dev/null"],
        "pyright": [sys.executable, "-m", "pyright", "--pythonpath", sys.executable, "-p", HERE],
    }
    for name, argv in checkers.items():
        good = run([*argv, GOOD])
        if good.returncode != 0:
            failures.append(f"{name} rejects typed_user.py:\n{good.stdout}{good.stderr}")
        bad = run([*argv, BAD])
        errors = re.findall(r"error", bad.stdout)
        missing = [n for n in MISSPELT if n not in bad.stdout]
        if bad.returncode == 0 or missing or len(errors) < len(MISSPELT):
            failures.append(f"{name} accepts misspelt names {missing or MISSPELT}:\n{bad.stdout}{bad.stderr}")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
