"""What a caller can open against the agent's socket to take threads from signing (issue 12 item 4):
idle connections, and health Watch streams, with and without a bot's credential.

    with Flood(socket_path, bot_tokens) as flood:   # open while a probe measures Sign
        ...
    flood.outcomes   # {"idle_connections": 100, "watch OK": 16, "watch RESOURCE_EXHAUSTED": 8, ...}

    python -m bench.flood [--duration 2] [--rounds 3]    only this case of `make bench`, on its own agent

The same flood as tests/adversarial/test_stream_starvation.py: IDLE_CONNECTIONS raw connections that
send the HTTP/2 preface and then sit, and WATCH_ATTEMPTS Watch calls: UNAUTHENTICATED_WATCHES with no
credential (or a made-up token), the rest from the bots given, each one stream past its cap.
"""

from __future__ import annotations

import secrets
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
IDLE_CONNECTIONS = 100
WATCH_ATTEMPTS = 32
UNAUTHENTICATED_WATCHES = 8
FLOOD_BOTS = 4  # besides the bench's own bot: enough to fill the agent's cap on Watch streams
# A Watch's first answer (a status, or its refusal) is awaited this long; an agent whose threads are
# all held answers none (recorded as "watch NO_ANSWER"), and later attempts are then given less.
ANSWER_SECONDS = 5.0
STREAM_SECONDS = 120.0  # each Watch call's deadline: long enough for the probe measuring under it


class Flood:
    def __init__(self, socket_path: Path, bot_tokens: list[str], *, idle: int = IDLE_CONNECTIONS,
                 watches: int = WATCH_ATTEMPTS, unauthenticated: int = UNAUTHENTICATED_WATCHES,
                 per_bot: int = 5) -> None:
        self.socket_path, self.bot_tokens = socket_path, bot_tokens
        self.idle, self.watches, self.unauthenticated, self.per_bot = idle, watches, unauthenticated, per_bot
        self.outcomes: Counter[str] = Counter()
        self._sockets: list[socket.socket] = []
        self._channels: list[Any] = []
        self._calls: list[Any] = []

    def __enter__(self) -> "Flood":
        from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout

        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        for _ in range(self.idle):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(self.socket_path))
            s.sendall(PREFACE)
            self._sockets.append(s)
        self.outcomes["idle_connections"] = len(self._sockets)
        target = f"unix:{self.socket_path}"
        waiter = ThreadPoolExecutor(max_workers=4, thread_name_prefix="flood")
        patience = [ANSWER_SECONDS]

        def attempt(channel: Any, metadata: tuple) -> None:
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), metadata=metadata,
                                                             timeout=STREAM_SECONDS)
            self._calls.append(call)  # cancelled on exit, answered or not
            try:
                waiter.submit(next, call).result(timeout=patience[0])
            except grpc.RpcError as exc:
                self.outcomes[f"watch {exc.code().name}"] += 1
                return
            except FutureTimeout:
                self.outcomes["watch NO_ANSWER"] += 1
                patience[0] = 0.5
                return
            self.outcomes["watch OK"] += 1

        stranger = grpc.insecure_channel(target)
        self._channels.append(stranger)
        for i in range(self.unauthenticated):
            made_up = f"sa1_{secrets.token_urlsafe(24)}"
            attempt(stranger, (("authorization", f"Bearer {made_up}"),) if i % 2 else ())
        left = self.watches - self.unauthenticated
        for token in self.bot_tokens:
            if left <= 0:
                break
            channel = grpc.insecure_channel(target)
            self._channels.append(channel)
            for _ in range(min(self.per_bot, left)):
                attempt(channel, (("authorization", f"Bearer {token}"),))
                left -= 1
        waiter.shutdown(wait=False)  # threads still waiting end when their calls are cancelled
        return self

    def __exit__(self, *exc: object) -> None:
        for call in self._calls:
            call.cancel()
        for channel in self._channels:
            channel.close()
        for s in self._sockets:
            s.close()
        self._calls, self._channels, self._sockets = [], [], []


def main(argv: list[str] | None = None) -> int:
    """Only the flood case of `make bench`: a throw-away deployment, its agent, idle vs flooded rounds."""
    import argparse
    import shutil

    from bench.deploy import AgentProcess, Deployment
    from bench.run import Bench, _base_dir, flood_ratio, run_flood_cases

    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=main.__doc__)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir")
    args = parser.parse_args(argv)
    bench = Bench(argparse.Namespace(duration=args.duration, rounds=args.rounds))
    base = _base_dir(args.dir)
    agent = None
    try:
        one = Deployment.create(base, "flood")
        agent = AgentProcess(one).start()
        run_flood_cases(bench, agent, one)
        value, (op, limit) = flood_ratio({n: s.summary() for n, s in bench.cases.items()})
        verdict = "not measured" if value is None else ("met" if value <= limit else "MISSED")
        bench.say(f"  agent_unix_flooded_p50_vs_idle_p50 {value if value is not None else 'n/a'}  "
                  f"target {op} {limit}  {verdict}")
        for note in bench.notes:
            bench.say(f"note: {note}")
    finally:
        if agent is not None:
            agent.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
