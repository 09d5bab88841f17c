"""What the guardrails over time cost on the hot path: `python -m bench.guardrails` (about 20 s).

Times `Guardrails.check` (agent/guardrails.py) in-process for one Binance limit order, after the
rules (agent.policy.evaluate, timed alongside for scale), in three policies:

    none      a key without guardrails (the check is a freeze lookup)
    market    price band, volume floor and order rates (the ticker cached, as on the hot path)
    all       the above and max_notional with three windows (a line appended to the budget journal)

first with the state dir in /dev/shm, like the bench's tokens (where an fdatasync costs nothing), then
`all` again with the state dir on the checkout's own disk, with `[state] sync_budgets` on (the
default: each charge fdatasync'd before the order is signed) and off. The ticker comes from a local
HTTP server answering Binance's shape once (then cached); the order rate and budgets are set high
enough never to refuse. Compare with the README's unary Sign p50 (Performance).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from agent.budgets import Ledgers
from agent.exchanges import exchange_for
from agent.guardrails import Guardrails
from agent.market import MarketSettings
from agent.policy import evaluate, parse_policy
from agent.rates import SharedBuckets
from signing_agent_client.request import UnsignedRequest

MARKET = """max_orders_per_minute = 100000
max_orders_per_minute_per_symbol = { "*" = 100000 }
price_band_pct = "2"
min_quote_volume_24h = "1000000"
"""
POLICY = f"""
[bots.b]
keys = ["none", "market", "all"]
[keys.none]
endpoints = ["POST /api/v3/order"]
[keys.market]
endpoints = ["POST /api/v3/order"]
{MARKET}
[keys.all]
endpoints = ["POST /api/v3/order"]
{MARKET}
max_notional = {{ "1m" = "1000000000000", "1h" = "1000000000000", "24h" = "1000000000000" }}
""".encode()
ORDER = (("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "0.01"),
         ("price", "50000"))


class _Ticker(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"symbol": "BTCUSDT", "lastPrice": "50000", "quoteVolume": "900000000"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main(calls: int = 5000) -> dict[str, float]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ticker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    results: dict[str, float] = {}
    disk = Path(__file__).resolve().parents[1]  # the checkout's file system: a state dir's usual home
    runs = (("/dev/shm", True, ("none", "market", "all"), ""),
            (str(disk), True, ("all",), "disk_sync_"), (str(disk), False, ("all",), "disk_nosync_"))
    try:
        for root, sync, labels, prefix in runs:
            results.update(_run(server.server_port, Path(root), sync, labels, prefix, calls))
    finally:
        server.shutdown()
    return results


def _run(port: int, root: Path, sync: bool, labels: tuple[str, ...], prefix: str, calls: int) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix=".bench-guardrails-", dir=root))
    policy = parse_policy(POLICY)
    exchange = exchange_for("binance")
    request = UnsignedRequest("POST", "/api/v3/order", body=ORDER).validated()
    guard = Guardrails(state, buckets=SharedBuckets(state / "rates.bin"), ledgers=Ledgers(state, sync=sync),
                       market=MarketSettings(ttl=3600, urls={"binance": f"http://127.0.0.1:{port}"}))
    now_ms = int(time.time() * 1000)
    results: dict[str, float] = {}
    try:
        for label in labels:
            key = policy.keys[label]

            def rules():
                return evaluate(key, exchange, request, created="2026-12-01T00:00:00Z", timestamp_ms=0, now_ms=now_ms)

            verdict = rules()
            assert verdict.refusal is None, verdict.refusal
            for _ in range(200):  # warm up (and fetch the ticker once)
                guard.check(bot=policy.bots["b"], bot_name="b", key_policy=key, exchange=exchange, verdict=verdict,
                            now=time.time())
            started = time.perf_counter()
            for _ in range(calls):
                rules()
            results["rules_us"] = (time.perf_counter() - started) / calls * 1e6
            started = time.perf_counter()
            for _ in range(calls):
                guard.check(bot=policy.bots["b"], bot_name="b", key_policy=key, exchange=exchange, verdict=verdict,
                            now=time.time())
            results[f"{prefix}{label}_us"] = (time.perf_counter() - started) / calls * 1e6
    finally:
        guard.close()
        shutil.rmtree(state)
    return results


if __name__ == "__main__":
    found = main()
    print(json.dumps({k: round(v, 1) for k, v in found.items()}))
    for label in ("none", "market", "all", "disk_sync_all", "disk_nosync_all"):
        print(f"guardrails ({label}): {found[label + '_us']:.1f} us per order; the rules: {found['rules_us']:.1f} us")
