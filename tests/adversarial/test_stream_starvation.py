"""Starving the signing threads (issue 12 item 4), against the real agent process.

The agent's gRPC server runs every call on a pool thread from its headers to its end. Health Watch
streams needed no credential and held a signing thread for their whole life, so a few of them from
anyone who could reach the socket made every Sign time out. Here the agent is flooded with what a
caller can open: 100 idle connections (the HTTP/2 preface, then nothing), and 32 Watch streams,
unauthenticated ones and bots' ones up to and past the caps; and with calls that send their headers
but never their request. Through all of it Sign keeps its idle latency (medians within 2x), every
Sign succeeds, Check needs no credential, and each refusal says what to do.
"""

from __future__ import annotations

import secrets
import socket
import statistics
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signing_agent_client._proto import signer_pb2, signer_pb2_grpc
from agent.server import MAX_WATCH_STREAMS, MAX_WATCH_STREAMS_PER_BOT, PUBLIC_REQUEST_SECONDS
from support.deploy import TEST_BOT, TEST_BOT_TOKEN, make_env, run_cli, start_agent, write_bots
from support.leaks import new_secret, register_secret

pytestmark = pytest.mark.e2e

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
IDLE_CONNECTIONS = 100
WATCH_ATTEMPTS = 32
UNAUTHENTICATED_WATCHES = 8
# Enough bots to fill every per-bot cap and then the agent's, with one more to be refused by the latter.
FLOOD_BOTS = [f"flood-{i}" for i in range(MAX_WATCH_STREAMS // MAX_WATCH_STREAMS_PER_BOT)]
SAMPLES = 250  # Sign calls per measurement: ~1 ms each, so well under a second, and a stable median
SLOWDOWN_LIMIT = 2.0
LABEL = "starve-bn"
SERVING = health_pb2.HealthCheckResponse.SERVING


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def flood_agent(tmp_path_factory: pytest.TempPathFactory):
    env = make_env(tmp_path_factory, "starve")
    tokens = {TEST_BOT: TEST_BOT_TOKEN} | {name: register_secret(f"sa1_{secrets.token_urlsafe(24)}")
                                          for name in FLOOD_BOTS}
    write_bots(env.root / "bots.toml", tokens)
    run_cli(env, "keys", "import", "--label", LABEL, "--exchange", "binance", "--api-key", "id", "--type", "hmac",
            stdin=new_secret(64) + "\n", check=True)
    agent = start_agent(env, env.config)
    yield agent, tokens
    assert agent.stop() == 0, agent.log.read_text()[-3000:]


def sign_latencies(stub: signer_pb2_grpc.SignerStub, count: int) -> list[float]:
    """COUNT Signs by the test bot, one at a time; each must be signed (generous deadline: a noisy machine)."""
    request = signer_pb2.SignRequest(key=LABEL, method="GET", path="/api/v3/account")
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        reply = stub.Sign(request, metadata=bearer(TEST_BOT_TOKEN), timeout=10)
        out.append(time.perf_counter() - t0)
        assert "signature=" in reply.path
    return out


def check(target: str, metadata=()) -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10,
                                                         metadata=metadata).status


class Watches:
    """Watch streams opened one by one; each is either open (its first status came) or refused."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.channels: list[grpc.Channel] = []
        self.open: list = []
        self.refused: list[tuple[grpc.StatusCode, str]] = []

    def attempt(self, metadata=(), channel: grpc.Channel | None = None) -> grpc.StatusCode:
        if channel is None:
            channel = grpc.insecure_channel(self.target)
            self.channels.append(channel)
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), metadata=metadata,
                                                         timeout=60)
        try:
            first = next(call)
        except grpc.RpcError as exc:
            self.refused.append((exc.code(), exc.details() or ""))
            return exc.code()
        assert first.status == SERVING
        self.open.append(call)
        return grpc.StatusCode.OK

    def close(self) -> None:
        for call in self.open:
            call.cancel()
        for channel in self.channels:
            channel.close()


def idle_connections(path: str, count: int) -> list[socket.socket]:
    conns = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(PREFACE)
        conns.append(s)
    return conns


def test_a_flood_of_connections_and_watch_streams_does_not_slow_signing(flood_agent):
    agent, tokens = flood_agent
    with grpc.insecure_channel(agent.target) as channel:
        stub = signer_pb2_grpc.SignerStub(channel)
        sign_latencies(stub, 30)  # warm: connection, key lookup, first-call costs
        idle = statistics.median(sign_latencies(stub, SAMPLES))

        conns = idle_connections(str(agent.socket), IDLE_CONNECTIONS)
        watches = Watches(agent.target)
        try:
            codes = []
            for i in range(UNAUTHENTICATED_WATCHES):  # no credential, or a token no bot has
                forged = register_secret(f"sa1_{secrets.token_urlsafe(24)}")
                codes.append(watches.attempt(bearer(forged) if i % 2 else ()))
            assert codes == [grpc.StatusCode.UNAUTHENTICATED] * UNAUTHENTICATED_WATCHES
            unauthenticated = {details for _, details in watches.refused}
            assert any("authorization: Bearer <token>" in d and "use Check" in d for d in unauthenticated), \
                unauthenticated
            assert all(tokens[name] not in d for d in unauthenticated for name in tokens)

            # Bots, one channel each, each one stream past its cap; the last bot finds the agent's cap full.
            authenticated = WATCH_ATTEMPTS - UNAUTHENTICATED_WATCHES
            names = [TEST_BOT, *FLOOD_BOTS]
            per_bot = {}
            for name in names:
                attempts = min(MAX_WATCH_STREAMS_PER_BOT + 1, authenticated)
                authenticated -= attempts
                bot_channel = grpc.insecure_channel(agent.target)
                watches.channels.append(bot_channel)
                per_bot[name] = [watches.attempt(bearer(tokens[name]), bot_channel) for _ in range(attempts)]
            assert authenticated == 0, "the flood has its 32 Watch attempts"
            assert len(watches.open) == MAX_WATCH_STREAMS
            for name in names[:-1]:
                assert per_bot[name] == [grpc.StatusCode.OK] * MAX_WATCH_STREAMS_PER_BOT + [
                    grpc.StatusCode.RESOURCE_EXHAUSTED], (name, per_bot[name])
            assert set(per_bot[names[-1]]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            exhausted = [d for code, d in watches.refused if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
            assert any("MAX_WATCH_STREAMS_PER_BOT" in d for d in exhausted), exhausted
            assert any(f"MAX_WATCH_STREAMS = {MAX_WATCH_STREAMS}" in d for d in exhausted), exhausted

            assert check(agent.target) == SERVING  # no credential needed
            flooded = statistics.median(sign_latencies(stub, SAMPLES))
            assert check(agent.target) == SERVING
        finally:
            watches.close()
            for s in conns:
                s.close()
        print(f"Sign p50 idle {idle * 1e3:.2f} ms, flooded {flooded * 1e3:.2f} ms: x{flooded / idle:.2f}")
        assert flooded <= SLOWDOWN_LIMIT * idle, f"Sign p50 {flooded * 1e3:.2f} ms under the flood vs " \
                                                 f"{idle * 1e3:.2f} ms idle"

        # The streams were released when their clients went away: a bot gets its full share again.
        again = Watches(agent.target)
        try:
            deadline = time.monotonic() + 10
            while True:
                codes = [again.attempt(bearer(TEST_BOT_TOKEN)) for _ in range(MAX_WATCH_STREAMS_PER_BOT)]
                if codes == [grpc.StatusCode.OK] * MAX_WATCH_STREAMS_PER_BOT:
                    break
                assert time.monotonic() < deadline, f"Watch streams not released: {again.refused}"
                again.close()
                again = Watches(agent.target)
                time.sleep(0.1)
        finally:
            again.close()


def test_calls_that_never_send_their_request_hold_no_thread_for_long(flood_agent):
    """Headers, then nothing: without a bot's token such a call waits on a public thread and is cut
    after PUBLIC_REQUEST_SECONDS; Sign, and Check without a credential, go on meanwhile."""
    agent, _ = flood_agent
    release = threading.Event()

    def never():
        release.wait(30)
        return
        yield b""  # noqa: unreachable - a generator that sends nothing

    with grpc.insecure_channel(agent.target) as channel:
        stub = signer_pb2_grpc.SignerStub(channel)
        sign_latencies(stub, 10)
        parked = [channel.stream_unary(method).future(never(), timeout=30)
                  for method in ["/signing_agent.v1.Signer/Sign", "/signing_agent.v1.Signer/SignBatch",
                                 "/grpc.health.v1.Health/Check"] * 4]
        try:
            t0 = time.monotonic()
            sign_latencies(stub, 50)  # the sign lane is not theirs
            assert check(agent.target) == SERVING  # at worst after the parked calls are cut
            assert time.monotonic() - t0 < 3 * PUBLIC_REQUEST_SECONDS + 5
            for call in parked:
                with pytest.raises(grpc.RpcError) as caught:
                    call.result(timeout=3 * PUBLIC_REQUEST_SECONDS + 5)
                assert caught.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
        finally:
            release.set()
    # A bot's Check is served on its own lane, with its credential.
    assert check(agent.target, bearer(TEST_BOT_TOKEN)) == SERVING
