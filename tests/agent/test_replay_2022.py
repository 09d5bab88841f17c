"""The 2022 drain, replayed against the real agent (two workers) for Binance, KuCoin and Binance USD-M.

In 2022 leaked trade-only keys were used to make victims' accounts buy an illiquid coin at inflated
prices. Here a compromised bot holds a valid credential for keys whose policy allows the thin symbol
(the operator listed it), and tries what the attackers did: many small buys of the thin symbol, a buy
30 % above the market, a thousand orders in a minute, and more notional than the budget. Each step past
the limits is refused with its rule, audited and alerted; honest orders inside them are signed
unchanged. The market is the exchanges' own public tickers, served in their recorded shapes by the
local exchange server (tests/support/tickers.py), never the internet.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter

import grpc
import pytest

from signing_agent_client._proto import signer_pb2, signer_pb2_grpc
from agent.workers import worker_socket
from support.deploy import make_env, run_cli, start_agent, write_bots
from support.leaks import new_secret, register_secret
from support.exchange_server import ExchangeServer
from support.agent_calls import Receiver
from support.tickers import Tickers

pytestmark = pytest.mark.e2e

BOT = register_secret(f"sa1_mallory_{secrets.token_urlsafe(24)}")

LIMITS = """max_notional = { "1m" = "2000", "24h" = "100000" }
max_orders_per_minute = 20
price_band_pct = "2"
min_quote_volume_24h = "1000000"
"""
POLICY = f"""
[bots.mallory]
keys = ["bn", "kc", "usdm"]

