"""What a ccxt bot sends (its fetch intercepted, its clock pinned), a free loopback port, and a
Prometheus scrape: helpers of the agent layer (tests/agent)."""

from __future__ import annotations

import socket
import urllib.request

import pytest

# Headers ccxt adds that no signature covers (exchange-signing.md 0.7); the agent does not produce them.
DECORATIVE = {"referer", "x-referer", "source", "x-channel-api-code"}


class Captured(Exception):
    def __init__(self, url, method, headers, body):
        super().__init__("captured")
        self.request = {"url": url, "method": method, "headers": dict(headers or {}), "body": body or None}


def capture(exchange, now_ms: int):
    exchange.milliseconds = lambda: now_ms
    exchange.seconds = lambda: now_ms // 1000
    exchange.microseconds = lambda: now_ms * 1000

    def fetch(url, method="GET", headers=None, body=None):
        raise Captured(url, method, headers, body)

    exchange.fetch = fetch
    return exchange


def sent(exchange, api, path, method, params) -> dict:
    with pytest.raises(Captured) as caught:
        exchange.request(path, api if isinstance(api, list) else [api], method, dict(params))
    request = caught.value.request
    request["headers"] = {k: v for k, v in request["headers"].items()
                          if k.lower() not in DECORATIVE and not k.startswith("KC-API-PARTNER")}
    return request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
