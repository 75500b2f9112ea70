#!/bin/sh
# The test procedure in a portclone guest, run as PID 1 by the image's /portclone-init stub
# (vm/vmctl.py STUB_INIT), which has mounted the checkout at /mnt/src and the result share at
# /mnt/result.  Mounts what the suite needs, copies the sources, builds portclone, runs the
# test suite, and reports: a marker line on the console and result files on the "result"
# share.  Then it powers the guest off.  The host never has to log in.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

# the initramfs may have mounted these already
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs shm /dev/shm
mount -t tmpfs tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd  # what udev makes on a booted system
hostname portclone-guest
ip link set lo up 2>/dev/null


report() {
    echo "$1" > /mnt/result/exit-code
    sync
    echo "PORTCLONE-GUEST-RESULT exit=$1"
    echo o > /proc/sysrq-trigger   # power off now
    sleep 30
}

# pytest arguments, one a line (a -k expression has spaces): the positional parameters
set --
if [ -f /mnt/result/pytest-args ]; then
    while IFS= read -r a || [ -n "$a" ]; do
        [ -n "$a" ] && set -- "$@" "$a"
    done < /mnt/result/pytest-args
fi
# environment variables forwarded from the host (vmctl FORWARDED_ENV)
[ -f /mnt/result/environment ] && . /mnt/result/environment
# extra compiler flags for the extension: only vmctl's mutation check writes this file
cflags=$(cat /mnt/result/build-cflags 2>/dev/null)
# what this boot does (vmctl writes it): "test" (the default: build in place, run the suite),
# "wheel-build" (build a wheel from the sdist in /mnt/result/dist) or "wheel-test" (install
# the wheel in /mnt/result/dist and run the sdist's tests against it)
mode=$(cat /mnt/result/mode 2>/dev/null || echo test)

# The build backend: pyproject.toml needs setuptools>=77 and the Debian images have 52/66
# and no network, so vmctl shares pure-Python wheels downloaded on the host
# (/mnt/result/buildtools); a wheel is a zip, unpacked onto PYTHONPATH for the build.
mkdir -p /tmp/buildtools
for w in /mnt/result/buildtools/setuptools-*.whl; do
    [ -f "$w" ] && python3 -m zipfile -e "$w" /tmp/buildtools
done
# its vendored packages too, ahead of the system's: on Python 3.9 setuptools imports the
# importlib_metadata package, and bullseye's own (python3-importlib-metadata 1.6) is too old
buildpath=/tmp/buildtools:/tmp/buildtools/setuptools/_vendor
pip_wheel=$(ls /mnt/result/buildtools/pip-*.whl 2>/dev/null | head -n 1)

if [ "$mode" = test ]; then
    # only the sources: not the host's .tox, .git, builds, caches or compiled extension,
    # which the host's own test run (.ci/run runs it beside the guests) may be writing
    mkdir -p /tmp/src
    (cd /mnt/src && tar cf - --exclude=./.tox --exclude=./.git --exclude=./build \
        --exclude='*.so' --exclude='__pycache__' --exclude='*.egg-info' --exclude=.mypy_cache \
        --exclude=.ruff_cache --exclude=.pytest_cache --exclude=.hypothesis \
        --exclude=./docs/_build --exclude=./wheelhouse --exclude=./dist .) | (cd /tmp/src && tar xf -) \
        || report 90
else
    # the sdist, unpacked: what a user who downloads it has
    sdist=$(ls /mnt/result/dist/portclone-*.tar.gz 2>/dev/null | head -n 1)
    [ -n "$sdist" ] || report 93
    mkdir -p /tmp/sdist && tar xzf "$sdist" -C /tmp/sdist || report 90
    ln -s /tmp/sdist/portclone-* /tmp/src || report 91
fi
cd /tmp/src || report 91

if [ "$mode" = wheel-build ]; then
    {
        echo "kernel $(uname -r) $(uname -m)"
        python3 --version
        ldd --version 2>&1 | head -n 1
        # the PEP 517 hook itself (what pip and build call), without isolation: no network
        mkdir -p /mnt/result/wheelhouse
        PYTHONPATH=$buildpath python3 -c 'import sys
from setuptools import build_meta, __version__
print("setuptools", __version__)
print("built", build_meta.build_wheel(sys.argv[1]))' /mnt/result/wheelhouse 2>&1
    } > /mnt/result/build.log 2>&1
    ls /mnt/result/wheelhouse/portclone-*.whl >/dev/null 2>&1 || report 92
    report 0
fi

if [ "$mode" = wheel-test ]; then
    wheel=$(ls /mnt/result/dist/portclone-*.whl 2>/dev/null | head -n 1)
    {
        echo "kernel $(uname -r) $(uname -m)"
        python3 --version
        echo "installing $wheel"
        # pip runs from its own wheel (the images have no pip); a real install: dist-info,
        # entry points (the pytest plugin), the console script
        python3 "$pip_wheel/pip" install --no-index --no-deps --break-system-packages \
            --disable-pip-version-check --root-user-action=ignore "$wheel" 2>&1
        # from / and with no PYTHONPATH: the installed copy, never the sdist's src/
        (cd / && python3 -c 'import portclone, portclone._native as n
print("portclone", portclone.__version__, portclone.__file__)
print("native", n.__file__)
assert "/tmp/" not in portclone.__file__ and "/tmp/" not in n.__file__')
        (cd / && python3 -m portclone info)
    } > /mnt/result/build.log 2>&1 || report 92
    # the plugin comes from the installed distribution's pytest11 entry point
    python3 -m pytest -q -rs -m "not host_only" -p no:cacheprovider \
        --junitxml=/mnt/result/junit.xml "$@" tests > /mnt/result/pytest.log 2>&1
    rc=$?
    tail -3 /mnt/result/pytest.log
    report $rc
fi

{
    echo "kernel $(uname -r) $(uname -m)"
    python3 --version
    # into a scratch dir, then next to the sources
    if [ -n "$cflags" ]; then
        echo "CFLAGS=$cflags"
        # not -q: the compiler's command lines show the flags
        CFLAGS="$cflags" PYTHONPATH=$buildpath python3 setup.py build_ext --build-lib /tmp/build 2>&1
    else
        PYTHONPATH=$buildpath python3 setup.py -q build_ext --build-lib /tmp/build 2>&1
    fi
    cp /tmp/build/portclone/_native*.so src/portclone/
    PYTHONPATH=/tmp/src/src python3 -m portclone info
} > /mnt/result/build.log 2>&1
ls src/portclone/_native*.so >/dev/null 2>&1 || report 92

# The suite, as on the host (the pytest plugin is loaded by name: nothing is installed).
PYTHONPATH=/tmp/src/src python3 -m pytest -p portclone.pytest_plugin -q -rs -m "not host_only" \
    --junitxml=/mnt/result/junit.xml "$@" tests > /mnt/result/pytest.log 2>&1
rc=$?
tail -3 /mnt/result/pytest.log
report $rc