[keys.bn]
endpoints = ["GET /api/v3/account", "POST /api/v3/order", "DELETE /api/v3/order"]
symbols = ["BTCUSDT", "THINUSDT"]
{LIMITS}
[keys.kc]
endpoints = ["GET /api/v1/accounts", "POST /api/v1/hf/orders", "DELETE /api/v1/hf/orders/*"]
symbols = ["BTC-USDT", "THIN-USDT"]
{LIMITS}
[keys.usdm]
endpoints = ["GET /fapi/v2/account", "POST /fapi/v1/order", "DELETE /fapi/v1/order"]
symbols = ["BTCUSDT", "THINUSDT"]
{LIMITS}
"""

# (key, ticker market, the liquid symbol, the thin symbol)
EXCHANGES = {"bn": ("binance", "BTCUSDT", "THINUSDT"), "kc": ("kucoin", "BTC-USDT", "THIN-USDT"),
             "usdm": ("binanceusdm", "BTCUSDT", "THINUSDT")}
ORDER_PATH = {"bn": "/api/v3/order", "kc": "/api/v1/hf/orders", "usdm": "/fapi/v1/order"}


def order(key: str, symbol: str, side: str, quantity: str, price: str, n: int = 0) -> signer_pb2.SignRequest:
    msg = signer_pb2.SignRequest(key=key, method="POST", path=ORDER_PATH[key])
    if key == "kc":
        msg.raw = json.dumps({"clientOid": f"c{n}", "side": side, "symbol": symbol, "type": "limit",
                              "price": price, "size": quantity}, separators=(",", ":"))
    else:
        msg.fields.items.extend(signer_pb2.Param(name=k, value=v) for k, v in (
            ("symbol", symbol), ("side", side.upper()), ("type", "LIMIT"), ("timeInForce", "GTC"),
            ("quantity", quantity), ("price", price)))
    return msg


class Replay:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.env = make_env(tmp_path_factory, "replay")
        self.server = ExchangeServer()
        self.tickers = Tickers(self.server, "binance", "kucoin", "binanceusdm")
        for market, liquid, thin in EXCHANGES.values():
            self.tickers.set(market, liquid, price="50000", quote_volume="900000000")
            self.tickers.set(market, thin, price="0.05", quote_volume="20000")  # 20,000 USDT a day
        self.receiver = Receiver()
        write_bots(self.env.root / "bots.toml", {"mallory": BOT})
        (self.env.root / "policy.toml").write_text(POLICY)
        self.config = self.env.write_config(
            "replay", extra=f'[alerts]\nwebhook = "{self.receiver.url}"\n' + self.tickers.config())
        for key, exchange in (("bn", "binance"), ("usdm", "binanceusdm")):
            run_cli(self.env, "keys", "import", "--label", key, "--exchange", exchange, "--api-key", f"id-{key}",
                    "--type", "hmac", stdin=new_secret(64) + "\n", config=self.config, check=True)
        run_cli(self.env, "keys", "import", "--label", "kc", "--exchange", "kucoin", "--api-key", "id-kc",
                stdin=f"{new_secret(36)}\n{new_secret(12)}\n", config=self.config, check=True)
        self.agent = start_agent(self.env, self.config, "--workers", "2")
        deadline = time.monotonic() + 20
        while not worker_socket(self.agent.socket, 1).exists():
            assert time.monotonic() < deadline, "the second worker did not come up"
            time.sleep(0.05)
        self.channels = [grpc.insecure_channel(f"unix://{s}")
                         for s in (self.agent.socket, worker_socket(self.agent.socket, 1))]
        self.stubs = [signer_pb2_grpc.SignerStub(c) for c in self.channels]
        self.calls = 0

    def sign(self, msg: signer_pb2.SignRequest):
        """Alternating workers, as a round-robin client would."""
        self.calls += 1
        try:
            return grpc.StatusCode.OK, "", self.stubs[self.calls % 2].Sign(
                msg, metadata=(("authorization", f"Bearer {BOT}"),), timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details(), None

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in (self.env.root / "state" / "audit.jsonl").read_text().splitlines()]

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        assert self.agent.stop() == 0, self.agent.log.read_text()
        self.server.close()
        self.receiver.server.shutdown()


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory):
    r = Replay(tmp_path_factory)
    yield r
    r.close()


def rule_of(result) -> str:
    code, details, reply = result
    assert reply is None, "a refused request must not be signed"
    return details.split("'")[1] if details.startswith("refused by rule '") else f"<{code.name}: {details}>"


@pytest.mark.parametrize("key", ["bn", "kc", "usdm"])
def test_the_2022_pattern_is_refused_step_by_step(replay: Replay, key: str):
    market, liquid, thin = EXCHANGES[key]
    # Honest trading inside every limit: signed, with the order exactly as the bot sent it.
    code, details, signed = replay.sign(order(key, liquid, "buy", "0.01", "50500"))  # 1 % above: inside the band
    assert code == grpc.StatusCode.OK, details
    sent = signed.body or signed.path
    assert "50500" in sent and "0.01" in sent and liquid in sent
    assert replay.sign(order(key, liquid, "sell", "0.01", "49500"))[0] == grpc.StatusCode.OK

    # 1. Many small buys of the allowed but thin symbol: each one refused, however small.
    thin_rules = [rule_of(replay.sign(order(key, thin, "buy", "1000", "0.05", n))) for n in range(25)]
    assert thin_rules == ["thin-market"] * 25
    details = replay.sign(order(key, thin, "buy", "10", "0.05"))[1]
    assert f"{thin} traded 20000 in 24 h on {market}" in details and "min_quote_volume_24h of 1000000" in details

    # 2. A buy 30 % above the ticker (and a sell 30 % below it).
    details = replay.sign(order(key, liquid, "buy", "0.001", "65000"))[1]
    assert "refused by rule 'price-band'" in details and "more than 2 % above the last price 50000" in details
    assert "no higher than 51000" in details
    assert rule_of(replay.sign(order(key, liquid, "sell", "0.001", "35000"))) == "price-band"

    # 3. More notional than the 1 minute budget: 1000 signed so far, two more of 500 fit, then none.
    for _ in range(2):
        assert replay.sign(order(key, liquid, "buy", "0.01", "50000"))[0] == grpc.StatusCode.OK
    details = replay.sign(order(key, liquid, "buy", "0.01", "50000"))[1]
    assert f"key '{key}' has used 2000 of its 1m notional budget of 2000" in details

    # 4. A thousand orders in a minute: none signed (the budget is spent, then the order rate is).
    started = time.monotonic()
    flood = Counter(rule_of(replay.sign(order(key, liquid, "buy", "0.00001", "50000", n))) for n in range(1000))
    assert time.monotonic() - started < 60
    assert sum(flood.values()) == 1000 and set(flood) == {"notional-budget", "order-rate"}, flood
    assert flood["order-rate"] >= 980, flood  # 20 a minute: 16 tokens were left, plus what refilled

    # Every refusal is audited with its rule, across both workers' lines in the one chain.
    decisions = [line for line in replay.audit() if line.get("event") == "sign" and line.get("key") == key]
    refused = Counter(line["rule"] for line in decisions if line["decision"] == "refused")
    assert refused["thin-market"] == 26 and refused["price-band"] == 2
    assert refused["notional-budget"] + refused["order-rate"] == 1001
    assert sum(1 for line in decisions if line["decision"] == "signed") == 4
    # ... and alerted (the same alert at most once a second, with a count of the repeats).
    for rule in ("thin-market", "price-band", "notional-budget", "order-rate"):
        replay.receiver.wait_for(lambda a: a.get("key") == key and a.get("rule") == rule)


def test_a_dark_market_refuses_priced_orders_and_alerts(replay: Replay):
    # usdm's tickers stop answering: within stale_ms the last ticker serves, after it orders are refused.
    replay.server.fail("binanceusdm", 503, body={"code": -1001, "msg": "Internal error"}, times=10_000)
    time.sleep(1.7)  # past stale_ms (1.5 s) since the last fetch of BTCUSDT
    details = replay.sign(order("usdm", "BTCUSDT", "sell", "0.00001", "50000"))[1]
    assert "refused by rule 'thin-market'" in details and "no fresh binanceusdm ticker for BTCUSDT" in details
    assert "HTTP 503" in details
    replay.receiver.wait_for(lambda a: a["kind"] == "ticker-stale" and a.get("symbol") == "BTCUSDT")
    # The other markets are not affected.
    assert replay.sign(order("bn", "BTCUSDT", "sell", "0.00001", "50000"))[0] != grpc.StatusCode.UNAVAILABLE
