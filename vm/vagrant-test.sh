#!/bin/sh
# The test suite in a Vagrant machine (vm/Vagrantfile), as root:
#     sudo sh /vagrant/vm/vagrant-test.sh [PYTEST ARGS]
# (vm/vagrant_run.py runs exactly this over `vagrant ssh`).  Copies the synced sources
# (/vagrant) to a scratch directory, builds the extension there, prints `portclone info` and
# runs pytest with portclone's plugin; the exit code is pytest's.  The backend follows the
# system: Linux -> linux (the default), NetBSD -> netbsd, FreeBSD and others -> fork.
# PYTHON overrides the interpreter (default: python3, else the newest python3.N on PATH).
PATH=/usr/local/sbin:/usr/local/bin:/usr/pkg/sbin:/usr/pkg/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

case "$(uname -s)" in
    Linux) ;;
    NetBSD) PORTCLONE_BACKEND=${PORTCLONE_BACKEND:-netbsd}; export PORTCLONE_BACKEND ;;
    *) PORTCLONE_BACKEND=${PORTCLONE_BACKEND:-fork}; export PORTCLONE_BACKEND ;;
esac
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    command -v python3 >/dev/null 2>&1 || for v in 9 10 11 12 13 14; do
        command -v "python3.$v" >/dev/null 2>&1 && PYTHON=python3.$v
    done
fi

src=/tmp/portclone-src
build=/tmp/portclone-build
rm -rf "$src" "$build" && mkdir -p "$src" || exit 90
(cd /vagrant && tar cf - --exclude=./.tox --exclude=./.git --exclude=./build --exclude='*.so' \
    --exclude='__pycache__' --exclude='*.egg-info' --exclude=./vm/.vagrant .) \
    | (cd "$src" && tar xf -) || exit 91
cd "$src" || exit 91
echo "== $(uname -srm), $("$PYTHON" --version 2>&1), backend ${PORTCLONE_BACKEND:-default}"
# setuptools>=77 (pyproject.toml) from the wheel vagrant_run.py put in vm/.buildtools, unpacked
# onto PYTHONPATH with its vendored packages (Python 3.9 would take an older system
# importlib_metadata over them)
buildpath=
for w in "$src"/vm/.buildtools/setuptools-*.whl; do
    [ -f "$w" ] && "$PYTHON" -m zipfile -e "$w" /tmp/portclone-buildtools \
        && buildpath=/tmp/portclone-buildtools:/tmp/portclone-buildtools/setuptools/_vendor
done
PYTHONPATH=$buildpath "$PYTHON" setup.py -q build_ext --build-lib "$build" 2>&1 | tail -20
cp "$build"/portclone/_native*.so src/portclone/ 2>/dev/null  # none: the fork fallback
PYTHONPATH=$src/src "$PYTHON" -m portclone info
PYTHONPATH=$src/src exec "$PYTHON" -m pytest -p portclone.pytest_plugin -q -rs \
    -p no:cacheprovider "$@" tests
