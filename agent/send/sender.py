"""Placing a signed request: one attempt for anything that writes, retries for reads, lookups for lost orders.

The decision (agent.policy.evaluate), the signature and the audit of the decision come first, in
the service, exactly as for Sign; this module takes the request from there to the exchange and back:

  reads    (agent.rules: GET where the exchange's GETs only read, and its read endpoints) are
           retried, signed afresh each time (nonces and timestamps move on), with backoff, when
           the exchange could not be reached or answered 429 or 5xx; Retry-After is honoured
           within the attempt budget. The last answer is returned as it is (ccxt reads a 429).
  writes   are sent once. Not sent at all (no connection): UNAVAILABLE, safe to send again. Sent
           but no answer: never sent again; where the exchange takes a client order id
           (agent.send.orders) the order is looked up by it, else DEADLINE_EXCEEDED says the
           order's fate is unknown.

Each request's answer is audited ("send", beside the decision's "sign" line): the exchange's HTTP
status, its order id and error code where it gives them, the client order id, whether the answer
came from a lookup. Never a header or a body: they could carry what the bot must not learn from
the audit, and never anything of the signature.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.send.exchange_limits import Holds, spent
from agent.send.orders import ABSENT, FOUND, ClientIds
from agent.send.transport import Answer, SendFailure, Transport
from signing_agent_client.request import SignedRequest, UnsignedRequest

READ_ATTEMPTS = 3
BACKOFF_S = (0.2, 0.6)  # before the second and third attempt of a read
MAX_RETRY_AFTER_S = 2.0  # a longer Retry-After is the bot's to wait, not a signing thread's
LOOKUP_DELAYS_S = (0.2, 0.5, 1.0)  # before each lookup of a lost order: the exchange may be slow to list it
# Retries and lookups start only within this many total_timeout_ms of the first attempt, so that a
# Send ends within about 2.5 of them (the last attempt runs to its own timeout): under the client's
# deadline (signing_agent_client.client.SEND_TIMEOUT, 45 s) with the default 15 s.
BUDGET_TOTALS = 1.5


class SendError(Exception):
    """No exchange answer to return: CODE is the gRPC status name, the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Job:
    """One request the service decided and signed, ready to go."""

    exchange: str  # the key's exchange id
    base_url: str  # https://host[:port] (agent.send.hosts)
    request: UnsignedRequest  # as decided (with the client order id, if one was added)
    signed: SignedRequest
    sign: Callable[[UnsignedRequest], SignedRequest]  # signs another request with the same key (no rules)
    read: bool  # the request only reads: retried when it fails
    client_id: str | None  # the order's client order id, where the exchange takes one
    client_ids: ClientIds | None  # how to look the order up by it


@dataclass(frozen=True)
class Delivered:
    answer: Answer
    client_id: str | None
    reconciled: bool = False


