"""serve's policy grants TRUNCATE (beside READ) on cgroup filesystems only,
so Landlock's per-open check stops there (confine_cgroupfs.py says why), and
that grant changes nothing: on the real kernel, in a confined child, a
planted plain-file tree can be neither truncated nor written, and a real
cgroup file "truncated" every way reads the same before and after.

Ground truth for "is a cgroup filesystem" is /proc/self/mountinfo, not the
statfs the policy uses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cri_exporter import confine, confine_cgroupfs
from cri_exporter import confine_landlock as ll
from tests import test_confine
from tests.test_confine import POD, kernel_abi, probe

host = test_confine.host  # the planted host root (a fixture)

CGROUP = "/sys/fs/cgroup"


def cgroup_mounts() -> dict[str, str]:
    """Mount point -> fstype of every cgroup/cgroup2 mount under /sys/fs/cgroup, from mountinfo."""
    out = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        point, fstype = left.split()[4].replace("\\040", " "), right.split()[0]
        if fstype in ("cgroup", "cgroup2") and (point == CGROUP or point.startswith(CGROUP + "/")):
            out[point] = fstype
    return out


def mount_of(path: str) -> str:
    """The mount point `path` is on (the longest mountinfo prefix)."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return max((p for p in points if path == p or path.startswith(p.rstrip("/") + "/")), key=len)


def truncating_rules(policy: confine.Policy) -> dict[str, int]:
    return {path: rights for path, rights in policy.rules() if rights & ll.TRUNCATE}


def test_truncate_is_granted_only_on_this_machines_cgroup_filesystems():
    mounts = cgroup_mounts()
    if not mounts:
        pytest.skip("this machine has no cgroup mount under /sys/fs/cgroup")
    rules = truncating_rules(confine.build_policy("/"))
    assert rules, "no TRUNCATE grant on a machine with cgroup mounts"
    for path, rights in rules.items():
        assert mount_of(path) in mounts, (path, mount_of(path))  # each on a cgroup mount, by mountinfo
        assert rights & ~(ll.READ | ll.TRUNCATE) == 0, (path, rights)  # nothing more than READ and TRUNCATE
    # every (non-symlinked) cgroup mount's root carries one, so every cgroup open stops at most there
    assert {p for p in mounts if os.path.realpath(p) == p} <= set(rules)
    for mount in mounts:  # and the kubelet's pod roots and QoS directories present now
        for rel in confine_cgroupfs.POD_ROOTS:
            if os.path.isdir(os.path.join(mount, rel)):
                assert os.path.join(mount, rel) in rules
    # writing stays granted on /dev/null alone
    assert [p for p, r in confine.build_policy("/").rules() if r & ll.WRITE_FILE] == ["/dev/null"]


def test_a_planted_tree_named_like_cgroups_gets_no_truncate_grant(host):
    for rel in ("sys/fs/cgroup/kubepods/burstable", "sys/fs/cgroup/memory/kubepods/besteffort",
                "sys/fs/cgroup/unified/kubepods.slice/kubepods-burstable.slice"):
        (host / rel).mkdir(parents=True, exist_ok=True)
    assert truncating_rules(confine.build_policy(str(host))) == {}
    # nor when its sys/fs/cgroup links to the machine's real one: a link out of the root is not followed
    linked = host.parent / "linked"
    (linked / "sys/fs").mkdir(parents=True)
    (linked / "sys/fs/cgroup").symlink_to(CGROUP)
    assert truncating_rules(confine.build_policy(str(linked))) == {}


def assert_confined_ops(host_root: Path, files: list[Path], truncate: str) -> None:
    """Run every file through the confined child's ops: truncate(2) and open(O_TRUNC) give
    `truncate` ("ok" where TRUNCATE is granted, else "PermissionError"), ftruncate EINVAL (only a
    read-only fd to be had: ftruncate needs a writable one), O_RDWR and write PermissionError,
    read ok; and no file's bytes change."""
    before = {f: f.read_bytes() for f in files}
    cases = []
    for f in files:
        cases += [(("truncate", str(f)), truncate), (("otrunc", str(f)), truncate),
                  (("ftruncate", str(f)), "EINVAL"),
                  (("rdwr", str(f)), "PermissionError"), (("write", str(f)), "PermissionError"),
                  (("read", str(f)), "ok")]
    header, results = probe(host_root, [op for op, _ in cases])
    if kernel_abi() < confine.FULL_ABI:
        pytest.skip(f"Landlock ABI {kernel_abi()} does not control truncate(2)")
    assert header["state"] == "enforced"
    got = {f"{op} {path}": r for (op, path), r in zip([op for op, _ in cases], results)}
    assert got == {f"{op} {path}": r for (op, path), r in cases}
    assert {f: f.read_bytes() for f in files} == before


def test_a_confined_child_can_neither_truncate_nor_write_a_plain_file_beneath_the_host_root(host):
    assert_confined_ops(host, [host / "sys/fs/cgroup/kubepods/pod" / POD / "memory.current",
                               host / "etc/containerd/config.toml", host / "var/lib/kubelet/config.yaml"],
                        truncate="PermissionError")


