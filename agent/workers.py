"""Several agent processes on one machine: a supervisor that forks workers and keeps them running.

Why processes: python-pkcs11 initialises the module without locking, so one
process makes one token call at a time, and the GIL serialises the rest of a
request too. Each worker is a whole agent: its own PKCS#11 module instance,
session and gRPC server. Workers are forked before any gRPC object exists or
the module is loaded (gRPC Python supports fork only then, and a PKCS#11
module must be initialised afresh in each process).

How workers share the listening address (verified with grpcio 1.85.1):

* TCP: every worker listens on the same host:port with `grpc.so_reuseport` 1;
  the kernel spreads incoming connections over them (by connection, so one
  client channel stays on one worker).
* Unix sockets have no SO_REUSEPORT on Linux, and gRPC removes an existing
  socket file before it binds, so a second worker on the same path silently
  steals it and the first one never gets a connection again. Instead each
  worker has its own socket in the agent's private run directory:
  `worker_socket(path, i)`, where worker 0 keeps the configured path (clients
  that know nothing of workers use it, correctly, at one worker's speed).
  A gRPC-core client (Python, C++, Ruby...) reaches all of them through one
  channel: `unix_target(path)` names every worker socket
  (`unix:/run/agent.sock,/run/agent.sock.1`) and `CHANNEL_OPTIONS` picks
  `round_robin`, which sends each call to the next worker and skips one that
  is down (restarting) until it is back.

Use (the agent's `serve` does it):

    sys.exit(run_workers(serve_one, count))   # serve_one(i) -> exit code, in worker i
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Exit codes after which restarting cannot help: a configuration error, or a PIN the token
# refused (each retry of a wrong PIN brings the token closer to locking it). cli.py's codes.
FATAL_EXIT_CODES = frozenset({2, 3})
# A worker that ran this long before dying is restarted at once; quicker deaths back off.
STABLE_SECONDS = 10.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
# How long workers get to stop after the signal is forwarded (the agent's own grace is 5 s).
STOP_TIMEOUT = 15.0
POLL_SECONDS = 0.1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# For clients of a multi-worker agent on Unix sockets: call each worker in turn.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (("grpc.lb_policy_name", "round_robin"),)


def worker_socket(path: Path, index: int) -> Path:
    """Worker INDEX's Unix socket: the configured path for worker 0, `<path>.<index>` for the others."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


def worker_sockets(path: Path) -> list[Path]:
    """The sockets of the workers serving PATH now: PATH itself, then `<path>.1`, `<path>.2`... while they exist."""
    found = [path]
    index = 1
    while worker_socket(path, index).is_socket():
        found.append(worker_socket(path, index))
        index += 1
    return found


def unix_target(path: Path, count: int | None = None) -> str:
    """A gRPC target naming every worker's socket (COUNT of them, or as many as exist now)."""
    paths = worker_sockets(path) if count is None else [worker_socket(path, i) for i in range(count)]
    return "unix:" + ",".join(str(p.absolute()) for p in paths)


@dataclass
class _Worker:
    index: int
    pid: int = 0
    started: float = 0.0
    backoff: float = 0.0  # seconds to wait before the next start after a quick death
    due: float = 0.0  # monotonic time of the next start, while not running


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited {os.waitstatus_to_exitcode(status)}"


def _default_log(event: str, **fields: Any) -> None:
    from agent.logs import get_logger

    get_logger().info(event, **fields)


def _fork(worker: _Worker, serve_one: Callable[[int], int], log: Callable[..., None]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    # Blocked across the fork, so that a signal cannot reach the new worker while it still has
    # the supervisor's handler (which would swallow it); the worker unblocks it with SIG_DFL set.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code: object = 1
            try:
                for sig in _STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)  # its server installs its own
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
                code = serve_one(worker.index)
            except SystemExit as exc:
                code = exc.code
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code if isinstance(code, int) else 1)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    worker.pid, worker.started = pid, time.monotonic()
    log("workers.started", worker=worker.index, pid=pid)


def _stopped_cleanly(status: int, sig: int) -> bool:
    """Exited 0, or ended by the stop signal itself (it came before the worker's server took it over)."""
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status) == sig
    return os.waitstatus_to_exitcode(status) == 0


def run_workers(
    serve_one: Callable[[int], int],
    count: int,
    *,
    log: Callable[..., None] = _default_log,
    fatal_exit_codes: Iterable[int] = FATAL_EXIT_CODES,
    stop_timeout: float = STOP_TIMEOUT,
) -> int:
    """Fork COUNT workers, each running SERVE_ONE(index); keep them running until SIGTERM or SIGINT.

    Call it before this process creates any gRPC object or loads the PKCS#11 module.
    The signal is forwarded to every worker; workers still running STOP_TIMEOUT seconds later
    are killed. A worker that dies meanwhile is restarted, after a backoff that doubles (up to
    BACKOFF_MAX) while it keeps dying within STABLE_SECONDS of its start. A worker exiting with
    a code in FATAL_EXIT_CODES stops them all: restarting cannot fix a configuration or a PIN.

    Returns 0 when every worker stopped cleanly after the signal; otherwise the fatal
    worker's code, or 1 when a worker had to be killed or failed while stopping.
    """
    if count < 1:
        raise ValueError("at least one worker")
    fatal = frozenset(fatal_exit_codes)
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    workers = [_Worker(index=i) for i in range(count)]
    result = 0
    statuses: list[int] = []  # of workers reaped after the signal came
    try:
        for worker in workers:
            if not received:
                _fork(worker, serve_one, log)
        while not received:
            now = time.monotonic()
            for worker in workers:
                if worker.pid == 0 and now >= worker.due and not received:
                    _fork(worker, serve_one, log)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0:
                time.sleep(POLL_SECONDS)
                continue
            worker = next((w for w in workers if w.pid == pid), None)
            if worker is None:
                continue  # not one of ours
            worker.pid = 0
            if received:  # died as we were told to stop: judged with the others
                statuses.append(status)
                break
            code = os.waitstatus_to_exitcode(status)
            if os.WIFEXITED(status) and code in fatal:
                log("workers.fatal", worker=worker.index, pid=pid, exit_code=code)
                result = code
                break
            lived = time.monotonic() - worker.started
            worker.backoff = 0.0 if lived >= STABLE_SECONDS else min(
                max(worker.backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
            worker.due = time.monotonic() + worker.backoff
            log("workers.died", worker=worker.index, pid=pid, status=_describe(status),
                restart_in_seconds=worker.backoff)
        stop_signal = received[0] if received else signal.SIGTERM
        if received:
            log("workers.stopping", signal=signal.Signals(stop_signal).name)
        statuses += _stop_all(workers, stop_signal, log, stop_timeout)
        if result == 0 and not all(_stopped_cleanly(s, stop_signal) for s in statuses):
            result = 1
        return result
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_all(workers: list[_Worker], sig: int, log: Callable[..., None], timeout: float) -> list[int]:
    """Forward SIG to the running workers and reap them all (killing the late); their wait statuses."""
    running = {w.pid: w for w in workers if w.pid}
    for pid in running:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    statuses = []
    deadline = time.monotonic() + timeout
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if time.monotonic() > deadline:
                for late in running:
                    log("workers.killed", worker=running[late].index, pid=late, reason="did not stop in time")
                    os.kill(late, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(POLL_SECONDS)
            continue
        worker = running.pop(pid, None)
        if worker is None:
            continue
        worker.pid = 0
        statuses.append(status)
        log("workers.stopped", worker=worker.index, pid=pid, status=_describe(status))
    return statuses