class Sender:
    def __init__(self, transport: Transport, audit: Callable[..., None], sleep: Callable[[float], None] = time.sleep,
                 metrics: Any = None):
        self._metrics = metrics  # agent.metrics.Metrics, or None
        self._transport = transport
        self._budget_s = BUDGET_TOTALS * transport.settings.total_timeout_s
        self._audit = audit  # (event fields) -> None: Guard.record_send
        self._sleep = sleep
        # The exchange's own limits, fed back (agent.send.exchange_limits): the budgets its answers say
        # are spent, refused at admission (Ticket.admit, rule rate:exchange) until they renew.
        self.holds = Holds()

    def place(self, job: Job, who: dict[str, str]) -> Delivered:
        started = time.monotonic()
        deadline = started + self._budget_s
        try:
            if job.read:
                delivered = Delivered(self._read(job, job.request, job.signed, deadline), job.client_id)
            else:
                delivered = self._write(job, deadline)
        except SendError as exc:
            self._count(job, exc.code.lower(), started)
            self._audit(**who, exchange=job.exchange, outcome="failed", status=exc.code, client_order_id=job.client_id
                        or "", reason=str(exc)[:300])
            raise
        answer = delivered.answer
        self._count(job, "reconciled" if delivered.reconciled else _status_class(answer.status), started)
        method, path = job.request.method, job.request.path
        self.holds.record(job.exchange, who["key"], job.base_url, method, path,
                          spent(job.exchange, answer.status, answer.headers, method, path))
        self._audit(**who, exchange=job.exchange, outcome="answered", http_status=answer.status,
                    client_order_id=delivered.client_id or "", reconciled=delivered.reconciled,
                    elapsed_ms=answer.elapsed_ms, **summary(answer))
        return delivered

    def _count(self, job: Job, outcome: str, started: float) -> None:
        if self._metrics is not None:
            self._metrics.sent(exchange=job.exchange, outcome=outcome, seconds=time.monotonic() - started)

    # -- reads --------------------------------------------------------------------------------

    def _read(self, job: Job, request: UnsignedRequest, signed: SignedRequest, deadline: float) -> Answer:
        failure: SendFailure | None = None
        for attempt in range(READ_ATTEMPTS):
            if attempt:
                if time.monotonic() + delay >= deadline:
                    break
                self._sleep(delay)
                signed = job.sign(request)
            try:
                answer = self._once(job, signed)
            except SendFailure as exc:
                if exc.kind in ("tls", "too-large"):  # the same again would fail the same way
                    raise _error(exc, sent=False) from None
                failure, delay = exc, BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                continue
            if (answer.status == 429 or answer.status >= 500) and attempt + 1 < READ_ATTEMPTS:
                wait = _retry_after(answer)
                if wait is None or wait <= MAX_RETRY_AFTER_S:
                    failure, delay = None, max(wait or 0.0, BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                    last = answer
                    continue
            return answer
        if failure is None:
            return last  # the exchange's own 429 / 5xx, after the retries: the bot reads it
        raise _error(failure, sent=False)  # a read: whether it arrived changes nothing

    # -- writes -------------------------------------------------------------------------------

    def _write(self, job: Job, deadline: float) -> Delivered:
        try:
            return Delivered(self._once(job, job.signed), job.client_id)
        except SendFailure as exc:
            if not exc.sent:
                raise _error(exc, sent=False) from None
            lost = exc
        if job.client_ids is None or job.client_id is None:
            raise SendError("DEADLINE_EXCEEDED", f"{lost.detail}. The request may have been acted on; the agent did "
                            "not send it again. Check with a read (open orders, fills) before sending it again")
        return self._reconcile(job, lost, deadline)

    def _reconcile(self, job: Job, lost: SendFailure, deadline: float) -> Delivered:
        rules, client_id = job.client_ids, job.client_id
        assert rules is not None and client_id is not None
        lookup = rules.lookup(job.request, client_id).validated()
        state = "unknown"
        for delay in LOOKUP_DELAYS_S:
            if time.monotonic() + delay >= deadline:
                break
            self._sleep(delay)
            try:
                answer = self._once(job, job.sign(lookup))
            except SendFailure:
                continue
            state = rules.state(answer.status, answer.body)
            if state == FOUND:
                return Delivered(answer, client_id, reconciled=True)
        found = ("the exchange has no order with that id yet" if state == ABSENT
                 else "the lookups did not say whether it exists")
        again = ("or send it again with the same client order id (the exchange refuses a second order with it)"
                 if rules.refuses_reuse else "and only then send it again: this exchange may take a second order with "
                 "the same id")
        raise SendError("DEADLINE_EXCEEDED", f"{lost.detail}. The order was not sent again. The agent looked it up by "
                        f"client order id {client_id!r}: {found}. Before placing it again, look it up by that id, "
                        + again)

    def _once(self, job: Job, signed: SignedRequest) -> Answer:
        return self._transport.request(signed.method, job.base_url + signed.path, signed.headers,
                                       signed.body.encode("utf-8"))


def _status_class(status: int) -> str:
    return "429" if status == 429 else f"{status // 100}xx"


def _retry_after(answer: Answer) -> float | None:
    value = answer.header("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error(failure: SendFailure, *, sent: bool) -> SendError:
    if failure.kind == "tls":
        return SendError("FAILED_PRECONDITION", f"{failure.detail}. Nothing was sent")
    if failure.kind == "too-large":
        return SendError("RESOURCE_EXHAUSTED", failure.detail)
    return SendError("UNAVAILABLE", f"{failure.detail}. "
                     + ("Nothing was placed: it is safe to send again" if not sent else "It may be sent again"))


# The order id and the error code in an exchange's answer, for the audit: a few well-known names,
# top level or in the first element of `data` / `result`. Nothing else of the body is kept.
_ORDER_ID_NAMES = ("orderId", "order_id", "ordId", "id", "txid")
_CODE_NAMES = ("code", "retCode", "err-code", "error", "sCode")


def summary(answer: Answer) -> dict[str, str]:
    try:
        parsed = json.loads(answer.body) if answer.body else None
    except (ValueError, RecursionError):
        return {}
    places = [parsed] if isinstance(parsed, dict) else []
    for holder in list(places):
        for name in ("data", "result"):
            inner = holder.get(name)
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(inner, dict):
                places.append(inner)
    out: dict[str, str] = {}
    for place in places:
        for key, names in (("order_id", _ORDER_ID_NAMES), ("exchange_code", _CODE_NAMES)):
            if key in out:
                continue
            for name in names:
                value = place.get(name)
                if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) != "":
                    out[key] = str(value)[:64]
                    break
    return out
