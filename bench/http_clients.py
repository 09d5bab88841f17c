"""Which HTTP client Send uses: urllib3, aiohttp and httpx against one local HTTPS server, as the agent
would call them (issue 20 asks for the choice to be measured, not assumed).

    .venv/bin/python bench/http_clients.py [--requests 2000] [--threads 8]

The agent's gRPC server is synchronous: each Send runs on a thread of its own. So each client is
called from threads: urllib3's PoolManager and httpx.Client shared by the threads, aiohttp through
one event loop in a thread of its own (run_coroutine_threadsafe: the hop an asyncio client costs a
threaded server). The server is HTTP/1.1 with keep-alive over TLS, answering a small JSON body (an
order acknowledgement's size); latency is per request, seen from the calling thread.

httpx is not in the lock: run this with a Python where it is installed to include it (it is skipped
otherwise). HTTP/2 is not measured: there is no HTTP/2 server in the standard library, and offline
nothing else to test against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BODY = json.dumps({"symbol": "BTCUSDT", "orderId": 28, "clientOrderId": "x" * 32, "status": "NEW",
                   "price": "50000.00", "origQty": "0.001", "executedQty": "0", "fills": []}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def _serve(ca) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.socket = ca.context("127.0.0.1").wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"https://127.0.0.1:{server.server_address[1]}/api/v3/order"


def _urllib3(ca: Path, threads: int):
    import urllib3

    pool = urllib3.PoolManager(maxsize=threads, ssl_context=ssl.create_default_context(cafile=str(ca)), retries=False)

    def call(url: str) -> int:
        return len(pool.request("POST", url, body=b"symbol=BTCUSDT&quantity=0.001").data)

    return call, pool.clear


def _httpx(ca: Path, threads: int, http2: bool = False):
    import httpx

    client = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), http2=http2,
                          limits=httpx.Limits(max_connections=threads))

    def call(url: str) -> int:
        return len(client.post(url, content=b"symbol=BTCUSDT&quantity=0.001").content)

    return call, client.close


def _aiohttp(ca: Path, threads: int):
    import aiohttp

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=threads, ssl=ssl.create_default_context(cafile=str(ca))))

    session = asyncio.run_coroutine_threadsafe(make(), loop).result()

    async def post(url: str) -> int:
        async with session.post(url, data=b"symbol=BTCUSDT&quantity=0.001") as response:
            return len(await response.read())

    def call(url: str) -> int:
        return asyncio.run_coroutine_threadsafe(post(url), loop).result()

    def close() -> None:
        asyncio.run_coroutine_threadsafe(session.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)

    return call, close


def _measure(call, url: str, requests: int, threads: int) -> dict[str, float]:
    for _ in range(50):  # connections opened, TLS handshakes done
        call(url)

    def one(_: int) -> float:
        started = time.perf_counter()
        assert call(url) == len(BODY)
        return (time.perf_counter() - started) * 1000

    sequential = [one(i) for i in range(requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        concurrent = list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    q = statistics.quantiles
    return {"seq_p50_ms": statistics.median(sequential), "seq_p99_ms": q(sequential, n=100)[98],
            f"x{threads}_p50_ms": statistics.median(concurrent), f"x{threads}_p99_ms": q(concurrent, n=100)[98],
            f"x{threads}_per_s": requests / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.exchange_server import TestCA  # the tests' throw-away CA: a certificate for 127.0.0.1

    with tempfile.TemporaryDirectory() as tmp:
        ca = TestCA(Path(tmp))
        server, url = _serve(ca)
        clients = {"urllib3": _urllib3, "aiohttp (loop thread)": _aiohttp, "httpx (HTTP/1.1)": _httpx}
        for name, make in clients.items():
            try:
                call, close = make(ca.ca_file, args.threads)
            except ImportError:
                print(f"{name:24} not installed: skipped")
                continue
            result = _measure(call, url, args.requests, args.threads)
            close()
            print(f"{name:24} " + "  ".join(f"{k} {v:8.3f}" for k, v in result.items()), flush=True)
        server.shutdown()


if __name__ == "__main__":
    main()
