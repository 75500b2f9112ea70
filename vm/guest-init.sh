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
# only the sources: not the host's .tox, .git, builds or compiled extension
mkdir -p /tmp/src
(cd /mnt/src && tar cf - --exclude=./.tox --exclude=./.git --exclude=./build \
    --exclude='*.so' --exclude='__pycache__' --exclude='*.egg-info' --exclude=./.mypy_cache \
    --exclude=./.ruff_cache --exclude=./.pytest_cache --exclude=./.hypothesis .) | (cd /tmp/src && tar xf -) \
    || report 90
cd /tmp/src || report 91
{
    echo "kernel $(uname -r) $(uname -m)"
    python3 --version
    # into a scratch dir, then next to the sources: setuptools before 61 (bullseye's 52)
    # ignores pyproject's package-dir, so --inplace would put it in the wrong place
    if [ -n "$cflags" ]; then
        echo "CFLAGS=$cflags"
        # not -q: the compiler's command lines show the flags
        CFLAGS="$cflags" python3 setup.py build_ext --build-lib /tmp/build 2>&1
    else
        python3 setup.py -q build_ext --build-lib /tmp/build 2>&1
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
