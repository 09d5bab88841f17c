"""What every benchmark case shares: the request signed, the bytes MACed, and the statistics."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from signing_agent_client._proto import signer_pb2

EXCHANGE = "binance"
# A typical order: every case MACs the bytes the agent MACs for it (see signing_input).
ORDER = (
    ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
    ("quantity", "0.00100000"), ("price", "50000.00"),
)
FIXED_NOW_MS = 1_763_750_000_000
SIGN_METHOD = "/signing_agent.v1.Signer/Sign"
BATCH_METHOD = "/signing_agent.v1.Signer/SignBatch"
STREAM_METHOD = "/signing_agent.v1.Signer/SignStream"


def sign_request(label: str) -> signer_pb2.SignRequest:
    msg = signer_pb2.SignRequest(key=label, method="POST", path="/api/v3/order")
    msg.fields.items.extend(signer_pb2.Param(name=n, value=v) for n, v in ORDER)
    return msg


class _Recorder:
    """A credential that records what the scheme MACs (no key involved)."""

    api_key = "bench-api-key-0123456789abcdef0123456789abcdef0123456789abcdef"
    key_type = "hmac"
    passphrase = None

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def option(self, name: str) -> str | None:
        return None

    def mac(self, message: bytes, hash_name: str) -> bytes:
        self.messages.append(message)
        return bytes(32)

    def sign(self, message: bytes) -> bytes:
        raise AssertionError("HMAC keys only")

    def nonce(self, floor: int) -> int:
        return floor


def signing_input() -> bytes:
    """The exact bytes the agent MACs for ORDER (Binance scheme, fixed clock)."""
    from agent.exchanges import scheme_for
    from agent.schemes import Environment, UnsignedRequest

    recorder = _Recorder()
    request = UnsignedRequest(method="POST", path="/api/v3/order", query=(), body=ORDER)
    scheme_for(EXCHANGE).sign(request, recorder, Environment(now_ms=FIXED_NOW_MS, random_bytes=lambda n: bytes(n)))
    (message,) = recorder.messages
    return message


def signed_response_like_the_agent() -> signer_pb2.SignedRequest:
    """A response the size and shape of the agent's, for the echo service to return."""
    from agent.exchanges import scheme_for
    from agent.schemes import Environment, UnsignedRequest

    request = UnsignedRequest(method="POST", path="/api/v3/order", query=(), body=ORDER)
    signed = scheme_for(EXCHANGE).sign(request, _Recorder(),
                                       Environment(now_ms=FIXED_NOW_MS, random_bytes=lambda n: bytes(n)))
    return signer_pb2.SignedRequest(
        method=signed.method, path=signed.path, body=signed.body,
        headers=[signer_pb2.Header(name=n, value=v) for n, v in signed.headers],
    )


# -- samples and statistics ---------------------------------------------------------------


@dataclass
class Samples:
    """Latencies (µs) of one case, and how many items (signatures, MACs) were done in WALL seconds."""

    name: str
    latencies_us: list[float] = field(default_factory=list)
    items: int = 0
    wall_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_us)
        out: dict[str, Any] = {"name": self.name, "calls": int(lat.size), "items": self.items,
                               "wall_s": round(self.wall_s, 3), **self.meta}
        if lat.size:
            out.update({
                "p50_us": round(float(np.percentile(lat, 50)), 1),
                "p90_us": round(float(np.percentile(lat, 90)), 1),
                "p99_us": round(float(np.percentile(lat, 99)), 1),
                "mean_us": round(float(lat.mean()), 1),
            })
        out["items_per_s"] = round(self.items / self.wall_s, 1) if self.wall_s else None
        return out


def timed_loop(call: Any, *, warmup: int, duration: float, start_at: float | None = None,
               max_samples: int = 200_000) -> tuple[list[float], int, float]:
    """Run CALL() WARMUP times, then (from START_AT, a time.time() instant) for DURATION seconds.

    Returns (latencies in µs, calls made, wall seconds). Each call is timed on its own.
    """
    for _ in range(warmup):
        call()
    if start_at is not None:
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
    lat: list[float] = []
    clock = time.perf_counter_ns
    begin = clock()
    end = begin + int(duration * 1e9)
    calls = 0
    now = begin
    while now < end:
        t0 = clock()
        call()
        now = clock()
        if len(lat) < max_samples:
            lat.append((now - t0) / 1000)
        calls += 1
    return lat, calls, (now - begin) / 1e9


def emit(result: dict[str, Any]) -> None:
    """A probe's answer to the orchestrator: one JSON document on stdout."""
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
