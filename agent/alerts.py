"""Webhook alerts: refusals, unusual bursts and other events an operator must see now.

`AlertSender.alert(kind, **fields)` logs the alert (event "alert", level warning)
and, when a webhook URL is configured, queues a JSON POST::

    {"kind": "policy.refused", "ts": "2025-11-21T20:01:02.123Z", "label": "binance-main", ...}

`alert()` never blocks and never raises: the signing path calls it. A daemon
thread delivers the queue over one keep-alive connection (`http.client`,
http or https with certificate verification), retrying connection errors,
5xx and 429 with exponential backoff and jitter (honouring Retry-After, both
capped at 30 s), up to `max_attempts` in all. Other statuses (4xx, 3xx:
redirects are not followed) are not retried. A full queue drops its OLDEST
alert. Every drop is counted and logged as "alert.dropped" with its reason.
Delivery is at least once: a POST whose reply was lost is sent again.

Fields: what may be logged may be alerted (labels, exchange, method, path
without query, symbol, rule, counts), never a secret, passphrase, PIN,
signature or signed query. Keep them small: a body over 16 KiB is replaced by
{"kind", "ts", "truncated": true}. Field names "kind", "ts" and "event" are
the sender's own and are left out.

The URL: use https, or http to a loopback address (a local relay). Plain http
to another host is accepted but logged as "alert.insecure_url" at start: the
alerts, and any token in the URL, cross the network in clear. Webhook URLs
often carry their token in the path (Slack, Teams...), so the sender never
logs the URL's path or query, only its host. Create senders after forking
worker processes: the delivery thread does not survive a fork.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agent.logs import get_logger

MAX_BACKOFF = 30.0  # seconds, for computed delays and Retry-After alike
MAX_BODY = 16 * 1024
_MAX_REPLY = 64 * 1024  # bytes of a reply read (and discarded) so that the connection can be reused
_OWN_FIELDS = frozenset({"kind", "ts", "event"})
_LOOPBACK = ("localhost", "::1")


@dataclass(frozen=True)
class AlertStats:
    sent: int  # delivered (2xx)
    retried: int  # attempts after a failed one
    dropped: int  # given up, refused by the receiver, pushed out of a full queue, or left at close
    queued: int  # waiting now


def _utc_now() -> str:
    t = time.time()
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1000):03d}Z"


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK or host.startswith("127.")


def _parse_url(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, request target) of a webhook URL, or ValueError saying what is wrong.

    Messages never repeat the URL: its path or query may hold the webhook's token.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("alert webhook URL is empty")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("alert webhook URL contains spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        got = f"scheme '{scheme}'" if scheme else "no scheme"
        raise ValueError(f"alert webhook URL must start with https:// (or http:// to a loopback address); got {got}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("alert webhook URL must not carry credentials (user:password@host); "
                         "put the receiver's token in the path or query")
    if not parts.hostname:
        raise ValueError("alert webhook URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("alert webhook URL has an invalid port (1-65535)") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname, port, target


def _body(kind: str, ts: str, fields: dict[str, Any]) -> bytes:
    def clean(v: Any) -> Any:
        return str(v) if isinstance(v, float) and not math.isfinite(v) else v  # NaN is not JSON

    payload = {"kind": kind, "ts": ts, **{k: clean(v) for k, v in fields.items()}}
    try:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False)
    except (TypeError, ValueError):  # nested NaN, circular lists: every field as text
        body = json.dumps({"kind": kind, "ts": ts, **{k: str(v) for k, v in fields.items()}}, ensure_ascii=False)
    data = body.encode("utf-8", "replace")
    if len(data) > MAX_BODY:
        data = json.dumps({"kind": kind, "ts": ts, "truncated": True}, ensure_ascii=False).encode("utf-8", "replace")
    return data


class AlertSender:
    def __init__(self, url: str | None, *, timeout: float = 2.0, max_queue: int = 1000, max_attempts: int = 5,
                 backoff: float = 0.5, log: Any = None) -> None:
        if not timeout > 0 or max_queue < 1 or max_attempts < 1 or not backoff >= 0:
            raise ValueError("alert sender needs timeout > 0, max_queue >= 1, max_attempts >= 1 and backoff >= 0")
        self._log = log if log is not None else get_logger()
        self._timeout, self._max_queue, self._max_attempts, self._backoff = timeout, max_queue, max_attempts, backoff
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._sent = self._retried = self._dropped = 0
        self._closing = False
        self._abort = threading.Event()  # close() timed out: stop retrying, drop the rest
        self._conn: http.client.HTTPConnection | None = None
        self._thread: threading.Thread | None = None
        self._url, self._where = url, ""
        if url is None:
            return
        self._scheme, host, self._port, self._target = _parse_url(url)
        self._host = host
        self._where = f"{host}:{self._port}" if self._port else host  # for logs: never the path or query
        self._ssl = ssl.create_default_context() if self._scheme == "https" else None
        self._headers = {"Content-Type": "application/json", "User-Agent": "signing-agent-alerts/1"}
        if self._scheme == "http" and not _is_loopback(host):
            self._log.warning("alert.insecure_url", host=self._where,
                              hint="alerts go in clear text: use https, or http to a loopback address")
        self._thread = threading.Thread(target=self._run, name="alert-sender", daemon=True)
        self._thread.start()

    # -- the caller's side: never blocks, never raises ----------------------------------

    def alert(self, kind: str, /, **fields: Any) -> None:
        try:
            extra = {k: v for k, v in fields.items() if k not in _OWN_FIELDS}
            self._log.warning("alert", kind=kind, **extra)
            if self._url is None:
                return
            item = (str(kind), _body(str(kind), _utc_now(), extra))
            pushed_out: str | None = None
            with self._cond:
                closed = self._closing
                if closed:
                    self._dropped += 1
                else:
                    if len(self._queue) >= self._max_queue:
                        pushed_out = self._queue.popleft()[0]
                        self._dropped += 1
                    self._queue.append(item)
                    self._cond.notify()
            if closed:
                self._log.warning("alert.dropped", kind=kind, reason="the alert sender is closed", host=self._where)
            elif pushed_out is not None:
                self._log.warning("alert.dropped", kind=pushed_out, reason="queue full: the oldest alert was dropped",
                                  max_queue=self._max_queue, host=self._where)
        except Exception as e:  # an alert must never break the request that raised it
            try:
                self._log.error("alert.failed", kind=str(kind), error=type(e).__name__)
            except Exception:
                pass

    def stats(self) -> AlertStats:
        with self._cond:
            return AlertStats(self._sent, self._retried, self._dropped, len(self._queue))

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what can be delivered within TIMEOUT seconds; drop (count, log) the rest."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is None:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()  # the alert in flight is dropped after its current attempt
            with self._cond:
                left = len(self._queue)
                self._queue.clear()
                self._dropped += left
            if left:
                self._log.warning("alert.dropped", reason="not delivered before close", count=left, host=self._where)

    # -- the delivery thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if not self._queue:
                        return
                    kind, body = self._queue.popleft()
                self._deliver(kind, body)
        finally:
            self._close_conn()

    def _deliver(self, kind: str, body: bytes) -> None:
        last = ""
        for attempt in range(1, self._max_attempts + 1):
            if self._abort.is_set():
                return self._drop(kind, "not delivered before close", attempt - 1)
            retry_after = None
            try:
                status, retry_after = self._post(body)
            except Exception as e:  # connection refused or reset, timeout, TLS failure...
                last = f"{type(e).__name__}: {str(e)[:200]}"
            else:
                if 200 <= status < 300:
                    with self._cond:
                        self._sent += 1
                    return None
                last = f"HTTP {status}"
                if status != 429 and status < 500:
                    return self._drop(kind, f"refused by the receiver ({last}); not retried", attempt)
            if attempt == self._max_attempts:
                break
            with self._cond:
                self._retried += 1
            delay = min(self._backoff * 2 ** (attempt - 1), MAX_BACKOFF) * (0.5 + random.random() / 2)
            if retry_after is not None:
                delay = max(delay, min(retry_after, MAX_BACKOFF))
            if self._abort.wait(delay):
                return self._drop(kind, "not delivered before close", attempt)
        return self._drop(kind, f"gave up after {self._max_attempts} attempts (last: {last})", self._max_attempts)

    def _drop(self, kind: str, reason: str, attempts: int) -> None:
        with self._cond:
            self._dropped += 1
        self._log.warning("alert.dropped", kind=kind, reason=reason, attempts=attempts, host=self._where)

    def _post(self, body: bytes) -> tuple[int, float | None]:
        reused = self._conn is not None
        try:
            return self._exchange(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
        # The receiver closed the idle keep-alive connection: once more, on a new one.
        return self._exchange(body)

    def _exchange(self, body: bytes) -> tuple[int, float | None]:
        if self._conn is None:
            if self._ssl is not None:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            self._conn.request("POST", self._target, body=body, headers=self._headers)
            reply = self._conn.getresponse()
            reply.read(_MAX_REPLY)
            retry_after = reply.getheader("Retry-After")
            if not reply.isclosed():  # a reply too long to drain: do not reuse the connection
                self._close_conn()
        except BaseException:
            self._close_conn()
            raise
        try:
            wait = float(retry_after) if retry_after is not None else None
        except ValueError:  # an HTTP date: not worth parsing, the backoff applies
            wait = None
        return reply.status, (wait if wait is not None and math.isfinite(wait) and wait >= 0 else None)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
