"""The HTTP client Send uses: urllib3, one connection pool per exchange host, TLS always verified.

Why urllib3: the agent's gRPC server is synchronous, one thread per call, so a synchronous,
thread-safe client fits without an event loop beside it; urllib3 is maintained, already in the lock
(through requests), keeps a pool per (scheme, host, port), tunnels HTTPS through a proxy with
CONNECT and verifies TLS end to end. Measured (bench/http_clients.py: local HTTPS, keep-alive, 2000
requests, 2 cores, the server in the same process), p50 per request:

    client                   one thread    8 threads (p99)     requests/s at 8 threads
    urllib3                  0.30 ms       2.6-4.1 ms (7-11)   1700-2700
    aiohttp via a loop thread 0.33 ms      2.1-2.2 ms (6-9)    3100-3400
    httpx 0.29 (HTTP/1.1)    0.50 ms       4.8 ms (17)         1400

One thread is the agent's case per Send: urllib3 is as fast as aiohttp and faster than httpx. Under
8 threads aiohttp does more per second (one loop, less GIL contention), a millisecond that an
exchange's network round trip (tens of milliseconds) hides, for an event loop and a thread hop in a
threaded server. HTTP/2 (httpx with h2) was not measured (no HTTP/2 server offline): it would let many
requests share one connection, which the few Send threads per exchange do not need; it would add
httpx, httpcore, h11, anyio, h2, hpack and hyperframe to the lock.

What a failure means for the request is the point of this module: a request whose connection never
opened was not sent (safe to send again); one whose answer did not come back may have been acted on
(an order must not be sent again blindly). `SendFailure.sent` says which.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

# What a gRPC answer may carry (the client's default receive limit is 4 MiB), less room for the rest.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024 - 64 * 1024
# Headers of the connection, not of the answer; and cookies, which are the agent's session, not the bot's.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "set-cookie", "proxy-connection"})
USER_AGENT = "signing-agent"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class SendSettings:
    """[send] of signing-agent.toml (agent.config)."""

    ca_file: Path | None = None  # trust these CAs instead of the system store (a test CA)
    proxy: str | None = None  # http://host:port: HTTPS goes through it with CONNECT, verified end to end
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 15.0  # one attempt, from the first byte out to the last byte in
    pool_per_host: int = 8


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    elapsed_ms: float

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)


class SendFailure(Exception):
    """No answer from the exchange. KIND: unreachable | tls | timeout | lost | too-large.
    SENT: False when the request cannot have reached the exchange, True when it may have."""

    def __init__(self, kind: str, sent: bool, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.sent, self.detail = kind, sent, detail


class Transport:
    def __init__(self, settings: SendSettings) -> None:
        self.settings = settings
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        timeout = urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s,
                                  total=settings.total_timeout_s)
        common = dict(num_pools=64, maxsize=settings.pool_per_host, block=False, ssl_context=context,
                      timeout=timeout, retries=False)
        # No retries and no redirects here: whether a request may go again is the sender's decision.
        self._pool = (urllib3.ProxyManager(settings.proxy, **common) if settings.proxy
                      else urllib3.PoolManager(**common))

    def request(self, method: str, url: str, headers: tuple[tuple[str, str], ...], body: bytes) -> Answer:
        started = time.monotonic()
        deadline = started + self.settings.total_timeout_s
        sent_headers = {"User-Agent": USER_AGENT, **dict(headers)}
        try:
            response = self._pool.request(method, url, body=body or None, headers=sent_headers,
                                          preload_content=False, redirect=False, retries=False)
        except MaxRetryError as exc:  # what urllib3 wraps some errors in, even with retries off
            raise _failure(exc.reason or exc, url) from None
        except HTTPError as exc:
            raise _failure(exc, url) from None
        try:
            chunks, size = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise SendFailure("timeout", True, f"{_host(url)} sent its answer too slowly "
                                      f"(over {self.settings.total_timeout_s:g} s)")
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise SendFailure("too-large", True, f"{_host(url)} answered with more than "
                                      f"{MAX_RESPONSE_BYTES} bytes, more than a Send answer may carry")
                chunks.append(chunk)
        except SendFailure:
            response.close()  # never reuse a half-read connection
            raise
        except HTTPError as exc:
            response.close()
            raise _failure(exc, url, answering=True) from None
        response.release_conn()
        kept = tuple((n, v) for n, v in response.headers.items() if n.lower() not in _HOP_HEADERS)
        return Answer(status=response.status, headers=kept, body=b"".join(chunks),
                      elapsed_ms=round((time.monotonic() - started) * 1000, 3))

    def close(self) -> None:
        self._pool.clear()


def _host(url: str) -> str:
    return urllib3.util.parse_url(url).netloc or url


def _failure(exc: BaseException, url: str, *, answering: bool = False) -> SendFailure:
    """What EXC means for the request (was it sent?), with a message an operator can act on. No URL
    query is shown: it may hold a signature (HTX)."""
    host = _host(url)
    if isinstance(exc, ConnectTimeoutError):
        return SendFailure("unreachable", False, f"cannot connect to {host}: no answer to the connection in time")
    if isinstance(exc, (NameResolutionError,)):
        return SendFailure("unreachable", False, f"cannot resolve {host}: check the agent host's DNS")
    if isinstance(exc, ProxyError):
        return SendFailure("unreachable", False, f"the outbound proxy did not connect to {host}: check [send] proxy")
    if isinstance(exc, SSLError):
        return SendFailure("tls", False, f"TLS with {host} failed ({_reason(exc)}): the certificate is not trusted "
                                         "by the system store (or [send] ca_file), or does not name the host")
    if isinstance(exc, NewConnectionError):
        return SendFailure("unreachable", False, f"cannot connect to {host} ({_reason(exc)})")
    if isinstance(exc, ReadTimeoutError):
        return SendFailure("timeout", True, f"{host} did not answer in time")
    if isinstance(exc, ProtocolError) or answering:
        return SendFailure("lost", True, f"the connection to {host} broke before the answer was complete")
    return SendFailure("lost", True, f"the request to {host} failed ({type(exc).__name__})")


def _reason(exc: BaseException) -> str:
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    text = str(getattr(inner, "reason", None) or inner)
    return text.split(":", 1)[-1].strip()[:160] or type(inner).__name__
