"""The gRPC Signer service: request in, key from custody, scheme from the exchange, signed request out.

Every outcome maps to a status a bot can act on:
  no or unknown credential  UNAUTHENTICATED    (send the bot's bearer token / client certificate)
  refused by policy         PERMISSION_DENIED  (the message names the rule)
  over a rate limit         RESOURCE_EXHAUSTED (slow down)
  unknown or revoked key    NOT_FOUND          (import it, or fix the label)
  malformed request         INVALID_ARGUMENT   (the message names the field)
  token or audit unusable   UNAVAILABLE        (transient; retry with backoff)

Send (agent.send) decides and signs the same way, then places the request itself and returns the
exchange's answer; its own failures (exchange unreachable, no answer in time, TLS) are statuses too.
SignBatch items and SignStream messages are each decided exactly as a Sign call (Sign's delivery
rules, the guardrails, the same statuses per item); only a batch's sinks are paid once for it.

Every request ends in one Decision record (agent.decision), written to the audit, the metrics, the
log and the alerts by one function before the answer leaves: a signature that cannot be audited is
not handed out.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import grpc

from signing_agent_client._proto import signer_pb2, signer_pb2_grpc
from agent.bots import cert_fingerprint
from agent.custody import CustodyError, Keyring, KeyNotFound, KeyRevoked, TokenCredential, TokenUnavailable
from agent.decision import Decision, StreamTally, emit, emit_batch
from agent.exchanges import exchange_for
from agent.guard import Caller, Guard
from agent.logs import get_logger
from agent.metrics import Metrics
from agent.names import InvalidName, validate_label
from agent.nonces import NonceError, NonceStore, NonceStoreUnavailable
from agent.policy import KeyPolicy, Refusal
from agent.send.hosts import NoHost
from agent.send.sender import Job, Sender, SendError
from agent.send.ticket import SEND, SIGN, Ticket
from agent.rules.forbidden import is_read
from agent.rules.view import view
from agent.schemes import (
    Environment,
    RawBody,
    RequestInvalid,
    SignedRequest,
    UnknownExchange,
    UnsignedRequest,
    UnsupportedKey,
)
from signing_agent_client.request import METHODS

if TYPE_CHECKING:
    from agent.custody.keyring import KeyEntry
    from agent.exchanges.record import Exchange

# How far ahead of the agent's clock a caller's timestamp_ms may be (clock skew between hosts).
MAX_FUTURE_MS = 60_000


def request_from_proto(msg: signer_pb2.SignRequest) -> UnsignedRequest:
    which = msg.WhichOneof("body")
    body: Any
    if which == "fields":
        body = tuple([(p.name, p.value) for p in msg.fields.items])  # a list first: no generator per item
    elif which == "raw":
        body = RawBody(msg.raw)
    else:
        body = None
    return UnsignedRequest(msg.method, msg.path, tuple([(p.name, p.value) for p in msg.query]), body)


def signed_to_proto(signed: SignedRequest) -> signer_pb2.SignedRequest:
    out = signer_pb2.SignedRequest()
    _write_signed(out, signed)
    return out


def _write_signed(out: signer_pb2.SignedRequest, signed: SignedRequest) -> None:
    """SIGNED written into OUT, a message already where it is sent (a batch's or a stream's result):
    a message built apart and then handed to its parent would be copied whole, headers and body."""
    out.SetInParent()  # present even with every field empty
    out.method, out.path, out.body = signed.method, signed.path, signed.body
    add = out.headers.add
    for name, value in signed.headers:
        add(name=name, value=value)


MAX_BATCH = 1000


class SignerService(signer_pb2_grpc.SignerServicer):
    def __init__(
        self,
        keyring: Keyring,
        nonces: NonceStore,
        guard: Guard,
        metrics: Metrics | None = None,
        clock_ms=lambda: time.time_ns() // 1_000_000,
        sender: Sender | None = None,
    ) -> None:
        self._sender = sender  # None: Send is refused (an agent built without it, as in some tests)
        self._metrics = metrics
        self._keyring = keyring
        self._nonces = nonces
        self._guard = guard
        self._clock_ms = clock_ms
        self._log = get_logger()
        self._cert_fingerprints: dict[bytes, str] = {}

    # -- the RPCs -----------------------------------------------------------------------

    def Sign(self, request: signer_pb2.SignRequest, context: grpc.ServicerContext) -> signer_pb2.SignedRequest:
        caller = self._caller(context)
        outcome = self._decide(caller, request)
        if isinstance(outcome, Failure):
            context.abort(outcome.code, outcome.message)
        return outcome

    def SignBatch(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Each item decided, audited and answered on its own, in order; one RPC for many requests."""
        if not 0 < len(request.requests) <= MAX_BATCH:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"a batch holds 1 to {MAX_BATCH} requests")
        caller = self._caller(context)
        if isinstance(caller, Refusal):  # about the caller, not an item: the whole call fails (audited once)
            outcome = self._decide(caller, request.requests[0])
            context.abort(outcome.code, outcome.message)
        started = time.perf_counter()
        made = [self._decision(caller, item) for item in request.requests]
        shown = emit_batch([decision for decision, _ in made], guard=self._guard, metrics=self._metrics,
                           log=self._log, bot=caller.bot, latency_ms=_ms_since(started))
        answer = signer_pb2.SignBatchResponse()
        add = answer.results.add
        for decision, (_, signed) in zip(shown, made):
            _write_result(add(), decision.status, decision.message, signed)
        return answer

    def SignStream(self, requests: Iterator[signer_pb2.SignRequest],
                   context: grpc.ServicerContext) -> Iterator[signer_pb2.SignResult]:
        """Each message decided as Sign decides it (its own Decision, emitted before its answer is
        sent), answered in order, one at a time. The caller is identified again whenever the bot
        credentials were reloaded, so a bot revoked while its stream is open is refused at its next
        request, and the stream ends (UNAUTHENTICATED, audited as Sign audits it)."""
        bots: object = None
        caller: Caller | Refusal | None = None
        tally: StreamTally | None = None  # the stream's log lines (agent.decision.StreamTally)
        try:
            for msg in requests:
                if self._guard.bots is not bots:
                    bots = self._guard.bots
                    caller = self._caller(context)
                assert caller is not None
                if tally is None:
                    tally = StreamTally(self._log, caller.bot if isinstance(caller, Caller) else "")
                decision, signed = self._decision(caller, msg)
                decision = emit(decision, guard=self._guard, metrics=self._metrics, log=self._log, tally=tally)
                if isinstance(caller, Refusal):  # about the caller, not this request: the stream ends
                    context.abort(grpc.StatusCode[decision.status], decision.message)
                yield _result(decision.status, decision.message, signed)
        finally:  # ended by the bot, by an abort, or cancelled: its last counts are logged
            if tally is not None:
                tally.flush()

    def Send(self, request: signer_pb2.SignRequest, context: grpc.ServicerContext) -> Any:
        """Decide and sign as Sign does (one Decision, audited before anything leaves), then place the
        request (agent.send.sender) and return the exchange's answer, never the signature."""
        if self._sender is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this agent does not send requests (no [send] "
                                                               "transport); call Sign")
        caller = self._caller(context)
        ticket = Ticket(SEND, holds=self._sender.holds)
        outcome = self._decide(caller, request, ticket)
        if isinstance(outcome, Failure):
            context.abort(outcome.code, outcome.message)
        assert ticket.exchange is not None and ticket.entry is not None and ticket.request is not None
        exchange, entry = ticket.exchange, ticket.entry

        def sign(again: UnsignedRequest) -> SignedRequest:  # retries and lookups: fresh stamps, no rules
            return self._sign_with(exchange, entry, again, 0, self._clock_ms())

        job = Job(exchange=exchange.id, base_url=ticket.base_url, request=ticket.request, signed=outcome, sign=sign,
                  read=is_read(view(exchange, ticket.request)), client_id=ticket.client_id,
                  client_ids=ticket.client_ids)
        who = {"bot": caller.bot if isinstance(caller, Caller) else "", "key": request.key[:64],
               "method": ticket.request.method, "path": ticket.request.path[:256]}
        try:
            delivered = self._sender.place(job, who)
        except SendError as exc:
            context.abort(grpc.StatusCode[exc.code], str(exc))
        except Exception as exc:  # signing a retry or a lookup: the statuses Sign would give
            code, message = _status_for(exc)
            context.abort(code, message)
        answer = delivered.answer
        return signer_pb2.ExchangeResponse(
            status=answer.status, headers=[signer_pb2.Header(name=n, value=v) for n, v in answer.headers],
            body=answer.body, client_order_id=delivered.client_id or "", reconciled=delivered.reconciled)

    # -- one decision -------------------------------------------------------------------

    def _caller(self, context: grpc.ServicerContext) -> Caller | Refusal:
        """Who is calling: a bearer token in the metadata, or a verified mTLS client certificate."""
        bearer = None
        for name, value in context.invocation_metadata() or ():
            if name == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                bearer = token.strip() if scheme.lower() == "bearer" else ""
                break
        fingerprint = None
        certs = (context.auth_context() or {}).get("x509_pem_cert")
        if certs:
            pem = certs[0]
            fingerprint = self._cert_fingerprints.get(pem)
            if fingerprint is None:
                fingerprint = cert_fingerprint(pem)
                if len(self._cert_fingerprints) > 1024:
                    self._cert_fingerprints.clear()
                self._cert_fingerprints[pem] = fingerprint
        try:
            return self._guard.identify(bearer, fingerprint)
        except Refusal as refusal:
            return refusal

    def _decide(self, caller: Caller | Refusal, msg: signer_pb2.SignRequest,
                ticket: Ticket | None = None) -> "signer_pb2.SignedRequest | SignedRequest | Failure":
        """One request, start to end: decide it, then one Decision to every sink (agent.decision.emit)
        before the answer leaves. With a Send TICKET, the signed request itself is returned (for the
        sender), not its message."""
        decision, signed = self._decision(caller, msg, ticket)
        decision = emit(decision, guard=self._guard, metrics=self._metrics, log=self._log)
        if decision.status != "OK":
            return Failure(grpc.StatusCode[decision.status], decision.message)
        assert signed is not None
        return signed if ticket is not None else signed_to_proto(signed)

    def _decision(self, caller: Caller | Refusal, msg: signer_pb2.SignRequest,
                  ticket: Ticket | None = None) -> tuple[Decision, SignedRequest | None]:
        """Validate once, admit, find the key, the rules (delivery and guardrails among them), sign:
        the Decision (not yet emitted) and the signed request (None unless signed). Sign, SignBatch
        and SignStream pass no TICKET (Sign's delivery rules); a batch emits its items' decisions
        together (agent.decision.emit_batch), the others one by one (emit)."""
        started = time.perf_counter()
        who = {"bot": caller.bot if isinstance(caller, Caller) else "", "key": msg.key, "method": msg.method,
               "path": msg.path}  # as sent: emit() cuts them to size for the sinks
        digest = ""  # the policy that decided, once the caller is admitted
        try:
            if isinstance(caller, Refusal):
                raise caller
            now_ms = self._clock_ms()
            request = self._validated(msg, now_ms)
            policy, key_policy = self._guard.admit(caller, msg.key)
            digest = policy.digest
            exchange, symbols, signed = self._sign(msg.key, request, msg.timestamp_ms, now_ms, key_policy, caller.bot,
                                                   ticket)
            return Decision(**who, status="OK", exchange=exchange, symbols=symbols, policy_digest=digest,
                            latency_ms=_ms_since(started)), signed
        except Refusal as exc:
            return Decision(**who, status=exc.code, refusal=exc, message=str(exc), policy_digest=digest,
                            latency_ms=_ms_since(started)), None
        except Exception as exc:
            code, message = _status_for(exc)
            # Admitted (granted, with a policy) yet NOT_FOUND: the key is gone from the token.
            return Decision(**who, status=code.name, message=message, policy_digest=digest,
                            revoked_key=bool(digest) and code == grpc.StatusCode.NOT_FOUND,
                            latency_ms=_ms_since(started)), None

    @staticmethod
    def _validated(msg: signer_pb2.SignRequest, now_ms: int) -> UnsignedRequest:
        """The caller's stamp, the key label and the request's shape, checked once (schemes do not check again)."""
        if msg.timestamp_ms < 0 or msg.timestamp_ms > now_ms + MAX_FUTURE_MS:
            # A future instant would also move the key's nonces forward for good.
            raise RequestInvalid(
                "timestamp_ms must be milliseconds since the epoch, at most "
                f"{MAX_FUTURE_MS // 1000} s ahead of the agent's clock (0: the agent's clock)"
            )
        try:
            validate_label(msg.key)
        except InvalidName as exc:
            raise RequestInvalid(f"key: {exc}") from None
        # The shape every exchange shares; the key's exchange narrows the methods (agent.policy.check_method).
        return request_from_proto(msg).validated(METHODS)

    def _sign(
        self, label: str, request: UnsignedRequest, timestamp_ms: int, now_ms: int, key_policy: KeyPolicy, bot: str = "",
        ticket: Ticket | None = None,
    ) -> tuple[str, tuple[str, ...], SignedRequest]:
        """Find the key, apply the rules that need its exchange and age (and its rate), and sign.

        Returns the key's exchange id, the symbols the request names, and the signed request.
        When the key's handle dies while signing (KeyRevoked: the key was revoked, rotated under the
        same label, or the session reopened) the key is looked up once more and the request signed
        again, WITHOUT running the rules or charging the rate again: they decided on the request and
        on the key's exchange and creation date, which the retry checks are unchanged (a label that
        now names a key of another exchange or date is checked again, still without a rate charge).
        A revoked key is then NOT_FOUND.
        """
        entry, exchange = self._lookup(label)
        # Delivery (Sign or Send, and what the key's exchange leaves unsigned); Send's client order id.
        ticket = ticket or Ticket(SIGN)  # any caller that is not Send: Sign's delivery rules
        request = ticket.admit(key_policy, exchange, entry, request)
        symbols = self._guard.check(key_policy, exchange=exchange, created=entry.info.created,
                                    request=request, timestamp_ms=timestamp_ms, now_ms=now_ms, bot=bot)
        try:
            return exchange.id, symbols, self._sign_with(exchange, entry, request, timestamp_ms, now_ms)
        except KeyRevoked:
            pass
        again, exchange_again = self._lookup(label)
        ticket.exchange, ticket.entry = exchange_again, again  # a Send's retries and lookups sign with this one
        if (exchange_again.id, again.info.created) != (exchange.id, entry.info.created):
            symbols = self._guard.check(key_policy, exchange=exchange_again, created=again.info.created,
                                        request=request, timestamp_ms=timestamp_ms, now_ms=now_ms, charge_rate=False)
        return exchange_again.id, symbols, self._sign_with(exchange_again, again, request, timestamp_ms, now_ms)

    def _lookup(self, label: str) -> tuple[KeyEntry, "Exchange"]:
        """The key in the token and its exchange's record; KeyNotFound, or CustodyError saying what to do."""
        entry = self._keyring.lookup(label)
        if not entry.info.registered:
            raise CustodyError(
                f"key {label!r} has no API key id yet: register its public key with {entry.info.exchange}, "
                f"then run `signing-agent keys register --label {label} --api-key ...`"
            )
        try:
            return entry, exchange_for(entry.info.exchange)
        except UnknownExchange:
            raise CustodyError(
                f"key {label!r} is for exchange {entry.info.exchange!r}, which this agent version cannot sign for"
            ) from None

    def _sign_with(
        self, exchange: "Exchange", entry: KeyEntry, request: UnsignedRequest, timestamp_ms: int, now_ms: int
    ) -> SignedRequest:
        env = Environment(now_ms=timestamp_ms or now_ms, random_bytes=os.urandom)
        return exchange.scheme.sign(request, TokenCredential(self._keyring, entry, self._nonces), env)


def _result(status: str, message: str, signed: SignedRequest | None) -> signer_pb2.SignResult:
    """One stream message's answer: the signed request, or the refusal's status and message."""
    out = signer_pb2.SignResult()
    _write_result(out, status, message, signed)
    return out


def _write_result(out: signer_pb2.SignResult, status: str, message: str, signed: SignedRequest | None) -> None:
    """One item's answer written into OUT (a batch's result in place, or a stream's message)."""
    if status != "OK" or signed is None:
        out.refused.CopyFrom(signer_pb2.Refusal(code=status, message=message))
    else:
        _write_signed(out.signed, signed)


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    message: str


def _status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message for an exception raised while signing."""
    if isinstance(exc, RequestInvalid):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, KeyNotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    # The nonce store's (agent.nonces; they reach here through TokenCredential.nonce unchanged):
    # its directory unusable right now is UNAVAILABLE, no nonce issuable safely FAILED_PRECONDITION.
    if isinstance(exc, (TokenUnavailable, NonceStoreUnavailable)):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, (CustodyError, NonceError, UnsupportedKey, NoHost)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    # A bug. Its text is not echoed: nothing unreviewed leaves the agent.
    get_logger().error("sign.bug", error=type(exc).__name__, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the agent log"


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
