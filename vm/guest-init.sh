#!/bin/sh
# PID 1 of a portclone test guest (installed as /portclone-init by vm/vmctl.py build).
# Mounts what the suite needs, copies the checkout shared over 9p, builds portclone,
# runs the test suite, and reports: a marker line on the console and result files on the
# "result" share.  Then it powers the guest off.  The host never has to log in.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs shm /dev/shm
mount -t tmpfs tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
hostname portclone-guest
ip link set lo up 2>/dev/null

for m in 9p 9pnet_virtio; do modprobe "$m" 2>/dev/null; done
mkdir -p /mnt/src /mnt/result
mount -t 9p -o trans=virtio,version=9p2000.L,ro src /mnt/src
mount -t 9p -o trans=virtio,version=9p2000.L result /mnt/result

report() {
    echo "$1" > /mnt/result/exit-code
    sync
    echo "PORTCLONE-GUEST-RESULT exit=$1"
    echo o > /proc/sysrq-trigger   # power off now
    sleep 30
}

args=$(cat /mnt/result/pytest-args 2>/dev/null)
cp -a /mnt/src /tmp/src || report 90
cd /tmp/src || report 91
rm -rf .tox build src/portclone/*.so
{
    echo "kernel $(uname -r) $(uname -m)"
    python3 --version
    python3 setup.py -q build_ext --inplace 2>&1 | tail -5
    PYTHONPATH=/tmp/src/src python3 -m portclone info
} > /mnt/result/build.log 2>&1
ls src/portclone/_native*.so >/dev/null 2>&1 || report 92

# The suite, as on the host (the pytest plugin is loaded by name: nothing is installed).
PYTHONPATH=/tmp/src/src python3 -m pytest -p portclone.pytest_plugin -q -rs \
    --junitxml=/mnt/result/junit.xml $args tests > /mnt/result/pytest.log 2>&1
rc=$?
tail -3 /mnt/result/pytest.log
report $rc
