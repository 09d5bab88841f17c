"""The decision pipeline in process: one evaluation of the rules per request, one Decision to every sink.

The token is replaced by a keyring whose first handle dies at its first use (KeyRevoked), as a key
rotated under the same label, or a reopened session, would make it: the service looks the key up once
more and signs again, without running the rules or charging the key's rate a second time.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest

import agent.guard
from signing_agent_client._proto import signer_pb2
from agent.alerts import AlertSender
from agent.custody import KeyEntry, KeyRevoked
from agent.custody.objects import KeyInfo
from agent.decision import Decision, StreamTally, emit
from agent.guard import AuditUnavailable, Caller, Guard
from agent.policy import Refusal
from agent.service import Failure, SignerService, _result, _write_result, signed_to_proto
from signing_agent_client.request import SignedRequest

NOW_MS = 1_763_750_000_000
SECRET = b"s" * 64
CREATED = datetime.fromtimestamp(NOW_MS / 1000, timezone.utc).isoformat()


class DyingHandles:
    """A keyring whose handles die at first use (KeyRevoked) for the first DIE lookups."""

    def __init__(self, die: int = 1, created: list[str] | None = None) -> None:
        self.die, self.lookups = die, 0
        self.created = created or [CREATED]

    def lookup(self, label: str) -> KeyEntry:
        self.lookups += 1
        created = self.created[min(self.lookups, len(self.created)) - 1]
        info = KeyInfo(label=label, exchange="binance", api_key="api-key", key_type="hmac", created=created,
                       fingerprint="f" * 16)
        return KeyEntry(info=info, handle=None, generation=self.lookups)

    def hmac(self, entry: KeyEntry, message: bytes, hash_name: str) -> bytes:
        if entry.generation <= self.die:
            raise KeyRevoked(f"key {entry.info.label!r} was revoked or rotated")
        return hmac.new(SECRET, message, hash_name).digest()


@pytest.fixture
def guard(tmp_path: Path):
    (tmp_path / "policy.toml").write_text(
        "[bots.mm]\nkeys = ['k']\n"
        "[keys.k]\nendpoints = ['POST /api/v3/order']\nsymbols = ['BTCUSDT']\n"
        "rate_per_second = 1\nburst = 1\n")
    (tmp_path / "bots.toml").write_text("")
    g = Guard(policy_path=tmp_path / "policy.toml", bots_path=tmp_path / "bots.toml", state_dir=tmp_path / "state",
              audit=None, alerts=AlertSender(None))
    yield g
    g.stop()


@pytest.fixture
def evaluations(monkeypatch) -> list[Any]:
    """Every call of the pure rules (agent.policy.evaluate) from the guard."""
    calls: list[Any] = []
    real = agent.guard.evaluate

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(agent.guard, "evaluate", counting)
    return calls


def _order(symbol: str = "BTCUSDT", key: str = "k") -> signer_pb2.SignRequest:
    return signer_pb2.SignRequest(
        key=key, method="POST", path="/api/v3/order",
        query=[signer_pb2.Param(name=n, value=v) for n, v in
               (("symbol", symbol), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.01"))])


def _service(keyring, guard: Guard) -> SignerService:
    return SignerService(keyring, nonces=None, guard=guard, clock_ms=lambda: NOW_MS)  # type: ignore[arg-type]


def test_a_retry_after_a_revoked_handle_does_not_run_the_rules_or_charge_the_rate_again(guard, evaluations):
    keyring = DyingHandles(die=1)
    signed = _service(keyring, guard)._decide(Caller("mm"), _order())
    # With a rate of 1 and a burst of 1, a second charge would have refused the retry.
    assert not isinstance(signed, Failure), signed
    assert keyring.lookups == 2 and len(evaluations) == 1
    query = signed.path.partition("?")[2]
    message, _, signature = query.rpartition("&signature=")
    assert signature == hmac.new(SECRET, message.encode(), hashlib.sha256).hexdigest()
    # The request was charged once: the next one is over the rate.
    over = _service(DyingHandles(die=0), guard)._decide(Caller("mm"), _order())
    assert isinstance(over, Failure) and over.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_retry_with_a_key_of_another_creation_date_is_checked_again_without_a_rate_charge(guard, evaluations):
    old = (datetime.fromtimestamp(NOW_MS / 1000, timezone.utc) - timedelta(days=400)).isoformat()
    # The label now names a key the rules read differently (too old): it is refused, not signed.
    refused = _service(DyingHandles(die=1, created=[CREATED, old]), guard)._decide(Caller("mm"), _order())
    assert isinstance(refused, Failure) and refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert "key-age" in refused.message and len(evaluations) == 2


def test_a_key_revoked_for_good_is_not_found_and_flagged_revoked(guard, evaluations, monkeypatch):
    seen: list[Decision] = []
    monkeypatch.setattr(guard, "record", seen.append)
    failed = _service(DyingHandles(die=2), guard)._decide(Caller("mm"), _order())
    assert isinstance(failed, Failure) and failed.code == grpc.StatusCode.NOT_FOUND
    assert len(evaluations) == 1
    (decision,) = seen
    assert decision.revoked_key and decision.status == "NOT_FOUND" and decision.outcome == "refused"


class Sinks:
    def __init__(self, audit_fails: bool = False) -> None:
        self.records: list[Decision] = []
        self.metrics: list[dict] = []
        self.logs: list[tuple[str, dict]] = []
        self.audit_fails = audit_fails

    def record(self, decision: Decision) -> None:
        self.records.append(decision)
        if self.audit_fails and decision.outcome == "signed":
            raise AuditUnavailable("the audit log cannot be written")

    def decision(self, **fields) -> None:
        self.metrics.append(fields)

    def info(self, event: str, **fields) -> None:
        self.logs.append((event, fields))


def test_one_decision_goes_to_every_sink_redacted_once():
    sinks = Sinks()
    refusal = Refusal("symbol", "not listed")
    decision = Decision(bot="mm", key="k" * 100, method="POST" * 10, path="/api/v3/order?signature=abc" + "x" * 300,
                        status="PERMISSION_DENIED", refusal=refusal, message=str(refusal), latency_ms=1.5,
                        policy_digest="d" * 64)
    shown = emit(decision, guard=sinks, metrics=sinks, log=sinks)  # type: ignore[arg-type]
    assert sinks.records == [shown]
    assert (shown.key, shown.method, shown.path) == ("k" * 64, ("POST" * 4), "/api/v3/order")
    assert sinks.metrics == [{"exchange": "", "status": "PERMISSION_DENIED", "rule": "symbol", "latency_s": 0.0015}]
    assert sinks.logs == [("sign", {"decision": "refused", "status": "PERMISSION_DENIED", "rule": "symbol",
                                    "reason": str(refusal), "latency_ms": 1.5, "bot": "mm", "key": "k" * 64,
                                    "method": "POST" * 4, "path": "/api/v3/order"})]


def test_a_signature_that_cannot_be_audited_is_answered_unavailable():
    sinks = Sinks(audit_fails=True)
    decision = Decision(bot="mm", key="k", method="GET", path="/p", status="OK", exchange="binance",
                        symbols=("BTCUSDT",))
    shown = emit(decision, guard=sinks, metrics=sinks, log=sinks)  # type: ignore[arg-type]
    assert shown.status == "UNAVAILABLE" and shown.outcome == "refused" and "audit" in shown.message
    assert sinks.metrics[0]["status"] == "UNAVAILABLE" and sinks.metrics[0]["exchange"] == "binance"
    assert sinks.logs[0][1]["decision"] == "refused" and sinks.logs[0][1]["rule"] == ""


def test_the_rules_are_a_pure_function_that_keeps_the_age_warning_of_a_later_refusal():
    from agent.exchanges import EXCHANGES
    from agent.policy import evaluate, parse_policy
    from signing_agent_client.request import UnsignedRequest

    policy = parse_policy(b"[keys.k]\nendpoints = ['POST /api/v3/order']\nsymbols = ['BTCUSDT']\ntimestamps = 'any'\n"
                          b"max_age_days = 100\nwarn_age_days = 30\n")
    created = (datetime.fromtimestamp(NOW_MS / 1000, timezone.utc) - timedelta(days=90)).isoformat()
    args = dict(created=created, timestamp_ms=0, now_ms=NOW_MS)

    def order(symbol: str) -> UnsignedRequest:
        return UnsignedRequest("POST", "/api/v3/order", (("symbol", symbol), ("side", "BUY"), ("quantity", "1")))

    key_policy = policy.for_key("k")
    signable = evaluate(key_policy, EXCHANGES["binance"], order("BTCUSDT").validated(), **args)
    again = evaluate(key_policy, EXCHANGES["binance"], order("BTCUSDT").validated(), **args)
    assert signable == again  # the same inputs, the same verdict: nothing is kept between calls
    assert signable.refusal is None and signable.symbols == ("BTCUSDT",) and "rotate" in signable.age_warning
    assert signable.view is not None and signable.view.params[0] == ("symbol", "BTCUSDT")
    refused = evaluate(key_policy, EXCHANGES["binance"], order("ETHUSDT").validated(), **args)
    assert isinstance(refused.refusal, Refusal) and refused.refusal.rule == "symbol"
    assert refused.age_warning == signable.age_warning  # the guard alerts on it, as before the rules refused


class BatchSinks(Sinks):
    """The sinks of a batch: one group of records, one metrics call, log lines."""

    def __init__(self, audit_fails: bool = False) -> None:
        super().__init__(audit_fails)
        self.groups: list[list[Decision]] = []

    def record_many(self, decisions: list[Decision]):
        self.groups.append(list(decisions))
        return AuditUnavailable("the audit log cannot be written") if self.audit_fails else None

    def decisions(self, items) -> None:
        self.metrics.append({"items": list(items)})


def _batch_decisions() -> list[Decision]:
    refusal = Refusal("symbol", "not listed")
    signed = Decision(bot="mm", key="k", method="POST", path="/api/v3/order", status="OK", exchange="binance",
                      symbols=("BTCUSDT",), latency_ms=0.5)
    refused = Decision(bot="mm", key="k", method="POST", path="/api/v3/order?x=1", status="PERMISSION_DENIED",
                       refusal=refusal, message=str(refusal), latency_ms=0.25)
    return [signed, refused, signed]


def test_a_batch_goes_to_each_sink_once_with_a_log_line_per_refusal_and_one_for_the_batch():
    from agent.decision import emit_batch

    sinks = BatchSinks()
    shown = emit_batch(_batch_decisions(), guard=sinks, metrics=sinks, log=sinks, bot="mm",  # type: ignore[arg-type]
                       latency_ms=2.0)
    assert [d.status for d in shown] == ["OK", "PERMISSION_DENIED", "OK"]
    assert sinks.groups == [shown] and shown[1].path == "/api/v3/order"  # redacted before any sink
    assert sinks.metrics == [{"items": [("binance", "OK", "", 0.0005), ("", "PERMISSION_DENIED", "symbol", 0.00025),
                                        ("binance", "OK", "", 0.0005)]}]
    assert [event for event, _ in sinks.logs] == ["sign", "sign.batch"]
    assert sinks.logs[0][1]["rule"] == "symbol" and sinks.logs[0][1]["path"] == "/api/v3/order"
    assert sinks.logs[1][1] == {"bot": "mm", "items": 3, "signed": 2, "refused": 1, "latency_ms": 2.0}


def test_a_batch_whose_audit_group_cannot_be_written_hands_out_none_of_its_signatures():
    from agent.decision import emit_batch

    sinks = BatchSinks(audit_fails=True)
    shown = emit_batch(_batch_decisions(), guard=sinks, metrics=sinks, log=sinks, bot="mm",  # type: ignore[arg-type]
                       latency_ms=2.0)
    assert [d.status for d in shown] == ["UNAVAILABLE", "PERMISSION_DENIED", "UNAVAILABLE"]
    assert all(d.outcome == "refused" for d in shown) and "audit" in shown[0].message
    assert [event for event, _ in sinks.logs] == ["sign", "sign", "sign", "sign.batch"]
    assert sinks.logs[-1][1]["signed"] == 0 and sinks.logs[-1][1]["refused"] == 3


def test_sign_batch_audits_every_item_on_its_own_chained_line_and_charges_each_item_once(tmp_path):
    from agent.audit import AuditLog, verify

    (tmp_path / "policy.toml").write_text(
        "[bots.mm]\nkeys = ['k']\n"
        "[keys.k]\nendpoints = ['POST /api/v3/order']\nsymbols = ['BTCUSDT']\nrate_per_second = 1\nburst = 3\n")
    (tmp_path / "bots.toml").write_text("")
    audit = AuditLog(tmp_path / "audit.jsonl")
    g = Guard(policy_path=tmp_path / "policy.toml", bots_path=tmp_path / "bots.toml", state_dir=tmp_path / "state",
              audit=audit, alerts=AlertSender(None))
    try:
        service = _service(DyingHandles(die=0), g)
        service._caller = lambda context: Caller("mm")  # type: ignore[method-assign]
        items = [_order(), _order("ETHUSDT"), _order(), _order(), _order()]
        reply = service.SignBatch(signer_pb2.SignBatchRequest(requests=items), context=None)
    finally:
        g.stop()
        audit.close()
    outcomes = [r.WhichOneof("outcome") for r in reply.results]
    # A burst of 3: the refused symbol takes no rate; the fourth signable item is over it.
    assert outcomes == ["signed", "refused", "signed", "signed", "refused"]
    assert reply.results[1].refused.code == "PERMISSION_DENIED" and "symbol" in reply.results[1].refused.message
    assert reply.results[4].refused.code == "RESOURCE_EXHAUSTED"
    for result in reply.results:
        if result.WhichOneof("outcome") == "signed":
            message, _, signature = result.signed.path.partition("?")[2].rpartition("&signature=")
            assert signature == hmac.new(SECRET, message.encode(), hashlib.sha256).hexdigest()
    import json

    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    signs = [json.loads(line) for line in lines if '"event":"sign"' in line]
    assert [s["decision"] for s in signs] == ["signed", "refused", "signed", "signed", "refused"]
    assert [s["rule"] for s in signs] == ["", "symbol", "", "", "rate:key"]
    assert verify(tmp_path / "audit.jsonl").ok


def test_batch_items_and_stream_messages_meet_signs_delivery_rules_and_guardrails(tmp_path):
    """SignBatch and SignStream decide each item through Sign's pipeline: a key the agent only sends
    (delivery = "send") is refused on them as on Sign, and the guardrails (here the key's orders
    per minute) are charged once per item, whichever call carried it."""
    (tmp_path / "policy.toml").write_text(
        "[bots.mm]\nkeys = ['k', 'sent']\n"
        "[keys.k]\nendpoints = ['POST /api/v3/order']\nsymbols = ['BTCUSDT']\nmax_orders_per_minute = 3\n"
        "[keys.sent]\nendpoints = ['POST /api/v3/order']\ndelivery = 'send'\n")
    (tmp_path / "bots.toml").write_text("")
    g = Guard(policy_path=tmp_path / "policy.toml", bots_path=tmp_path / "bots.toml", state_dir=tmp_path / "state",
              audit=None, alerts=AlertSender(None))
    try:
        service = _service(DyingHandles(die=0), g)
        service._caller = lambda context: Caller("mm")  # type: ignore[method-assign]
        on_sign = service._decide(Caller("mm"), _order(key="sent"))
        assert isinstance(on_sign, Failure) and on_sign.code == grpc.StatusCode.PERMISSION_DENIED
        streamed = list(service.SignStream(iter([_order(key="sent"), _order(), _order()]), context=None))
        batch = service.SignBatch(signer_pb2.SignBatchRequest(requests=[_order(key="sent"), _order(), _order()]),
                                  context=None)
    finally:
        g.stop()
    for results in (streamed, list(batch.results)):
        refused = results[0].refused
        assert (refused.code, refused.message) == ("PERMISSION_DENIED", on_sign.message)
        assert "delivery" in refused.message and "call Send" in refused.message
    assert [r.WhichOneof("outcome") for r in streamed] == ["refused", "signed", "signed"]
    # Three orders a minute: two on the stream, the batch's first; its second is over (guardrail order-rate).
    assert [r.WhichOneof("outcome") for r in batch.results] == ["refused", "signed", "refused"]
    assert batch.results[2].refused.code == "RESOURCE_EXHAUSTED" and "orders per minute" in batch.results[2].refused.message


@pytest.mark.parametrize("signed", [
    SignedRequest(method="POST", path="/api/v3/order", headers=(("X-MBX-APIKEY", "k"), ("Content-Type", "x")),
                  body="symbol=BTCUSDT&signature=00"),
    SignedRequest(method="GET", path="/api/v3/account?timestamp=1&signature=00", headers=(), body=""),
])
def test_answers_written_in_place_are_the_messages_built_whole(signed: SignedRequest):
    """Batch results are written into the response (no copy of a message built apart): the bytes a
    bot receives are those of the message built from its fields, signed or refused."""
    whole = signer_pb2.SignedRequest(method=signed.method, path=signed.path, body=signed.body,
                                     headers=[signer_pb2.Header(name=n, value=v) for n, v in signed.headers])
    assert signed_to_proto(signed).SerializeToString() == whole.SerializeToString()
    batch = signer_pb2.SignBatchResponse()
    _write_result(batch.results.add(), "OK", "", signed)
    _write_result(batch.results.add(), "PERMISSION_DENIED", "refused by rule 'symbol': ...", None)
    expected = signer_pb2.SignBatchResponse(results=[
        signer_pb2.SignResult(signed=whole),
        signer_pb2.SignResult(refused=signer_pb2.Refusal(code="PERMISSION_DENIED",
                                                         message="refused by rule 'symbol': ...")),
    ])
    assert batch.SerializeToString() == expected.SerializeToString()
    assert [r.WhichOneof("outcome") for r in batch.results] == ["signed", "refused"]
    assert _result("OK", "", signed) == expected.results[0]


class _Lines:
    """The log lines a logger was asked for: (event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def test_a_stream_logs_refusals_at_once_and_signatures_counted_once_a_second():
    log, now = _Lines(), [100.0]
    tally = StreamTally(log, "mm", clock=lambda: now[0])
    signed = Decision(bot="mm", key="k", method="POST", path="/api/v3/order", status="OK", exchange="binance")
    refused = Decision(bot="mm", key="k", method="POST", path="/api/v3/order", status="PERMISSION_DENIED",
                       refusal=Refusal("symbol", "not listed"), message="refused by rule 'symbol': not listed")
    for d in (signed, signed, refused, signed):
        tally.note(d)
    assert [(e, f["decision"], f["rule"]) for e, f in log.lines] == [("sign", "refused", "symbol")]
    now[0] += StreamTally.LOG_EVERY
    tally.note(signed)
    assert log.lines[-1] == ("sign.stream", {"bot": "mm", "items": 5, "signed": 4, "refused": 1, "seconds": 1.0})
    tally.flush()  # nothing since: no empty line
    assert len(log.lines) == 2
    now[0] += 0.25
    tally.note(signed)
    tally.flush()  # the stream's end
    assert log.lines[-1] == ("sign.stream", {"bot": "mm", "items": 1, "signed": 1, "refused": 0, "seconds": 0.25})
