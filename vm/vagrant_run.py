"""Run portclone's test suite in one Vagrant machine of vm/Vagrantfile, with python-vagrant.

    python vm/vagrant_run.py bookworm-amd64 [--keep] [--start-libvirt] [-- PYTEST ARGS]
    python vm/vagrant_run.py netbsd10            # needs internet (a public box)

For a Linux guest it makes the box from the guest's test image (``vmctl.py box``) and adds
it as ``portclone/GUEST`` when the box there is not this one, then: ``vagrant up``, the suite
over ``vagrant ssh`` (``sudo sh /vagrant/vm/vagrant-test.sh``), ``vagrant halt`` and
``vagrant destroy`` (``--keep`` leaves the machine up for ``vagrant ssh``).  Prints one line
with the guest's exit code and the time of each step; exits with 0 only if the suite passed.

Needs root, vagrant and vagrant-libvirt, a running libvirtd with a "default" storage pool
(``--start-libvirt`` starts virtlogd and libvirtd by hand, for machines without systemd).
VAGRANT_HOME defaults to $PORTCLONE_VAGRANT_HOME or /var/lib/portclone/vagrant: outside
root's home, which libvirt's QEMU user cannot read (the box's kernel is there).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import vmctl  # noqa: E402

BSD = ("netbsd9", "netbsd10", "freebsd14")
VIRSH = ["virsh", "-c", "qemu:///system"]


def vagrant_home() -> str:
    return os.environ.get("PORTCLONE_VAGRANT_HOME", "/var/lib/portclone/vagrant")


def ensure_libvirt(start: bool) -> None:
    """libvirtd answering, and the storage pool vagrant-libvirt uses ("default")."""
    if subprocess.run([*VIRSH, "version"], capture_output=True).returncode != 0:
        if not start:
            raise SystemExit("libvirtd does not answer: start it (or pass --start-libvirt)")
        for daemon in ("virtlogd", "libvirtd"):  # no systemd here: by hand, as daemons
            if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode != 0:
                subprocess.run([daemon, "-d"], check=True)
        for _ in range(50):
            if subprocess.run([*VIRSH, "version"], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
    pools = subprocess.run(
        [*VIRSH, "pool-list", "--all", "--name"], capture_output=True, text=True, check=True
    ).stdout.split()
    if "default" not in pools:
        os.makedirs("/var/lib/libvirt/images", exist_ok=True)
        subprocess.run(
            [*VIRSH, "pool-define-as", "default", "dir", "--target", "/var/lib/libvirt/images"],
            check=True,
            capture_output=True,
        )
        pools.append("default")
    state = subprocess.run(
        [*VIRSH, "pool-info", "default"], capture_output=True, text=True, check=True
    ).stdout
    if "running" not in state:
        subprocess.run([*VIRSH, "pool-start", "default"], check=True, capture_output=True)


def ensure_box(v: Any, guest: vmctl.Guest, env: Dict[str, str]) -> None:
    """Add the guest's current box as portclone/GUEST unless it is there already."""
    box_file = vmctl.box(guest)
    box_id = open(os.path.join(os.path.dirname(box_file), "box-id")).read().strip()
    name = f"portclone/{guest.name}"
    added = os.path.join(
        env["VAGRANT_HOME"], "boxes", name.replace("/", "-VAGRANTSLASH-"), "0", "libvirt", "box-id"
    )
    if os.path.exists(added) and open(added).read().strip() == box_id:
        return
    # vagrant-libvirt keeps a box's disk as a volume in the pool and reuses it by name:
    # an older box's volume must go with it
    listing = subprocess.run(
        [*VIRSH, "vol-list", "default"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[2:]  # under the header
    volumes = [line.split()[0] for line in listing if line.strip()]
    prefix = name.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"
    for volume in volumes:
        if volume.startswith(prefix):
            subprocess.run(
                [*VIRSH, "vol-delete", "--pool", "default", volume], check=True, capture_output=True
            )
    vmctl.log(f"adding {box_file} as {name}")
    v.box_add(name, box_file, provider="libvirt", force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("machine", choices=[*vmctl.GUESTS, *BSD])
    parser.add_argument("--keep", action="store_true", help="leave the machine running")
    parser.add_argument(
        "--start-libvirt", action="store_true", help="start virtlogd and libvirtd if they are not running"
    )
    parser.add_argument(
        "--timeout", type=int, default=3600, help="seconds for the suite in a Linux guest (then exit 124)"
    )
    argv = sys.argv[1:]
    pytest_args: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args([a[8:] if a.startswith("vagrant-") else a for a in argv])

    import vagrant  # python-vagrant

    if shutil.which("vagrant") is None:
        raise SystemExit("vagrant is not installed (Debian: vagrant vagrant-libvirt)")
    ensure_libvirt(args.start_libvirt)
    # setuptools>=77 for the machine's build (pyproject.toml), which its Debian or pkgsrc
    # setuptools may be too old for: the cached wheels go along with the rsynced checkout
    # (vm/.buildtools, gitignored), and vagrant-test.sh unpacks them onto PYTHONPATH
    tools = os.path.join(HERE, ".buildtools")
    os.makedirs(tools, exist_ok=True)
    for wheel in vmctl.build_tools():
        shutil.copy(wheel, tools)
    home = vagrant_home()
    logs = os.path.join(home, "logs")
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ, VAGRANT_HOME=home, VAGRANT_DEFAULT_PROVIDER="libvirt", PORTCLONE_VAGRANT_LOGS=logs)
    v = vagrant.Vagrant(root=HERE, env=env, quiet_stdout=False, quiet_stderr=False)
    name = args.machine
    steps: Dict[str, float] = {}

    def timed(step: str, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        started = time.monotonic()
        try:
            return fn(*a, **kw)
        finally:
            steps[step] = round(time.monotonic() - started, 1)

    if name in vmctl.GUESTS:
        timed("box", ensure_box, v, vmctl.GUESTS[name], env)
    code: object = "not run"
    summary = ""
    try:
        vmctl.log(f"vagrant up {name}")
        try:
            timed("up", v.up, vm_name=name)
        except subprocess.CalledProcessError:
            code = "vagrant up failed"
            return 1
        limit = f"timeout -k 10 {args.timeout} " if name in vmctl.GUESTS else ""
        command = f"sudo {limit}sh /vagrant/vm/vagrant-test.sh " + " ".join(map(shlex.quote, pytest_args))
        vmctl.log(f"vagrant ssh {name} -c {command!r}")
        try:
            output = timed("tests", v.ssh, vm_name=name, command=command)
            code = 0
        except subprocess.CalledProcessError as e:
            output = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output or "")
            code = e.returncode
        print(output, flush=True)
        with open(os.path.join(logs, f"{name}-tests.log"), "w") as f:
            f.write(output)
        lines = [line for line in output.splitlines() if " passed" in line or " failed" in line]
        summary = lines[-1].strip("= ") if lines else ""
    finally:
        if not args.keep:
            vmctl.log(f"vagrant halt / destroy {name}")
            for step, fn in (("halt", v.halt), ("destroy", v.destroy)):
                try:
                    timed(step, fn, vm_name=name)
                except subprocess.CalledProcessError as e:
                    vmctl.log(f"vagrant {step} {name} failed: {e}")
        timings = ", ".join(f"{k} {s:.0f} s" for k, s in steps.items())
        print(f"{name}: exit {code} ({summary or 'no pytest summary'}); {timings}", flush=True)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
