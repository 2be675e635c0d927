"""What the kernel says happened to the node recently, and how close it is to
its process and file limits."""
from __future__ import annotations

import re
import time

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.facts import journal, kmsg, procfs
from cri_exporter.doctor.facts.files import read_small
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check

WINDOW_SECONDS = 24 * 3600
REF_OOM = "https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/#node-out-of-memory-behavior"
REF_KMSG = "https://www.kernel.org/doc/Documentation/ABI/testing/dev-kmsg"
REF_JOURNAL = "https://systemd.io/JOURNAL_FILE_FORMAT/"
now = time.time  # tests move the clock

# Messages of Linux 5.x/6.x (mm/oom_kill.c, kernel/hung_task.c,
# net/netfilter/nf_conntrack_core.c, fs/ext4, fs/xfs, block layer).
_OOM_KILL = re.compile(r"^oom-kill:constraint=(\w+),.*?task_memcg=([^,]*),task=([^,]*),pid=(\d+)")
_HUNG = re.compile(r"^INFO: task (.+?):(\d+) blocked for more than (\d+) seconds")
_CONNTRACK_FULL = re.compile(r"nf_conntrack: (?:nf_conntrack: )?table full, dropping packet")
_FS_ERROR = re.compile(r"^(EXT4-fs error|EXT4-fs \(.+?\): Remounting filesystem read-only|XFS \(.+?\): "
                       r"(?:Corruption|.*I/O error|Filesystem has been shut down)|BTRFS (?:error|critical)|"
                       r"Buffer I/O error on dev|.*I/O error, dev \S+, sector|.*: Remounting filesystem read-only)")
# An empty virtual CD-ROM, a floppy or a detached loop device logs I/O errors
# on healthy VMs all the time; they hold no filesystem the node runs on.
_NOISE_DEVICE = re.compile(r"\bdev (?:sr|fd|loop)\d+\b")
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


def _pod_of(memcg: str, pods: dict[str, str]) -> str:
    m = _POD_UID.search(memcg)
    if not m:
        return "not a pod"
    uid = m.group(1).replace("_", "-")
    return pods.get(uid, f"pod uid {uid}")


@check("kernel.log", Severity.WARNING)
def kernel_log(ctx):
    """OOM kills (with the pod from the cgroup path), hung tasks, a full
    conntrack table and filesystem errors in the kernel log of the last 24 h
    (/dev/kmsg: what its ring buffer still holds; the systemd journal's files
    when kmsg cannot be read)."""
    uptime_text = (read_small(ctx.hostfs, "/proc/uptime") or "0").split()[0]
    try:
        uptime = float(uptime_text)
    except ValueError:
        uptime = 0.0
    since = uptime - WINDOW_SECONDS
    records, why = kmsg.read(ctx.hostfs)
    source = "in the ring buffer"
    if why:
        t = now()
        records, journal_why = journal.kernel_records(ctx.hostfs, t - WINDOW_SECONDS, uptime, t)
        if journal_why:
            return skipped(f"the kernel log is not readable ({why}; needs CAP_SYSLOG; {journal_why}): "
                           "run `dmesg -T` on the node")
        source = f"in the journal ({why})"
    recent = [r for r in records if r.seconds >= since]
    sandboxes = ctx.cri("list_pod_sandboxes")
    pods = {} if isinstance(sandboxes, CriError) else {p.uid: f"{p.k8s_namespace}/{p.k8s_name}" for p in sandboxes}
    memcg_kills: list[str]
    node_kills: list[str]
    memcg_kills, node_kills, hung, conntrack, fs = [], [], [], [], []
    for r in recent:
        msg = r.message
        m = _OOM_KILL.match(msg)
        if m:
            line = f"[{r.seconds:.0f}s] {m.group(3)} (pid {m.group(4)}) in {_pod_of(m.group(2), pods)}"
            (memcg_kills if m.group(1) == "CONSTRAINT_MEMCG" else node_kills).append(line)
        elif _HUNG.match(msg):
            hung.append(f"[{r.seconds:.0f}s] {msg}")
        elif _CONNTRACK_FULL.search(msg):
            conntrack.append(f"[{r.seconds:.0f}s] {msg}")
        elif _FS_ERROR.match(msg) and not _NOISE_DEVICE.search(msg):
            fs.append(f"[{r.seconds:.0f}s] {msg}")
    seen = [f"{len(recent)} kernel log records in the last 24 h (of {len(records)} {source})"]
    for title, items in (("filesystem errors", fs), ("node out of memory (OOM killer)", node_kills),
                         ("hung tasks", hung), ("conntrack table full", conntrack),
                         ("container OOM kills (memory limit)", memcg_kills)):
        if items:
            seen.append(f"{title}: {len(items)}")
            seen += ["  " + x[:300] for x in items[-5:]]
    seen_text = "\n".join(seen)
    if fs:
        return failed(f"{len(fs)} filesystem error(s) in the kernel log", seen=seen_text,
                      why="A filesystem with I/O errors or remounted read-only breaks image pulls, container "
                      "writes and the kubelet's own state: pods fail in ways that look unrelated.",
                      fix="dmesg -T | grep -iE 'I/O error|EXT4-fs|XFS|read-only'\n"
                      "drain the node (kubectl drain <node> --ignore-daemonsets), then check the disk "
                      "(smartctl -a, fsck on the unmounted filesystem)", refs=[REF_KMSG, REF_JOURNAL])
    problems = [(node_kills, "the node ran out of memory (the kernel's OOM killer, not a container limit)"),
                (hung, "tasks hung in the kernel for minutes (storage or NFS stalls)"),
                (conntrack, "the conntrack table was full and packets were dropped")]
    found = [text for items, text in problems if items]
    if found:
        return warned("; ".join(found), seen=seen_text,
                      why="Each of these is a node-level fault that shows up in pods as random kills, hangs "
                      "or timeouts. The kernel ranks OOM victims by RSS, swap and page tables plus "
                      "oom_score_adj; the kubelet's working-set eviction did not prevent it.",
                      fix="dmesg -T | tail -200   # the full messages\n"
                      "OOM: reserve memory for the system (systemReserved/kubeReserved) and set "
                      "evictionHard memory.available higher; conntrack: raise net.netfilter.nf_conntrack_max; "
                      "hung tasks: check the storage the named processes wait on",
                      refs=[REF_OOM, REF_KMSG, REF_JOURNAL])
    return passed("no node-level faults in the kernel log of the last 24 h"
                  + (f" ({len(memcg_kills)} container OOM kill(s) by their own memory limits)" if memcg_kills else ""),
                  seen=seen_text)