@pytest.fixture
def real_cgroups():
    """A fresh cgroup on each of this machine's cgroup mounts that holds a
    settable value (v1 memory: a memory limit; v2: cgroup.max.descendants),
    set to a value that is not the default; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    mounts = cgroup_mounts()
    name = f"cri-exporter-trunc-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    made: list[tuple[Path, str]] = []
    for point, fstype in sorted(mounts.items()):
        if fstype == "cgroup2":
            made.append((Path(point) / name, "cgroup.max.descendants"))
            value = "7"
        elif os.path.basename(point).split(",").count("memory"):
            made.append((Path(point) / name, "memory.limit_in_bytes"))
            value = str(123 * 4096 * 1024)
        else:
            continue
        made[-1][0].mkdir()
        (made[-1][0] / made[-1][1]).write_text(value)
    if not made:
        pytest.skip("no cgroup2 mount nor v1 memory hierarchy here")
    yield [d / f for d, f in made]
    for d, _ in made:
        d.rmdir()


def test_truncating_a_real_cgroup_file_from_the_confined_child_changes_nothing(real_cgroups):
    assert all(f.read_bytes().strip() for f in real_cgroups), real_cgroups  # each holds a value to lose
    # truncate granted: kernfs ignores the size (confine_cgroupfs.py)
    assert_confined_ops(Path("/"), real_cgroups, truncate="ok")


MOUNTED_LAYOUTS = r'''
set -e
root="$1"; name="$2"; v1="$3"
mkdir -p "$root/v2/sys/fs/cgroup" "$root/v1/sys/fs/cgroup/named" "$root/v1/sys/fs/cgroup/memory/kubepods/burstable"
mount -t cgroup2 none "$root/v2/sys/fs/cgroup"
# A directory of its own in one of the machine's v1 hierarchies, bound here: still cgroupfs by statfs.
# Not a named hierarchy of its own (mount -o none,name=...): one unmounted while its just-removed
# children are still dying outlives the mount, and a hierarchy nothing mounts in /proc/<pid>/cgroup
# makes containerd's shims fail "cannot find cgroup mount destination" and lose every OOM event.
mkdir "$v1/$name"
mount --bind "$v1/$name" "$root/v1/sys/fs/cgroup/named"
cg="$root/v1/sys/fs/cgroup/named"
mkdir -p "$cg/kubepods.slice/kubepods-burstable.slice" "$cg/kubepods.slice/kubepods-besteffort.slice" \
         "$cg/kubepods/burstable" "$cg/other"
ln -s named "$root/v1/sys/fs/cgroup/named-link"
status=0
"$PYTHON" -c '
import json, sys
from cri_exporter import confine_cgroupfs as c
print(json.dumps({"v2": c.cgroup_dirs(sys.argv[1] + "/v2"), "v1": c.cgroup_dirs(sys.argv[1] + "/v1")}))
' "$root" || status=$?
rmdir "$cg/kubepods.slice/kubepods-burstable.slice" "$cg/kubepods.slice/kubepods-besteffort.slice" \
      "$cg/kubepods.slice" "$cg/kubepods/burstable" "$cg/kubepods" "$cg/other"
umount "$cg" "$root/v2/sys/fs/cgroup"
rmdir "$v1/$name"
exit $status
'''


def test_v2_at_the_root_and_the_systemd_drivers_slices_are_found_on_real_mounts(tmp_path):
    """In a mount namespace of its own (the machine's mounts untouched): the v2
    hierarchy mounted as a host root's sys/fs/cgroup, and a directory of the
    test's own in one of the machine's v1 hierarchies, bound as a mount of
    its own, holding the systemd driver's slices and the cgroupfs driver's
    directories, beside a plain `memory` directory named like a controller."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount cgroup filesystems")
    v1 = sorted(p for p, fstype in cgroup_mounts().items() if fstype == "cgroup")
    if not v1:
        pytest.skip("this machine has no cgroup v1 hierarchy to make the v1 layout in")
    name = f"crx-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", MOUNTED_LAYOUTS, "sh",
                          str(tmp_path), name, v1[0]], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHON": sys.executable,
                              "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    v2 = str(tmp_path / "v2/sys/fs/cgroup")
    assert got["v2"][0] == v2  # the mount itself, then the pod roots the machine's v2 tree has now
    assert got["v2"][1:] == [f"{v2}/{rel}" for rel in confine_cgroupfs.POD_ROOTS
                             if os.path.isdir(f"/sys/fs/cgroup/unified/{rel}")]
    named = str(tmp_path / "v1/sys/fs/cgroup/named")
    assert got["v1"] == [named, f"{named}/kubepods", f"{named}/kubepods/burstable", f"{named}/kubepods.slice",
                         f"{named}/kubepods.slice/kubepods-burstable.slice",
                         f"{named}/kubepods.slice/kubepods-besteffort.slice"]
