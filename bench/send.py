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
audit line of the answer).

Would a batch form of Send (SendBatch, or a stream) win? A burst of K orders (--burst, default 8: the
agent's kept-alive connections per exchange host), ROUNDS times, timed from the first call to the last
answer:

    sends        K Send calls at once from K bot threads (one channel): what a bot does today
    sequential   K Send calls one after the other (a bot that does not overlap them)
    batch_floor  SignBatch of the K orders, then the K signed orders sent at once by this process: the
                 best a SendBatch could do (one RPC for the agent's part, the exchange legs in parallel)

batch_gain = sends p50 / batch_floor p50: above 1 is what a batch RPC could save over concurrent Sends.
Results in OUT/send.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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


def _bursts(k: int, rounds: int, send, *, exchange_signed, sign_batch) -> dict[str, list[float]]:
    """Wall times (ms) of ROUNDS bursts of K orders each way (the module docstring)."""
    pool = ThreadPoolExecutor(max_workers=k)

    def at_once(calls) -> None:
        for done in [pool.submit(call) for call in calls]:
            done.result()

    def sends() -> None:
        at_once([send] * k)

    def sequential() -> None:
        for _ in range(k):
            send()

    def batch_floor() -> None:
        signed = sign_batch(k)
        at_once([lambda s=s: exchange_signed(s) for s in signed])

    try:
        for call in (sends, sequential, batch_floor):  # every connection of the pools open
            _timed(call, 5)
        return {name: _timed(call, rounds) for name, call in
                (("sends", sends), ("sequential", sequential), ("batch_floor", batch_floor))}
    finally:
        pool.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--burst", type=int, default=8, help="orders per burst (batch comparison)")
    parser.add_argument("--rounds", type=int, default=100, help="bursts timed (batch comparison)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))  # the local exchange and its reference credential are the tests'
    from support.exchange_server import ExchangeServer, TestCA, binance_spot
    from support.reference import hmac_credential

    from agent.send.transport import SendSettings, Transport
    from signing_agent_client import SignerClient, sign_request

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
                bursts = _bursts(args.burst, args.rounds, send, exchange_signed=lambda s: transport.request(
                    "POST", url + s.path, s.headers, s.body.encode()), sign_batch=lambda k: client.sign_batch(
                    [sign_request("bench-send", "POST", "/api/v3/order", body=ORDER) for _ in range(k)]))
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
    summary["burst"] = {"orders": args.burst, "rounds": args.rounds, **{
        name: {"p50_ms": round(statistics.median(v), 3), "p90_ms": _p(v, 90)} for name, v in bursts.items()}}
    summary["burst"]["batch_gain"] = round(summary["burst"]["sends"]["p50_ms"]
                                           / summary["burst"]["batch_floor"]["p50_ms"], 3)
    summary["signatures_rejected_by_the_exchange"] = rejected
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "send.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name in ("sign", "exchange", "send"):
        s = summary[name]
        print(f"{name:9} p50 {s['p50_ms']:7.3f} ms  p90 {s['p90_ms']:7.3f}  p99 {s['p99_ms']:7.3f}")
    print(f"send p50 / (sign p50 + exchange p50) = {summary['ratio_send_over_sign_plus_exchange']} "
          f"({args.requests} requests each; signatures the exchange rejected: {rejected})")
    b = summary["burst"]
    for name in ("sends", "sequential", "batch_floor"):
        print(f"burst of {args.burst}: {name:11} p50 {b[name]['p50_ms']:7.3f} ms  p90 {b[name]['p90_ms']:7.3f}")
    print(f"a batch form could save: sends p50 / batch_floor p50 = {b['batch_gain']} ({args.rounds} bursts)")
    return 1 if rejected else 0


if __name__ == "__main__":
    sys.exit(main())
