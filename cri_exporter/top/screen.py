"""The live view: curses from the standard library.

curses rather than hand-written escape codes: terminfo knows what each
terminal ($TERM) understands, curses.wrapper restores the terminal (modes,
cursor, the screen the user had) on every way out (q, Ctrl-C, an exception),
ncurses sends only the cells that changed (it matters over a slow
`kubectl exec`) and reports resizes. A library such as rich or textual would
add a dependency to every node's image for what this needs: a table redrawn
every few seconds and a handful of keys.

Keys: q quits (Ctrl-C too); c m t p r sort by CPU, memory, throttling,
pressure, restarts; arrows, PgUp/PgDn, Home scroll.
"""
from __future__ import annotations

import curses
import os

from cri_exporter.top import table
from cri_exporter.top.feed import Feed
from cri_exporter.top.rows import Row
from cri_exporter.top.sampler import Reading
from cri_exporter.top.view import Options, frame

SORT_BY_KEY = {ord("c"): "cpu", ord("m"): "memory", ord("t"): "throttle", ord("p"): "pressure", ord("r"): "restarts"}
HELP = "keys: c cpu  m memory  t throttle  p pressure  r restarts  arrows scroll  q quit"
POLL_MS = 100  # how often keys and new readings are looked at


class TerminalUnusable(Exception):
    """No terminfo entry for $TERM (nor the fallback): the live view cannot run."""


def ensure_terminfo() -> None:
    """In `kubectl exec -it` TERM is whatever the runtime and the image set, not the
    user's: unset, or a terminal a slim image has no terminfo for. Fall back to
    xterm (every terminal emulator speaks it), then vt100, else say so."""
    try:
        curses.setupterm()
        return
    except curses.error:
        pass
    wanted = os.environ.get("TERM")
    for fallback in ("xterm", "vt100"):
        try:
            curses.setupterm(fallback)
        except curses.error:
            continue
        os.environ["TERM"] = fallback
        return
    raise TerminalUnusable(f"no terminal description for TERM={wanted!r}: run with --once or --output json")


def run(feed: Feed, opts: Options, runtime: str, node_name: str) -> None:
    """The live view until q (after ensure_terminfo()); Ctrl-C raises KeyboardInterrupt
    once the terminal is restored."""
    curses.wrapper(_Screen(feed, opts, runtime, node_name).loop)


class _Screen:
    def __init__(self, feed: Feed, opts: Options, runtime: str, node_name: str):
        self.feed, self.opts, self.runtime, self.node_name = feed, opts, runtime, node_name
        self.scroll = 0
        # Counters as first seen: one that rose while we watched is shown bold.
        self.first: dict[tuple, tuple[int | None, int | None]] = {}

    def loop(self, stdscr: curses.window) -> None:
        try:
            curses.curs_set(0)
        except curses.error:  # a terminal that cannot hide its cursor
            pass
        stdscr.timeout(POLL_MS)
        self.styles = _styles()
        drawn = -1
        while True:
            key = stdscr.getch()
            if key in (ord("q"), ord("Q")):
                return
            dirty = key != -1
            if key in SORT_BY_KEY:
                self.opts.sort = SORT_BY_KEY[key]
                self.scroll = 0
            elif key == curses.KEY_RESIZE:
                curses.update_lines_cols()
            elif key in (curses.KEY_DOWN, ord("j")):
                self.scroll += 1
            elif key in (curses.KEY_UP, ord("k")):
                self.scroll -= 1
            elif key == curses.KEY_NPAGE:
                self.scroll += max(1, stdscr.getmaxyx()[0] - 6)
            elif key == curses.KEY_PPAGE:
                self.scroll -= max(1, stdscr.getmaxyx()[0] - 6)
            elif key == curses.KEY_HOME:
                self.scroll = 0
            version, before, now = self.feed.latest()
            if dirty or version != drawn:
                self.draw(stdscr, before, now)
                drawn = version

    def draw(self, stdscr: curses.window, before: Reading | None, now: Reading | None) -> None:
        height, width = stdscr.getmaxyx()
        f = frame(self.opts, self.runtime, self.node_name, before, now)
        tbl, legend = f.lines(width, self.opts.pods)
        stdscr.erase()
        put = _Writer(stdscr, height, width)
        put(0, 0, f.title, curses.A_BOLD)
        put(1, 0, f.node or "reading...")
        if f.error:
            put(2, 0, table.sanitize(f.error), self.styles[table.BAD])
        elif before is None or before.inventory is None:
            put(2, 0, f"rates after {self.opts.interval:g}s | {HELP}")
        else:
            put(2, 0, HELP)
        put(3, 0, tbl.header().ljust(width), curses.A_REVERSE)
        sorted_col = tbl.offset(table.SORT_COLUMN[self.opts.sort])
        if sorted_col:
            x, w = sorted_col
            put(3, x, tbl.header()[x:x + w].ljust(w), curses.A_REVERSE | curses.A_BOLD | curses.A_UNDERLINE)
        room = max(0, height - 4 - len(legend))
        self.scroll = max(0, min(self.scroll, len(f.rows) - room))
        rose = self._rose(f.rows)
        for line, i in enumerate(range(self.scroll, min(len(f.rows), self.scroll + room))):
            for (x, text, style), col in zip(tbl.spans(i), tbl.columns):
                attr = self.styles[style]
                if col.key in ("oom", "restarts") and (i, col.key) in rose:
                    attr = self.styles[table.BAD] | curses.A_BOLD
                put(4 + line, x, text, attr)
        for n, text in enumerate(legend):
            put(height - len(legend) + n, 0, text, curses.A_DIM)
        stdscr.noutrefresh()
        curses.doupdate()

    def _rose(self, rows: list[Row]) -> set[tuple[int, str]]:
        """(row, column) of OOM kills and restarts that rose since top started."""
        out = set()
        for i, r in enumerate(rows):
            key = (r.kind, r.namespace, r.pod, r.container)
            first = self.first.setdefault(key, (r.oom_kills, r.restarts))
            if r.oom_kills is not None and first[0] is not None and r.oom_kills > first[0]:
                out.add((i, "oom"))
            if r.restarts is not None and first[1] is not None and r.restarts > first[1]:
                out.add((i, "restarts"))
        return out


def _styles() -> dict[str, int]:
    """Attributes per cell style: colours where the terminal has them (and NO_COLOR is unset)."""
    styles = {table.PLAIN: curses.A_NORMAL, table.WARN: curses.A_NORMAL, table.BAD: curses.A_BOLD}
    if curses.has_colors() and not os.environ.get("NO_COLOR"):
        curses.start_color()
        try:
            curses.use_default_colors()
            background = -1
        except curses.error:
            background = curses.COLOR_BLACK
        curses.init_pair(1, curses.COLOR_YELLOW, background)
        curses.init_pair(2, curses.COLOR_RED, background)
        styles[table.WARN] = curses.color_pair(1)
        styles[table.BAD] = curses.color_pair(2) | curses.A_BOLD
    return styles


class _Writer:
    """addnstr clipped to the screen: curses raises for the bottom-right cell and off-screen text."""

    def __init__(self, stdscr: curses.window, height: int, width: int):
        self.stdscr, self.height, self.width = stdscr, height, width

    def __call__(self, y: int, x: int, text: str, attr: int = curses.A_NORMAL) -> None:
        if not 0 <= y < self.height or x >= self.width:
            return
        try:
            self.stdscr.addnstr(y, x, text, self.width - x, attr)
        except curses.error:  # the last cell of the last line: written, then the cursor cannot advance
            pass
