"""Send mode's cost beside sign mode: the agent's extra hop, as a ratio (run by `make bench`).

    python -m bench.send [--requests 500] [--out bench/results]

One agent on a fresh SoftHSM2 token, one Binance key with delivery "both", and the local exchange
(tests/support/exchange_server.py, over HTTPS with a throw-away CA the agent trusts: it verifies every
signature as Binance would). The same order, N times each, from one bot thread:

    sign      Sign: the agent decides and signs; the bot gets the request (not sent anywhere)
    exchange  the local exchange's own round trip for that signed order, sent by this process
              (urllib3, kept-alive TLS connection: what the agent's transport does)
    send      Send: the agent decides, signs, places the order on the local exchange, answers

ratio = send p50 / (sign p50 + exchange p50): 1.0 means Send costs what a bot signing and sending
itself would pay; above 1.0 is the hop's own cost (a second process boundary for the answer, the
audit line of the answer). Results in OUT/send.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.deploy import API_KEY, ROOT, AgentProcess, Deployment, new_secret

ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
         "price": "50000"}


def _p(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 3)


def _timed(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))  # the local exchange and its reference credential are the tests'
    from support.exchange_server import ExchangeServer, TestCA, binance_spot
    from support.reference import hmac_credential

    from agent.send.transport import SendSettings, Transport
    from signing_agent_client import SignerClient

    with tempfile.TemporaryDirectory(prefix="bench-send-") as tmp:
        d = Deployment.create(Path(tmp), "send")
        secret = new_secret()
        d.cli("keys", "import", "--label", "bench-send", "--exchange", "binance", "--api-key", API_KEY, "--type",
              "hmac", stdin=secret + "\n")
        ca = TestCA(d.root)
        server = ExchangeServer(tls=ca)
        url = server.add(binance_spot(), hmac_credential("binance", API_KEY, secret))
        (d.root / "policy.toml").write_text(
            '[bots.bench]\nkeys = ["*"]\n\n[keys.bench-send]\nendpoints = ["POST /api/v3/order"]\n'
            f'symbols = ["BTCUSDT"]\ndelivery = "both"\nsend_to = "{url}"\n')
        with d.config.open("a") as config:
            config.write(f'[send]\nca_file = "{ca.ca_file}"\n')
        agent = AgentProcess(d).start()
        transport = Transport(SendSettings(ca_file=ca.ca_file))
        try:
            with SignerClient(agent.unix_target, token_file=d.bearer_file) as client:
                def sign():
                    return client.sign("bench-send", "POST", "/api/v3/order", body=ORDER)

                signed = sign()

                def exchange():
                    answer = transport.request("POST", url + signed.path, signed.headers, signed.body.encode())
                    assert answer.status == 200

                def send():
                    assert client.send("bench-send", "POST", "/api/v3/order", body=ORDER).status == 200

                for call in (sign, exchange, send):  # connections open, caches warm
                    _timed(call, 20)
                results = {name: _timed(call, args.requests) for name, call in
                           (("sign", sign), ("exchange", exchange), ("send", send))}
        finally:
            transport.close()
            agent.stop()
            server.close()
        rejected = len(server.rejected())
    summary = {name: {"p50_ms": round(statistics.median(v), 3), "p90_ms": _p(v, 90), "p99_ms": _p(v, 99)}
               for name, v in results.items()}
    floor = summary["sign"]["p50_ms"] + summary["exchange"]["p50_ms"]
    summary["ratio_send_over_sign_plus_exchange"] = round(summary["send"]["p50_ms"] / floor, 3)
    summary["requests"] = args.requests
    summary["signatures_rejected_by_the_exchange"] = rejected
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "send.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name in ("sign", "exchange", "send"):
        s = summary[name]
        print(f"{name:9} p50 {s['p50_ms']:7.3f} ms  p90 {s['p90_ms']:7.3f}  p99 {s['p99_ms']:7.3f}")
    print(f"send p50 / (sign p50 + exchange p50) = {summary['ratio_send_over_sign_plus_exchange']} "
          f"({args.requests} requests each; signatures the exchange rejected: {rejected})")
    return 1 if rejected else 0


if __name__ == "__main__":
    sys.exit(main())
