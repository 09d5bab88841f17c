"""Guardrails, adversarially, against the real agent process: who may sign what.

One deployment with two bots (alice, bob), a strict policy, a webhook receiver on loopback
and the audit log. Each attack is refused with the right status and the rule named, nothing
is signed (no reply, and the audit line says refused), and the alert arrives.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import grpc
import pytest

from signing_agent_client._proto import signer_pb2
from support.deploy import Env, make_env, run_cli, start_agent, write_bots
from support.agent_calls import Receiver, read_audit, refused, sign_at
from support.leaks import new_secret, register_secret

ALICE = register_secret(f"sa1_alice_{secrets.token_urlsafe(24)}")
BOB = register_secret(f"sa1_bob_{secrets.token_urlsafe(24)}")

POLICY = """
[defaults]
timestamp_skew_ms = 5000

[bots.alice]
keys = ["bn-alice", "bn-expired", "bn-later", "bn-rate", "bn-revoked", "bybit-alice", "mexc-alice", "htx-alice"]
rate_per_second = 1000

[bots.bob]
keys = ["bn-bob"]
rate_per_second = 4

[keys.bn-alice]
endpoints = ["GET /api/v3/account", "POST /api/v3/order", "DELETE /api/v3/order", "GET /api/v3/openOrders"]
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
max_order = { BTCUSDT = "0.5" }

[keys.bn-bob]
endpoints = ["GET /api/v3/account", "POST /api/v3/order"]

[keys.bn-rate]
endpoints = ["GET /api/v3/account"]
rate_per_second = 2
burst = 3

[keys.bn-revoked]
endpoints = ["GET /api/v3/account"]

[keys.bn-expired]
endpoints = ["GET /api/v3/account"]
expires = 2020-01-01T00:00:00Z

[keys.bn-later]
endpoints = ["GET /api/v3/account"]
not_before = 2099-01-01T00:00:00Z

[keys.bybit-alice]
endpoints = ["POST /v5/order/create", "GET /v5/account/wallet-balance"]

[keys.mexc-alice]
endpoints = ["POST /api/v3/order", "GET /api/v3/account"]

