"""Starting, killing and stopping real `queuebot` processes for the fault-injection suite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

QUEUEBOT = Path(sys.executable).parent / "queuebot"
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Far above a clean shutdown (well under a second): hitting it means the process hung.
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class QueuebotProcess:
    """One `queuebot work` or `queuebot run` process in `cwd` (where its queuebot.toml is), its output kept
    in a log file for the failure message."""

    def __init__(self, cwd: Path, database_url: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.args = args or ("work",)
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith("SLACK_") and k != "QUEUEBOT_CONFIG"
        }
        environ.update(
            DATABASE_URL=database_url,
            PYTHONPATH=os.pathsep.join([str(REPO_ROOT), environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        environ.update(env or {})
        self.env = environ
        self.log_path = cwd / f"queuebot-{len(list(cwd.glob('queuebot-*.log')))}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> QueuebotProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(QUEUEBOT), "-v", *self.args], cwd=self.cwd, env=self.env, stdout=log, stderr=log
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, running jobs are orphaned."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> int:
        """SIGTERM, the way a service manager stops it; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"queuebot did not stop on SIGTERM; log:\n{self.tail()}") from None
        return int(self.proc.returncode)

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
