"""A real terminal for tests: a command in a tmux pane on a private tmux server.

tmux is a terminal emulator: what a program writes is interpreted (cursor
moves, the alternate screen, titles, colours) and `capture` returns the screen
as a user sees it, `display` the terminal's state (#{alternate_on},
#{cursor_flag}, #{pane_title}).
"""
from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_names = itertools.count()


def top_command(*args: str) -> str:
    """The shell words that run `cri-exporter top` from this checkout."""
    return " ".join(shlex.quote(a) for a in [sys.executable, "-m", "cri_exporter", "top", *args])


class Tmux:
    def __init__(self, width: int = 80, height: int = 24):
        self.socket = f"cri-top-{os.getpid()}-{next(_names)}"
        self.width, self.height = width, height

    def run(self, shell: str, env: dict[str, str] | None = None) -> None:
        """Start `shell` (bash -c: on Ctrl-C it waits for the program, as a user's shell does)."""
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (env or {}).items())
        script = f"cd {shlex.quote(str(REPO))} && {exports}{shell}"
        self._tmux("new-session", "-d", "-x", str(self.width), "-y", str(self.height), "bash", "-c", script)

    def capture(self, escapes: bool = False) -> str:
        """The visible screen; with `escapes`, its colours and attributes as SGR sequences."""
        return self._tmux("capture-pane", "-p", *(["-e"] if escapes else []))

    def lines(self) -> list[str]:
        return self.capture().split("\n")

    def display(self, fmt: str) -> str:
        return self._tmux("display-message", "-p", fmt).strip()

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "the screen"):
        """The first capture `predicate` accepts (it returns something truthy)."""
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.capture()
            found = predicate(screen)
            if found:
                return found
            time.sleep(0.2)  # poll interval
        raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)

    def _tmux(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout
