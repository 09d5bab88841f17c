"""The worker supervisor (agent.workers) with real processes and real gRPC servers on Unix sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from agent import workers

ROOT = Path(__file__).resolve().parents[2]

# A supervisor of COUNT toy workers, each answering "index:pid" on its own socket.
# MODE: "serve"; "fatal" (worker 1 exits 2 at once); "crash" (worker 1 exits 1 at once, every
# time); "stubborn" (worker 1 ignores SIGTERM).
SUPERVISOR = r'''
import json, os, signal, sys, threading
from concurrent import futures
from pathlib import Path
import grpc
from agent import workers

sock, count, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def serve_one(i):
    if i == 1 and mode == "fatal":
        return 2
    if i == 1 and mode == "crash":
        return 1
    server = grpc.server(futures.ThreadPoolExecutor(2))
    who = lambda request, context: f"{i}:{os.getpid()}".encode()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.Workers", {"Who": grpc.unary_unary_rpc_method_handler(who)}),))
    server.add_insecure_port(f"unix:{workers.worker_socket(sock, i)}")
    stop = threading.Event()
    if i == 1 and mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    server.start()
    while not stop.wait(0.05):
        pass
    server.stop(1).wait()
    return 0

def log(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)

sys.exit(workers.run_workers(serve_one, count, log=log, stop_timeout=2.0))
'''


class Supervisor:
    def __init__(self, tmp_path: Path, count: int, mode: str = "serve") -> None:
        self.sock = tmp_path / "run" / "agent.sock"
        self.sock.parent.mkdir(mode=0o700)
        self.out = tmp_path / "supervisor.out"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, str(self.sock), str(count), mode],
            stdout=self.out.open("w"), stderr=subprocess.STDOUT, cwd=ROOT,
        )

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.startswith("{")]

    def wait_for_sockets(self, count: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(workers.worker_socket(self.sock, i).is_socket() for i in range(count)):
                return
            assert self.proc.poll() is None, self.out.read_text()
            time.sleep(0.05)
        raise AssertionError(f"workers did not come up: {self.out.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)


def who(target: str, options=(), timeout: float = 5) -> tuple[int, int]:
    with grpc.insecure_channel(target, options=list(options)) as channel:
        index, pid = channel.unary_unary("/t.Workers/Who")(b"", timeout=timeout).decode().split(":")
    return int(index), int(pid)


def test_worker_sockets_are_named_after_the_configured_one(tmp_path: Path):
    path = tmp_path / "agent.sock"
    assert workers.worker_socket(path, 0) == path
    assert workers.worker_socket(path, 3) == tmp_path / "agent.sock.3"
    assert workers.unix_target(path, 2) == f"unix:{path},{tmp_path}/agent.sock.1"


def test_discovery_stops_at_the_first_missing_socket_and_ignores_other_files(tmp_path: Path):
    import socket

    path = tmp_path / "agent.sock"
    listeners = []
    for name in ("agent.sock", "agent.sock.1", "agent.sock.3"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp_path / name))
        listeners.append(s)
    (tmp_path / "agent.sock.2.txt").write_text("not a socket")
    try:
        assert workers.worker_sockets(path) == [path, tmp_path / "agent.sock.1"]
        (tmp_path / "agent.sock.2").write_text("a file, not a socket")
        assert workers.worker_sockets(path) == [path, tmp_path / "agent.sock.1"]
    finally:
        for s in listeners:
            s.close()


def test_one_channel_reaches_every_worker_and_sigterm_stops_them_all(tmp_path: Path):
    sup = Supervisor(tmp_path, 2)
    try:
        sup.wait_for_sockets(2)
        seen = Counter()
        target = workers.unix_target(sup.sock)
        with grpc.insecure_channel(target, options=list(workers.CHANNEL_OPTIONS)) as channel:
            call = channel.unary_unary("/t.Workers/Who")
            grpc.channel_ready_future(channel).result(timeout=5)
            for _ in range(40):
                seen[int(call(b"", timeout=5).decode().split(":")[0])] += 1
        assert set(seen) == {0, 1} and min(seen.values()) >= 10, seen
        pids = {who(f"unix:{workers.worker_socket(sup.sock, i)}")[1] for i in range(2)}
        assert len(pids) == 2 and sup.proc.pid not in pids  # separate processes
    finally:
        code = sup.stop()
    assert code == 0, sup.out.read_text()
    stopped = [e for e in sup.events() if e["event"] == "workers.stopped"]
    assert sorted(e["worker"] for e in stopped) == [0, 1]
    assert all(e["status"] == "exited 0" for e in stopped)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sigint_is_forwarded_too(tmp_path: Path):
    sup = Supervisor(tmp_path, 2)
    sup.wait_for_sockets(2)
    assert sup.stop(signal.SIGINT) == 0, sup.out.read_text()
    assert any(e["event"] == "workers.stopping" and e["signal"] == "SIGINT" for e in sup.events())


def test_a_worker_that_dies_is_restarted_on_its_socket(tmp_path: Path):
    sup = Supervisor(tmp_path, 2)
    try:
        sup.wait_for_sockets(2)
        one = f"unix:{workers.worker_socket(sup.sock, 1)}"
        _, first_pid = who(one)
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                index, pid = who(one, timeout=1)
                if pid != first_pid:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, sup.out.read_text()
            time.sleep(0.1)
        assert index == 1
        died = [e for e in sup.events() if e["event"] == "workers.died"]
        assert [(e["worker"], e["pid"], e["status"]) for e in died] == [(1, first_pid, "killed by SIGKILL")]
    finally:
        assert sup.stop() == 0, sup.out.read_text()


def test_a_worker_that_keeps_dying_is_restarted_with_growing_backoff(tmp_path: Path):
    sup = Supervisor(tmp_path, 2, mode="crash")
    try:
        sup.wait_for_sockets(1)
        deadline = time.monotonic() + 10
        while len([e for e in sup.events() if e["event"] == "workers.died"]) < 3:
            assert time.monotonic() < deadline, sup.out.read_text()
            time.sleep(0.1)
        assert who(f"unix:{sup.sock}")[0] == 0  # the healthy worker serves on meanwhile
    finally:
        code = sup.stop()
    died = [e for e in sup.events() if e["event"] == "workers.died"]
    assert all(e["worker"] == 1 and e["status"] == "exited 1" for e in died)
    assert [e["restart_in_seconds"] for e in died[:3]] == [0.5, 1.0, 2.0]
    assert code == 0, sup.out.read_text()


def test_a_fatal_exit_code_stops_every_worker_and_is_returned(tmp_path: Path):
    sup = Supervisor(tmp_path, 2, mode="fatal")
    code = sup.proc.wait(timeout=20)
    assert code == 2, sup.out.read_text()
    events = sup.events()
    assert [e["worker"] for e in events if e["event"] == "workers.fatal"] == [1]
    assert not [e for e in events if e["event"] == "workers.died"]  # never restarted
    started = {e["pid"] for e in events if e["event"] == "workers.started"}
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_worker_that_ignores_the_signal_is_killed_and_the_exit_code_says_so(tmp_path: Path):
    sup = Supervisor(tmp_path, 2, mode="stubborn")
    sup.wait_for_sockets(2)
    started = time.monotonic()
    assert sup.stop() == 1, sup.out.read_text()
    assert time.monotonic() - started < 10
    events = sup.events()
    assert [e["worker"] for e in events if e["event"] == "workers.killed"] == [1]
    statuses = {e["worker"]: e["status"] for e in events if e["event"] == "workers.stopped"}
    assert statuses == {0: "exited 0", 1: "killed by SIGKILL"}


def test_worker_count_must_be_positive():
    with pytest.raises(ValueError):
        workers.run_workers(lambda i: 0, 0)