[keys.htx-alice]
endpoints = ["POST /v1/order/orders/place", "GET /v1/account/accounts"]
"""

ORDER = (("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
         ("quantity", "0.01"), ("price", "50000"))
WITHDRAW_PARAMS = (("coin", "USDT"), ("address", "TXYZattacker"), ("amount", "1000"), ("network", "TRX"))


class Deployment:
    def __init__(self, env: Env, receiver: Receiver) -> None:
        self.env, self.receiver = env, receiver
        self.config = env.write_config("guard", extra=f'[alerts]\nwebhook = "{receiver.url}"\n')
        self.policy = env.root / "policy.toml"
        self.audit = env.root / "state" / "audit.jsonl"

    def call(self, token: str | None, key: str, method: str, path: str, query=(), body=None, timestamp_ms: int = 0,
             raw: str | None = None):
        msg = signer_pb2.SignRequest(key=key, method=method, path=path, timestamp_ms=timestamp_ms,
                                     query=[signer_pb2.Param(name=n, value=v) for n, v in query])
        if raw is not None:
            msg.raw = raw
        elif body is not None:
            msg.fields.items.extend(signer_pb2.Param(name=n, value=v) for n, v in body)
        return sign_at(self.agent.target, msg, token)

    def audit_lines(self) -> list[dict]:
        return read_audit(self.audit)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory):
    env = make_env(tmp_path_factory, "guard")
    write_bots(env.root / "bots.toml", {"alice": ALICE, "bob": BOB})
    (env.root / "policy.toml").write_text(POLICY)
    receiver = Receiver()
    d = Deployment(env, receiver)
    for label, exchange in (("bn-alice", "binance"), ("bn-bob", "binance"), ("bn-rate", "binance"),
                            ("bn-revoked", "binance"), ("bn-expired", "binance"), ("bn-later", "binance"),
                            ("bybit-alice", "bybit"), ("mexc-alice", "mexc"), ("htx-alice", "htx")):
        run_cli(env, "keys", "import", "--label", label, "--exchange", exchange, "--api-key", f"id-{label}",
                "--type", "hmac", stdin=new_secret(64) + "\n", config=d.config, check=True)
    d.agent = start_agent(env, d.config)
    yield d
    assert d.agent.stop() == 0, d.agent.log.read_text()
    receiver.server.shutdown()


def last_decision(dep: Deployment, key: str) -> dict:
    lines = [line for line in dep.audit_lines() if line.get("event") == "sign" and line.get("key") == key]
    return lines[-1]


# -- who is calling ---------------------------------------------------------------------


def test_a_permitted_request_is_signed_and_audited(dep: Deployment):
    code, details, reply = dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", body=ORDER)
    assert code == grpc.StatusCode.OK, details
    assert "signature=" in reply.body
    line = last_decision(dep, "bn-alice")
    assert (line["decision"], line["bot"], line["exchange"], line["symbols"]) == ("signed", "alice", "binance",
                                                                                  ["BTCUSDT"])
    assert "signature" not in json.dumps(line)


def test_no_credential_is_unauthenticated(dep: Deployment):
    refused(dep.call(None, "bn-alice", "GET", "/api/v3/account"), grpc.StatusCode.UNAUTHENTICATED, "auth")


def test_an_unknown_token_is_unauthenticated(dep: Deployment):
    forged = register_secret(f"sa1_{secrets.token_urlsafe(24)}")
    refused(dep.call(forged, "bn-alice", "GET", "/api/v3/account"), grpc.StatusCode.UNAUTHENTICATED, "auth")
    dep.receiver.wait_for(lambda a: a["kind"] == "unauthenticated")


def test_another_bots_credential_cannot_use_the_key(dep: Deployment):
    refused(dep.call(BOB, "bn-alice", "GET", "/api/v3/account"), grpc.StatusCode.PERMISSION_DENIED, "grant")
    refused(dep.call(ALICE, "bn-bob", "GET", "/api/v3/account"), grpc.StatusCode.PERMISSION_DENIED, "grant")
    assert last_decision(dep, "bn-bob")["rule"] == "grant"


# -- what may be signed -----------------------------------------------------------------


def test_a_withdrawal_endpoint_is_refused_by_default(dep: Deployment):
    details = refused(dep.call(ALICE, "bn-alice", "POST", "/sapi/v1/capital/withdraw/apply", body=WITHDRAW_PARAMS),
                      grpc.StatusCode.PERMISSION_DENIED, "forbidden:")
    assert "withdraw" in details.lower()
    alert = dep.receiver.wait_for(lambda a: a["kind"] == "refusal" and a.get("rule", "").startswith("forbidden:"))
    assert alert["bot"] == "alice" and alert["key"] == "bn-alice"


@pytest.mark.parametrize("key,path,body", [
    ("bn-alice", "/api/v3/order", WITHDRAW_PARAMS),  # Binance signs only the parameters
    ("mexc-alice", "/api/v3/order", WITHDRAW_PARAMS),
    ("bybit-alice", "/v5/order/create", None),
    ("htx-alice", "/v1/order/orders/place", None),  # HTX does not sign POST bodies
])
def test_withdrawal_parameters_on_an_allowed_path_are_refused(dep: Deployment, key: str, path: str, body):
    if key == "bybit-alice":
        raw = json.dumps({"coin": "USDT", "chain": "TRX", "address": "TXYZattacker", "amount": "1000"})
        result = dep.call(ALICE, key, "POST", path, raw=raw)
    elif key == "htx-alice":
        raw = json.dumps({"address": "TXYZattacker", "amount": "1000", "currency": "usdt", "chain": "trc20usdt"})
        result = dep.call(ALICE, key, "POST", path, raw=raw)
    else:
        result = dep.call(ALICE, key, "POST", path, body=body)
    details = refused(result, grpc.StatusCode.PERMISSION_DENIED, "forbidden:")
    assert "address" in details and "amount" in details, details


def test_an_endpoint_outside_the_allow_list_is_refused(dep: Deployment):
    refused(dep.call(ALICE, "bn-alice", "GET", "/api/v3/myTrades", query=(("symbol", "BTCUSDT"),)),
            grpc.StatusCode.PERMISSION_DENIED, "endpoint")


@pytest.mark.parametrize("path,rule", [
    ("/API/V3/ORDER", "endpoint"),                 # case: not the listed endpoint
    ("/api/v3/order/", "endpoint"),                # trailing slash: not the listed endpoint
    ("/api//v3/order", "path"),                    # doubled slash
    ("/api/v3/%6Frder", "path"),                   # percent-encoding
    ("/api/v3/./order", "path"),                   # dot segment
    ("/api/v3/x/../order", "path"),                # dot-dot segment
    ("/api/v3/order\\x", "path"),                  # backslash
    ("/SAPI/V1/CAPITAL/WITHDRAW/APPLY", "forbidden:"),  # case on a forbidden endpoint
    ("/sapi/v1/capital/withdraw/apply/", "forbidden:"),  # trailing slash on a forbidden endpoint
])
def test_path_tricks_are_refused(dep: Deployment, path: str, rule: str):
    refused(dep.call(ALICE, "bn-alice", "POST", path, body=ORDER), grpc.StatusCode.PERMISSION_DENIED, rule)


def test_duplicate_parameters_are_refused(dep: Deployment):
    # The same name in the query and the body: Binance signs both, servers differ on which wins.
    refused(dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", query=(("symbol", "DOGEUSDT"),), body=ORDER),
            grpc.StatusCode.PERMISSION_DENIED, "duplicate-parameter")
    refused(dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", body=ORDER + (("SYMBOL", "DOGEUSDT"),)),
            grpc.StatusCode.PERMISSION_DENIED, "duplicate-parameter")
    code, details, reply = dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", body=ORDER + (("symbol", "X"),))
    assert (code, reply) == (grpc.StatusCode.INVALID_ARGUMENT, None) and "twice" in details


def test_oversized_parameters_are_refused(dep: Deployment):
    code, details, reply = dep.call(ALICE, "bn-alice", "POST", "/api/v3/order",
                                    body=ORDER + (("newClientOrderId", "x" * 100_000),))
    assert (code, reply) == (grpc.StatusCode.INVALID_ARGUMENT, None) and "longer" in details
    many = tuple((f"p{i}", "1") for i in range(500))
    code, details, reply = dep.call(ALICE, "bn-alice", "GET", "/api/v3/account", query=many)
    assert (code, reply) == (grpc.StatusCode.INVALID_ARGUMENT, None) and "parameters" in details


def test_a_symbol_outside_the_allow_list_is_refused(dep: Deployment):
    body = tuple(("symbol", "DOGEUSDT") if n == "symbol" else (n, v) for n, v in ORDER)
    refused(dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", body=body), grpc.StatusCode.PERMISSION_DENIED,
            "symbol")


def test_an_order_over_its_size_cap_is_refused(dep: Deployment):
    body = tuple(("quantity", "0.6") if n == "quantity" else (n, v) for n, v in ORDER)
    details = refused(dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", body=body),
                      grpc.StatusCode.PERMISSION_DENIED, "order-size")
    assert "0.5" in details


# -- the clock ----------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.mark.parametrize("offset_ms", [-60_000, -6_000, 30_000])
def test_stale_and_future_timestamps_are_refused(dep: Deployment, offset_ms: int):
    refused(dep.call(ALICE, "bn-alice", "GET", "/api/v3/account", timestamp_ms=now_ms() + offset_ms),
            grpc.StatusCode.PERMISSION_DENIED, "clock")
    # The same through the exchange's own parameter.
    refused(dep.call(ALICE, "bn-alice", "GET", "/api/v3/account", query=(("timestamp", str(now_ms() + offset_ms)),)),
            grpc.StatusCode.PERMISSION_DENIED, "clock")


def test_a_caller_clock_within_the_skew_is_accepted(dep: Deployment):
    stamp = now_ms() - 1_000
    code, details, reply = dep.call(ALICE, "bn-alice", "GET", "/api/v3/account", timestamp_ms=stamp)
    assert code == grpc.StatusCode.OK, details
    assert f"timestamp={stamp}" in reply.path


# -- keys: expiry, revocation -----------------------------------------------------------------


def test_expired_and_not_yet_valid_keys_are_refused(dep: Deployment):
    refused(dep.call(ALICE, "bn-expired", "GET", "/api/v3/account"), grpc.StatusCode.PERMISSION_DENIED, "expired")
    dep.receiver.wait_for(lambda a: a["kind"] == "expired-key" and a["key"] == "bn-expired")
    refused(dep.call(ALICE, "bn-later", "GET", "/api/v3/account"), grpc.StatusCode.PERMISSION_DENIED, "not-before")


def test_a_revoked_key_is_refused_within_a_second(dep: Deployment):
    assert dep.call(ALICE, "bn-revoked", "GET", "/api/v3/account")[0] == grpc.StatusCode.OK
    assert run_cli(dep.env, "keys", "revoke", "--label", "bn-revoked", config=dep.config).returncode == 0
    revoked_at = time.monotonic()
    while True:
        code, details, reply = dep.call(ALICE, "bn-revoked", "GET", "/api/v3/account")
        if code != grpc.StatusCode.OK:
            break
        assert time.monotonic() - revoked_at < 1.0, "still signing with a revoked key after 1 s"
    assert (code, reply) == (grpc.StatusCode.NOT_FOUND, None), details
    dep.receiver.wait_for(lambda a: a["kind"] == "revoked-key" and a["key"] == "bn-revoked")
    assert any(line.get("event") == "key.revoke" and line.get("key") == "bn-revoked" for line in dep.audit_lines())


# -- rates ---------------------------------------------------------------------------------------


def test_a_burst_over_the_key_rate_is_exhausted(dep: Deployment):
    codes = [dep.call(ALICE, "bn-rate", "GET", "/api/v3/account")[0] for _ in range(8)]
    assert codes[:3] == [grpc.StatusCode.OK] * 3  # the burst
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[3:]
    refusal = last_decision(dep, "bn-rate")
    assert refusal["rule"] == "rate:key"
    dep.receiver.wait_for(lambda a: a["kind"] == "rate-limit" and a["key"] == "bn-rate")


def test_a_burst_over_the_bot_rate_is_exhausted(dep: Deployment):
    results = [dep.call(BOB, "bn-bob", "GET", "/api/v3/account") for _ in range(8)]
    exhausted = [r for r in results if r[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert exhausted and all("'rate:bot'" in r[1] and r[2] is None for r in exhausted)


def test_a_burst_on_a_symbol_the_key_never_traded_alerts(dep: Deployment):
    body = tuple(("symbol", "SOLUSDT") if n == "symbol" else (n, v) for n, v in ORDER)
    for _ in range(5):
        assert dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", body=body)[0] == grpc.StatusCode.OK
    alert = dep.receiver.wait_for(lambda a: a["kind"] == "symbol-burst" and a.get("symbol") == "SOLUSDT")
    assert alert["key"] == "bn-alice"


# -- live changes: bots and policy ----------------------------------------------------------------


def test_a_new_bot_works_and_its_revocation_takes_effect_within_a_second(dep: Deployment, tmp_path: Path):
    token_file = tmp_path / "carol.token"
    added = run_cli(dep.env, "bots", "add", "carol", "--token-file", str(token_file), config=dep.config)
    assert added.returncode == 0, added.stderr
    carol = register_secret(token_file.read_text().strip())
    assert carol not in added.stdout + added.stderr
    dep.policy.write_text(POLICY + '\n[bots.carol]\nkeys = ["bn-alice"]\n')
    deadline = time.monotonic() + 2
    while dep.call(carol, "bn-alice", "GET", "/api/v3/account")[0] != grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "the new bot and its grant were not picked up"
        time.sleep(0.05)
    assert run_cli(dep.env, "bots", "revoke", "carol", config=dep.config).returncode == 0
    revoked_at = time.monotonic()
    while dep.call(carol, "bn-alice", "GET", "/api/v3/account")[0] == grpc.StatusCode.OK:
        assert time.monotonic() - revoked_at < 1.0, "a revoked bot still signs after 1 s"
    refused(dep.call(carol, "bn-alice", "GET", "/api/v3/account"), grpc.StatusCode.UNAUTHENTICATED, "auth")
    dep.policy.write_text(POLICY)


def test_a_bad_policy_is_rejected_and_the_old_one_stays(dep: Deployment):
    dep.policy.write_text(POLICY + "\n[keys.bn-alice.oops\n")  # not TOML
    dep.receiver.wait_for(lambda a: a["kind"] == "policy-rejected")
    assert dep.call(ALICE, "bn-alice", "GET", "/api/v3/account")[0] == grpc.StatusCode.OK
    dep.policy.write_text(POLICY.replace('"GET /api/v3/account", "POST /api/v3/order", "DELETE',
                                         '"POST /api/v3/order", "DELETE'))
    deadline = time.monotonic() + 1.5
    while dep.call(ALICE, "bn-alice", "GET", "/api/v3/account")[0] == grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "the new policy was not applied within a second"
    refused(dep.call(ALICE, "bn-alice", "GET", "/api/v3/account"), grpc.StatusCode.PERMISSION_DENIED, "endpoint")
    dep.policy.write_text(POLICY)
    time.sleep(0.6)
    reloads = [line for line in dep.audit_lines() if line.get("event") == "policy.reload"]
    assert {"rejected", "applied"} <= {line["decision"] for line in reloads}


# -- found in review: what the first version let through ----------------------------------------------


def test_order_parameters_on_a_non_order_path_are_refused(dep: Deployment):
    # Binance signs only the parameters: a market order signed for GET /api/v3/account would place it.
    order = (("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.01"))
    refused(dep.call(ALICE, "bn-alice", "GET", "/api/v3/account", query=order), grpc.StatusCode.PERMISSION_DENIED,
            "endpoint")


def test_a_second_spelling_of_the_symbol_cannot_dodge_the_cap(dep: Deployment):
    body = tuple(("quantity", "100") if n == "quantity" else (n, v) for n, v in ORDER) + (("SYMBOL", "ETHUSDT"),)
    refused(dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", body=body), grpc.StatusCode.PERMISSION_DENIED,
            "duplicate-parameter")


def test_a_quote_sized_order_cannot_dodge_a_base_cap(dep: Deployment):
    body = (("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quoteOrderQty", "5000000"))
    refused(dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", body=body), grpc.StatusCode.PERMISSION_DENIED,
            "order-size")


def test_a_raw_body_cannot_carry_a_stale_timestamp_or_a_long_receive_window(dep: Deployment):
    raw = f"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=1&timestamp={now_ms() + 86_400_000}"
    refused(dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", raw=raw), grpc.StatusCode.PERMISSION_DENIED, "clock")
    raw = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=1&recvWindow=60000"
    refused(dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", raw=raw), grpc.StatusCode.PERMISSION_DENIED, "clock")


def test_staking_parameters_on_an_order_path_are_refused(dep: Deployment):
    refused(dep.call(ALICE, "bn-alice", "POST", "/api/v3/order", body=(("amount", "10"),)),
            grpc.StatusCode.PERMISSION_DENIED, "forbidden:")


def test_a_flood_of_unauthenticated_calls_is_bounded_in_audit_and_alerts(dep: Deployment):
    before_alerts = len(dep.receiver.alerts)
    before_lines = len(dep.audit.read_text().splitlines())
    for i in range(150):
        dep.call(None, f"label-{i}", "GET", "/api/v3/account")
    time.sleep(0.3)
    assert len(dep.audit.read_text().splitlines()) - before_lines <= 60  # 20 per second, and the burst
    assert len(dep.receiver.alerts) - before_alerts <= 5


# -- batches -------------------------------------------------------------------------------------


def test_a_batch_decides_each_item_on_its_own(dep: Deployment, tmp_path: Path):
    from signing_agent_client.client import RefusedError, SignerClient, sign_request

    token_file = tmp_path / "alice.token"
    token_file.write_text(ALICE)
    with SignerClient(dep.agent.target, token_file=token_file) as client:
        results = client.sign_batch([
            sign_request("bn-alice", "POST", "/api/v3/order", body=ORDER),
            sign_request("bn-alice", "POST", "/sapi/v1/capital/withdraw/apply", body=WITHDRAW_PARAMS),
            sign_request("bn-bob", "GET", "/api/v3/account"),
            sign_request("bn-alice", "GET", "/api/v3/account"),
        ])
    assert [type(r).__name__ for r in results] == ["SignedRequest", "RefusedError", "RefusedError", "SignedRequest"]
    assert "'forbidden:" in results[1].message and "'grant'" in results[2].message
    assert isinstance(results[1], RefusedError) and "signature=" in results[0].body
    with SignerClient(dep.agent.target, token_file=False) as client:
        with pytest.raises(Exception, match="UNAUTHENTICATED"):
            client.sign_batch([sign_request("bn-alice", "GET", "/api/v3/account")])


# -- the audit -----------------------------------------------------------------------------------


def test_the_audit_chain_verifies_and_holds_no_secret(dep: Deployment):
    # Runs last in this module (pytest keeps file order): every decision above is in the log.
    verified = run_cli(dep.env, "audit", "verify", config=dep.config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    text = dep.audit.read_text()
    assert ALICE not in text and BOB not in text
    assert "signature" not in text and "Bearer" not in text
    decisions = [line for line in dep.audit_lines() if line.get("event") == "sign"]
    assert {"signed", "refused"} == {line["decision"] for line in decisions}
    assert {"auth", "grant", "endpoint", "path", "symbol", "order-size", "clock", "rate:key", "expired"} <= {
        line["rule"] for line in decisions}
    assert all(isinstance(line["latency_ms"], (int, float)) for line in decisions)
