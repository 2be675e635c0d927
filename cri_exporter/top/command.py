"""The `top` click command: the live view on a terminal, else tables or JSON lines.

- On a terminal (stdin and stdout): the live view (screen.py) until q or Ctrl-C.
- `--once`: one reading, one interval, a second reading, one table (or JSON
  lines with `--output json`), exit 0; exit 1 if the runtime did not answer.
- Otherwise (a pipe, `kubectl exec` without -t): a table (or JSON lines) every
  interval until interrupted, like `top -b`.

It needs no running `serve`: it reads CRI and the cgroup files itself, and calls
no mutating CRI method.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING

import click

from cri_exporter.settings import DEFAULTS
from cri_exporter.top import SORT_KEYS

if TYPE_CHECKING:  # imported when the command runs: `serve` shares this CLI and never loads them
    from cri_exporter.hostfs import HostFS
    from cri_exporter.top.sampler import Reading, Sampler
    from cri_exporter.top.view import Options

OUTPUTS = ("text", "json")


@click.command("top")
@click.option("--runtime-endpoint", default=None, envvar=["CRI_EXPORTER_RUNTIME_ENDPOINT", "CONTAINER_RUNTIME_ENDPOINT"],
              help="CRI endpoint (unix:///path); probed like crictl when unset.")
@click.option("--host-root", default="/", show_default=True, envvar="CRI_EXPORTER_HOST_ROOT",
              type=click.Path(file_okay=False), help="Where the node's filesystem is mounted (/host in the DaemonSet).")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between readings; rates are over this window.")
@click.option("--sort", type=click.Choice(SORT_KEYS), default="cpu", show_default=True,
              help="Column to sort by, biggest first (pressure: the highest of CPU, memory and IO).")
@click.option("--namespace", "namespaces", multiple=True, metavar="GLOB", help="Only namespaces matching (repeatable).")
@click.option("--pod", "pod_globs", multiple=True, metavar="GLOB", help="Only pods matching (repeatable).")
@click.option("--pods", is_flag=True, help="One row per pod (its cgroup) instead of per container.")
@click.option("--once", is_flag=True, help="Print one table after one interval and exit.")
@click.option("--output", "-o", type=click.Choice(OUTPUTS), default="text", show_default=True,
              help="json: one JSON object per row and line (base units, ratios 0-1, null if unknown).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULTS.runtime_timeout, show_default=True,
              help="Deadline of each CRI call, in seconds.")
def top(runtime_endpoint: str | None, host_root: str, interval: float, sort: str, namespaces: tuple[str, ...],
        pod_globs: tuple[str, ...], pods: bool, once: bool, output: str, timeout: float) -> None:
    """Live view of this node's containers: CPU, throttling, memory, OOM kills,
    restarts and pressure, from the cgroup files, sorted by the busiest."""
    from cri_exporter.cri.client import CriClient, CriError, resolve_endpoint
    from cri_exporter.hostfs import HostFS
    from cri_exporter.top.sampler import Sampler
    from cri_exporter.top.view import Options

    _quiet_logs()
    hostfs = HostFS(host_root)
    endpoint, _ = resolve_endpoint(runtime_endpoint, host_root)
    client = CriClient(endpoint, timeout=timeout)
    try:
        v = client.version()
        runtime = f"{v.runtime_name} {v.runtime_version}"
    except CriError:
        runtime = endpoint  # the readings say what is wrong, and are retried
    opts = Options(sort=sort, pods=pods, namespaces=namespaces, pod_globs=pod_globs, interval=interval)
    sampler = Sampler(client, hostfs, pods=pods)
    node = _node_name(hostfs)
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)
    try:
        if once:
            sys.exit(_once(sampler, opts, runtime, node, output))
        if output == "text" and sys.stdin.isatty() and sys.stdout.isatty():
            _live(sampler, opts, runtime, node)
        else:
            _stream(sampler, opts, runtime, node, output)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live view or a stream ends: exit 0, the terminal already restored
    except BrokenPipeError:
        # `| head`: the reader is gone; nothing more to say, and nothing to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        client.close()


def _exit(signum: int, frame: object) -> None:
    """SIGTERM / SIGHUP end the program like q: through the code that restores the terminal."""
    raise KeyboardInterrupt


def _quiet_logs() -> None:
    """The readers log (e.g. a garbled cgroup line at debug): nothing may write over the screen."""
    from cri_exporter.logsetup import configure

    configure("console", "error")


def _node_name(hostfs: HostFS) -> str:
    try:
        name = hostfs.read_text("/etc/hostname", limit=256).strip()
    except (OSError, ValueError):
        name = ""
    return name or socket.gethostname()


def _live(sampler: Sampler, opts: Options, runtime: str, node: str) -> None:
    from cri_exporter.top import screen
    from cri_exporter.top.feed import Feed

    feed = Feed(sampler, opts.interval)
    try:
        screen.ensure_terminfo()
    except screen.TerminalUnusable as err:
        raise click.ClickException(str(err)) from None
    feed.start()
    try:
        screen.run(feed, opts, runtime, node)
    finally:
        feed.stop()


def _once(sampler: Sampler, opts: Options, runtime: str, node: str, output: str) -> int:
    from cri_exporter.top.feed import read_safely

    first = read_safely(sampler)
    time.sleep(max(0.0, opts.interval - (time.monotonic() - first.mono)))
    second = read_safely(sampler)
    return _print(opts, runtime, node, first, second, output)


def _stream(sampler: Sampler, opts: Options, runtime: str, node: str, output: str) -> None:
    from cri_exporter.top.feed import read_safely

    before = read_safely(sampler)
    while True:
        time.sleep(max(0.0, opts.interval - (time.monotonic() - before.mono)))
        now = read_safely(sampler)
        _print(opts, runtime, node, before, now, output)
        if output == "text":
            click.echo("")
        sys.stdout.flush()
        before = now


def _print(opts: Options, runtime: str, node: str, before: Reading, now: Reading, output: str) -> int:
    """One frame on stdout (errors on stderr); 1 if the runtime did not answer."""
    from cri_exporter.top import table
    from cri_exporter.top.view import frame

    f = frame(opts, runtime, node, before, now)
    if f.error:
        click.echo(f"cri-exporter top: {table.sanitize(f.error)}", err=True)
        return 1
    if output == "json":
        for row in f.rows:
            click.echo(table.json_row(row))
        return 0
    tty = sys.stdout.isatty()
    width = os.get_terminal_size(sys.stdout.fileno()).columns if tty else None
    tbl, legend = f.lines(width, opts.pods)
    paint = _painter() if tty else None
    click.echo(f.title)
    click.echo(f.node or "")
    click.echo(_bold(tbl.header(), paint))
    for i in range(len(f.rows)):
        if paint is None:
            click.echo(tbl.line(i))
        else:
            click.echo("".join(_paint(text, style, paint) + " " for _, text, style in tbl.spans(i)).rstrip())
    for line in legend:
        click.echo(line)
    return 0


def _painter() -> dict[str, str] | None:
    """terminfo's sequences for this terminal's colours, or None (no colour, or NO_COLOR set)."""
    if os.environ.get("NO_COLOR"):
        return None
    import curses

    try:
        curses.setupterm()
        setaf, bold, reset = curses.tigetstr("setaf"), curses.tigetstr("bold"), curses.tigetstr("sgr0")
    except curses.error:
        return None
    if not (setaf and bold and reset):
        return None
    from cri_exporter.top import table

    return {
        table.WARN: curses.tparm(setaf, curses.COLOR_YELLOW).decode(),
        table.BAD: curses.tparm(setaf, curses.COLOR_RED).decode() + bold.decode(),
        "bold": bold.decode(),
        "reset": reset.decode(),
    }


def _paint(text: str, style: str, paint: dict[str, str]) -> str:
    start = paint.get(style)
    return f"{start}{text}{paint['reset']}" if start else text


def _bold(text: str, paint: dict[str, str] | None) -> str:
    return _paint(text, "bold", paint) if paint else text