@check("kernel.headroom", Severity.WARNING)
def headroom(ctx):
    """Process and file-handle headroom: threads against kernel.pid_max and
    kernel.threads-max, open files against fs.file-max; and whether pods are
    capped (podPidsLimit) so one of them cannot take the node's PIDs."""
    loadavg = (read_small(ctx.hostfs, "/proc/loadavg") or "").split()
    file_nr = (read_small(ctx.hostfs, "/proc/sys/fs/file-nr") or "").split()
    pid_max = procfs.sysctl(ctx.hostfs, "kernel.pid_max")
    threads_max = procfs.sysctl(ctx.hostfs, "kernel.threads-max")
    if len(loadavg) < 4 or "/" not in loadavg[3] or not pid_max:
        return skipped("no /proc/loadavg or kernel.pid_max to compare")
    tasks = int(loadavg[3].split("/")[1])
    usage = [("threads / kernel.pid_max", tasks, int(pid_max))]
    if threads_max and threads_max.isdigit():
        usage.append(("threads / kernel.threads-max", tasks, int(threads_max)))
    if len(file_nr) == 3 and all(x.isdigit() for x in file_nr) and int(file_nr[2]) > 0:
        usage.append(("open files / fs.file-max", int(file_nr[0]) - int(file_nr[1]), int(file_nr[2])))
    seen = [f"{name}: {used} of {limit} ({used / limit:.0%})" for name, used, limit in usage]
    pids_limit = None
    if ctx.kubelet.present:
        pids_limit, where = ctx.kubelet.value("podPidsLimit", -1)
        seen.append(f"podPidsLimit: {pids_limit} ({where})"
                    + (": unlimited, one pod can use every PID" if str(pids_limit) in ("-1", "0") else ""))
    worst = max(used / limit for _, used, limit in usage)
    if worst < 0.75:
        return passed(f"PIDs and file handles below 75% of their limits (highest {worst:.0%})", seen="\n".join(seen))
    make = failed if worst >= 0.9 else warned
    return make(
        f"the node is at {worst:.0%} of a process or file limit", seen="\n".join(seen),
        why="At the limit fork() and open() fail node-wide: the kubelet, the runtime and every pod get "
        "\"resource temporarily unavailable\" or \"too many open files\".",
        fix="ps -eLf | awk '{print $1}' | sort | uniq -c | sort -n | tail   # who holds the threads\n"
        "sysctl -w kernel.pid_max=4194304   # and in /etc/sysctl.d/\n"
        "cap pods: podPidsLimit: 4096 in the kubelet config",
        refs=["https://kubernetes.io/docs/concepts/policy/pid-limiting/"])
