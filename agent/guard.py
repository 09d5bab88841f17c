"""The guard: policy and credentials in force, reloaded live, with the state decisions need.

`agent.policy` decides from what it is given (pure); the guard holds what changes while the
agent runs: the current policy and bot credentials (re-read within RELOAD_INTERVAL of a
change to either file, or polled from PostgreSQL by agent.bots_db.BotsWatch, or at once on SIGHUP; a bad file is rejected and the old one stays),
rate buckets, the symbols each key has traded, and the alert throttle. The service asks it
who is calling (`identify`), whether a request may be signed (`admit`, then `check` once the
key's exchange is known: the rules themselves are agent.policy.evaluate, pure; the guard adds
the key's rate and the age-warning throttle) and tells it the outcome (`record`, from
agent.decision.emit: audit line, alerts, symbol history).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from agent.alerts import AlertSender
from agent.audit import AuditLog
from agent.bots import Bots, BotsFileError, load_bots
from agent.budgets import Ledgers
from agent.guardrails import Guardrails
from agent.logs import get_logger
from agent.rates import RateTableFull, SharedBuckets
from agent.policy import (
    RESOURCE_EXHAUSTED,
    BotPolicy,
    KeyPolicy,
    Policy,
    PolicyError,
    Refusal,
    evaluate,
    load_policy,
)
from agent.quorum import QuorumError
from signing_agent_client.request import UnsignedRequest

if TYPE_CHECKING:
    from agent.bots_db import BotsWatch
    from agent.quorum import Event, QuorumSource
    from agent.decision import Decision
    from agent.exchanges.record import Exchange
    from agent.market import MarketSettings

RELOAD_INTERVAL = 0.25  # revocation (of a bot, or of a key in the policy) is in force within a second
UNAUTHENTICATED = "UNAUTHENTICATED"
UNAVAILABLE = "UNAVAILABLE"
# A symbol is "new" to a key for this long after its first signed request; bursts on new symbols alert.
NEW_SYMBOL_SECONDS = 3600
BURST_WINDOW = 10.0
BURST_COUNT = 5
ALERT_EVERY = 1.0  # the same alert (kind, bot, key, rule) at most once a second; repeats are counted
ALERT_SLOTS = 10_000  # the throttle's memory is bounded: past this, it starts afresh
SYMBOLS_PER_KEY = 1_000  # new-symbol tracking stops there (a bot with no symbol list cannot grow it forever)
# Calls with no valid credential are audited up to this rate; beyond it they are still refused, and
# counted into the next audited line, so a flood cannot fill the disk (which would stop all signing).
UNAUTHENTICATED_AUDIT_PER_SECOND = 20.0


class AuditUnavailable(Exception):
    """The audit log cannot be written: the agent signs nothing it cannot audit."""


@dataclass(frozen=True)
class Caller:
    bot: str


class Watched:
    """A small file polled by content (SHA-256): no same-size, same-tick rewrite goes unnoticed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = self._stat()

    def _stat(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def changed(self) -> bool:
        now = self._stat()
        if now != self.seen:
            self.seen = now
            return True
        return False


class SymbolHistory:
    """When each key first signed on each symbol; kept in the state dir so restarts remember."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / "symbols.json"
        self._lock = threading.Lock()
        try:
            data = json.loads(self._path.read_text())
            self._first: dict[str, dict[str, float]] = {k: dict(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            self._first = {}

        self._dirty = False

    def first_seen(self, label: str, symbol: str, now: float) -> float | None:
        """When LABEL first signed on SYMBOL (NOW if this is the first time); None once the key's
        history is full. Written to disk by `flush`, off the signing path."""
        with self._lock:
            per_key = self._first.setdefault(label, {})
            if symbol in per_key:
                return per_key[symbol]
            if len(per_key) >= SYMBOLS_PER_KEY:
                return None
            per_key[symbol] = now
            self._dirty = True
            return now

    def flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            self._save()

    def _save(self) -> None:
        tmp = self._path.with_name(f".symbols.{os.getpid()}.tmp")
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._first, separators=(",", ":")))
            os.replace(tmp, self._path)
        except OSError as exc:  # alerts on new symbols are best effort; signing goes on
            get_logger().warning("symbols.save_failed", error=exc.strerror)


class Guard:
    def __init__(
        self,
        *,
        policy_path: Path,
        bots_path: Path,
        state_dir: Path,
        audit: AuditLog | None,
        alerts: AlertSender,
        wall_clock: Callable[[], float] = time.time,
        started: dict[str, Any] | None = None,
        quorum: "QuorumSource | None" = None,
        vet: Callable[[Policy], None] | None = None,
        market: "MarketSettings | None" = None,
        shared_buckets_dsn: str | None = None,
        sync_budgets: bool = True,
        shared_bots: "BotsWatch | None" = None,
    ) -> None:
        # VET: checks that need more than the file (agent.delivery: the keys' exchanges, from the
        # token); raises PolicyError to refuse a policy at start and on reload, as a parse error would.
        self._vet = vet or (lambda policy: None)
        self._policy_file, self._bots_file = Watched(policy_path), Watched(bots_path)
        self._audit, self._alerts = audit, alerts
        self._wall = wall_clock
        self._log = get_logger()
        # With a quorum, policy and credentials come only from bundles k operators approved
        # (agent.quorum); the two files are then drafts for `policy propose`, never read here.
        self._quorum = quorum
        # Several hosts: credentials from the database they share (agent.bots_db), polled on its own thread.
        self._shared_bots = shared_bots
        bundle_events = []
        if quorum is not None:
            try:
                bundle_events = quorum.start()
            except QuorumError as exc:
                raise PolicyError(str(exc)) from None
            self.policy, self.bots = quorum.policy, quorum.bots
        else:
            self.policy: Policy = load_policy(policy_path)  # PolicyError at start: the agent does not start
            if shared_bots is None:
                try:
                    self.bots = load_bots(bots_path)
                except BotsFileError as exc:
                    raise PolicyError(str(exc)) from None
        self._vet(self.policy)  # from a file or a bundle alike: a refused policy stops the start
        self._lock = threading.Lock()
        self._buckets: Any = SharedBuckets(state_dir / "rates.bin")
        ledgers: Any = None
        if shared_buckets_dsn is not None:
            # Several hosts: key, bot and order rates, and notional budgets, in PostgreSQL (agent.shared_state).
            from agent.freeze_pg import SharedFreezes
            from agent.shared_state import PostgresBuckets, PostgresLedgers

            self._buckets = PostgresBuckets(shared_buckets_dsn, local=self._buckets)
            ledgers = PostgresLedgers(shared_buckets_dsn)
            # and freezes: one made on any host stops orders on every host (agent.freeze_pg)
            shared_freezes = SharedFreezes(shared_buckets_dsn)
        else:
            ledgers = Ledgers(state_dir, sync=sync_budgets)  # one host: the state dir's journal (agent.budgets)
            shared_freezes = None
        # Freezes, market checks, order rates, budgets (agent.guardrails).
        self.guardrails = Guardrails(state_dir, buckets=self._buckets, market=market, alert=self._alert,
                                     audit=self._audit_append, ledgers=ledgers, shared_freezes=shared_freezes)
        self._bursts: dict[tuple[str, str], deque[float]] = {}
        self._last_alert: dict[tuple[str, ...], tuple[float, int]] = {}
        self._age_warned: dict[str, float] = {}
        self._symbols = SymbolHistory(state_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unaudited = 0
        for warning in self.policy.warnings:
            self._log.warning("policy.warning", detail=warning)
        # Which code (version, commit, dependency lock digest: agent.buildinfo), and which policy and
        # bots were in force from the start, in the chain.
        if started is not None:
            self._audit_append("agent.start", **started)
        self._bundle_events(bundle_events)
        self._audit_append("policy.load", decision="applied", digest=self.policy.digest)
        self._audit_append("bots.load", decision="applied", bots=list(self.bots.names))

    # -- live reload ------------------------------------------------------------------

    @property
    def bots(self) -> Bots:
        """The credentials in force. A new object at every change, so a caller identified once (a stream)
        can tell when to identify it again."""
        shared = self._shared_bots
        if self._quorum is not None and (stale := self._quorum.stale_bots()) is not None:
            return stale  # bundles from a database that stopped answering: a revocation could be missed
        return self._bots if shared is None else shared.current()

    @bots.setter
    def bots(self, bots: Bots) -> None:
        self._bots = bots

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="policy-watch", daemon=True)
        self._thread.start()
        if self._shared_bots is not None:
            self._shared_bots.start(self._shared_bots_changed)

    def _shared_bots_changed(self, changed: list[str], reason: str) -> None:
        # The names that changed, not every name: a platform's database holds many bots, and each change
        # would otherwise copy all of them into every host's audit.
        count = len(self.bots.names)
        self._log.info("bots.reloaded", bots=count, changed=changed[:100])
        self._audit_append("bots.reload", decision="applied", count=count, changed=changed, reason=reason)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._shared_bots is not None:
            self._shared_bots.stop()
        if self._quorum is not None:
            self._quorum.close()
        self._symbols.flush()
        self._alerts.close()
        self.guardrails.close()
        self._buckets.close()

    def _watch(self) -> None:
        while not self._stop.wait(RELOAD_INTERVAL):
            self.reload(only_changed=True)
            self.guardrails.poll()
            self._symbols.flush()

    def reload(self, *, only_changed: bool = False, reason: str = "file changed") -> None:
        if self._quorum is not None:
            try:
                events = self._quorum.poll()
            except Exception as exc:  # noqa: BLE001 - a bad file must never stop the watch (brakes ride on it)
                self._log.error("policy.bundle", decision="error", reason=type(exc).__name__)
                self._alert("policy-rejected", reason=f"the bundle directory could not be read: {type(exc).__name__}")
                return
            if self._bundle_events(events):
                try:  # approved is not enough: a bundle that hands out unbound signatures stays out
                    self._vet(self._quorum.policy)
                except PolicyError as exc:
                    self._log.error("policy.rejected", reason=str(exc))
                    self._audit_append("policy.reload", decision="rejected", reason=str(exc)[:500])
                    self._alert("policy-rejected", reason=str(exc)[:500])
                    return
                self.policy, self.bots = self._quorum.policy, self._quorum.bots  # each one whole, as below
                self._log.info("policy.reloaded", digest=self.policy.digest, keys=len(self.policy.keys),
                               bots=len(self.policy.bots))
            return
        if not only_changed or self._policy_file.changed():
            try:
                policy = load_policy(self._policy_file.path)
                self._vet(policy)
            except PolicyError as exc:
                self._log.error("policy.rejected", reason=str(exc))
                self._audit_append("policy.reload", decision="rejected", reason=str(exc)[:500])
                self._alert("policy-rejected", reason=str(exc)[:500])
            else:
                self.policy = policy  # one reference assignment: requests see the old or the new, whole
                for warning in policy.warnings:
                    self._log.warning("policy.warning", detail=warning)
                self._log.info("policy.reloaded", digest=policy.digest, keys=len(policy.keys), bots=len(policy.bots))
                self._audit_append("policy.reload", decision="applied", digest=policy.digest, reason=reason)
        if self._shared_bots is None and (not only_changed or self._bots_file.changed()):
            try:
                bots = load_bots(self._bots_file.path)
            except BotsFileError as exc:
                self._log.error("bots.rejected", reason=str(exc))
                self._audit_append("bots.reload", decision="rejected", reason=str(exc)[:500])
                self._alert("policy-rejected", reason=str(exc)[:500])
            else:
                self.bots = bots
                self._log.info("bots.reloaded", bots=len(bots.names))
                self._audit_append("bots.reload", decision="applied", bots=list(bots.names), reason=reason)

    def _bundle_events(self, events: "list[Event]") -> bool:
        """Audit (and alert on refusals of) what the quorum source did; True if a bundle was applied."""
        applied = False
        for event in events:
            fields = {"version": event.version, "digest": event.digest, "proposer": event.proposer}
            if event.decision == "applied":
                applied = True
                self._log.info("policy.bundle", decision="applied", change=event.change, **fields)
                self._audit_append("policy.bundle", decision="applied", change=event.change,
                                   approvers=list(event.approvers), **fields)
            else:
                self._log.error("policy.bundle", decision="refused", reason=event.reason, **fields)
                self._audit_append("policy.bundle", decision="refused", reason=event.reason, **fields)
                self._alert("policy-rejected", reason=event.reason)
        return applied

    # -- decisions --------------------------------------------------------------------

    def identify(self, bearer: str | None, cert_sha256: str | None) -> Caller:
        """The bot behind a bearer token or a verified client certificate (its SHA-256 fingerprint)."""
        bots = self.bots
        if bots.unavailable is not None:
            raise Refusal(bots.unavailable_rule, bots.unavailable, UNAVAILABLE)
        if cert_sha256 is not None:
            found = bots.by_certificate(cert_sha256)
            if found is not None:
                return Caller(found.name)
            # Over mTLS the certificate is the credential: an unregistered one is refused, whatever
            # token comes with it.
            raise Refusal("auth", "the client certificate is not registered for any bot "
                                  "(`signing-agent bots add NAME --cert FILE`)", UNAUTHENTICATED)
        if bearer is not None:
            found = bots.by_bearer(bearer)
            if found is not None:
                return Caller(found.name)
            raise Refusal("auth", "the bearer token is not a known bot's (revoked, or mistyped)", UNAUTHENTICATED)
        raise Refusal("auth", "no credential: send 'authorization: Bearer <token>' metadata "
                              "(create one with `signing-agent bots add NAME`)", UNAUTHENTICATED)

    def admit(self, caller: Caller, label: str) -> tuple[Policy, KeyPolicy]:
        """The checks that need no key: grant, the bot's rate, a policy for the key."""
        policy = self.policy
        bot: BotPolicy | None = policy.bots.get(caller.bot)
        if bot is None or not bot.may_use(label):
            raise Refusal("grant", f"bot {caller.bot!r} is not granted key {label[:64]!r} in the policy")
        if bot.rate_per_second is not None:
            self._take(("bot", bot.name), bot.rate_per_second, bot.burst or 1, "rate:bot",
                       f"bot {bot.name!r} is over its {bot.rate_per_second:g} requests per second")
        key_policy = policy.for_key(label)
        if key_policy is None:
            raise Refusal("policy", f"key {label[:64]!r} has no [keys.{label[:64]}] table in the policy")
        return policy, key_policy

    def check(
        self, key_policy: KeyPolicy, *, exchange: "Exchange", created: str, request: UnsignedRequest, timestamp_ms: int,
        now_ms: int, charge_rate: bool = True, bot: str = "",
    ) -> tuple[str, ...]:
        """Every rule about the request itself (agent.policy.evaluate, pure), then the state around
        them: the age-warning alert (at most hourly per key) and the key's rate. Returns the symbols
        the request names (for the audit); raises the Refusal (or RequestInvalid) that refused it.

        EXCHANGE: the key's exchange record (agent.exchanges), whose rules read the request.
        CHARGE_RATE: take from the key's rate, and run the guardrails over time (agent.guardrails:
        freeze, order rates, notional budgets), once per request. BOT: the caller, for its freezes and budgets.
        """
        verdict = evaluate(key_policy, exchange, request, created=created, timestamp_ms=timestamp_ms, now_ms=now_ms)
        if verdict.age_warning:
            self._warn_age(key_policy.label, verdict.age_warning)
        if verdict.refusal is not None:
            raise verdict.refusal
        if charge_rate and key_policy.rate_per_second is not None:
            self._take(("key", key_policy.label), key_policy.rate_per_second, key_policy.burst or 1, "rate:key",
                       f"key {key_policy.label!r} is over its {key_policy.rate_per_second:g} requests per second")
        if charge_rate:
            self.guardrails.check(bot=self.policy.bots.get(bot), bot_name=bot, key_policy=key_policy,
                                  exchange=exchange, verdict=verdict, now=self._wall())
        return verdict.symbols

    def _take(self, slot: tuple[str, str], rate: float, burst: int, rule: str, message: str) -> None:
        try:
            allowed = self._buckets.take(f"{slot[0]}:{slot[1]}", rate, burst)
        except RateTableFull as exc:
            raise Refusal(rule, str(exc), RESOURCE_EXHAUSTED) from None
        if not allowed:
            raise Refusal(rule, message, RESOURCE_EXHAUSTED)

    # -- outcomes ---------------------------------------------------------------------

    def record(self, decision: "Decision") -> None:
        """Audit DECISION (already redacted: agent.decision.emit); alert on refusals, revoked or expired
        keys, rate limits, new-symbol bursts; note the symbols a signed request traded.

        Raises AuditUnavailable when a signature cannot be audited: the caller must not hand it out.
        """
        failed = self.record_many([decision])
        if failed is not None and decision.outcome == "signed":
            raise failed

    def record_many(self, decisions: "list[Decision]") -> AuditUnavailable | None:
        """`record` for the decisions of one batch: each its own audit line, the lines appended as one
        group (one lock, one write), then each decision's alerts and symbols. Returns the
        AuditUnavailable when the group cannot be written (its signed items must not be handed out;
        their symbols are not noted), None when it was."""
        records = [entry for entry in map(self._audit_entry, decisions) if entry is not None]
        audited = self._audit_append_many(records)
        for d in decisions:
            if audited or d.outcome != "signed":
                self._after(d)
        if audited:
            return None
        return AuditUnavailable("the audit log cannot be written, so nothing is signed; see the agent log")

    def _audit_entry(self, d: "Decision") -> tuple[str, dict[str, Any]] | None:
        """The audit record of D; None when it is not audited (an unauthenticated call over the
        audit rate: still refused, counted into the next audited line)."""
        refusal = d.refusal
        extra: dict[str, Any] = {}
        if refusal is not None and refusal.code == UNAUTHENTICATED:
            if not self._buckets.take("audit:unauthenticated", UNAUTHENTICATED_AUDIT_PER_SECOND,
                                      int(UNAUTHENTICATED_AUDIT_PER_SECOND)):
                with self._lock:
                    self._unaudited += 1
                return None
            with self._lock:
                extra["unaudited_before"], self._unaudited = self._unaudited, 0
        rule = d.rule or ("" if d.status == "OK" else d.status.lower())
        return "sign", dict(bot=d.bot, key=d.key, exchange=d.exchange, method=d.method, path=d.path,
                            symbols=list(d.symbols), decision=d.outcome, rule=rule, status=d.status,
                            latency_ms=d.latency_ms, policy=d.policy_digest[:16], **extra)

    def _after(self, d: "Decision") -> None:
        """What follows a decision's audit line: alerts, and the symbols a signed request traded."""
        refusal = d.refusal
        if refusal is not None:
            kind = ("rate-limit" if refusal.code == RESOURCE_EXHAUSTED else
                    "expired-key" if refusal.rule in ("expired", "key-age", "not-before") else
                    "unauthenticated" if refusal.rule == "auth" else "refusal")
            self._alert(kind, bot=d.bot, key=d.key, rule=refusal.rule, method=d.method, path=d.path,
                        reason=refusal.message)
        elif d.revoked_key:
            self._alert("revoked-key", bot=d.bot, key=d.key, method=d.method, path=d.path,
                        reason=f"key {d.key!r} is granted but no longer in the token (revoked?)")
        elif d.outcome == "signed":
            for symbol in d.symbols:
                self._note_symbol(d.bot, d.key, symbol)

    def record_send(self, **fields: Any) -> None:
        """Audit what came of a request the agent sent (agent.send.sender), beside its "sign" line.
        Best effort: the request is already out, and a failed write is logged and alerted."""
        self._audit_append("send", **fields)

    def _note_symbol(self, bot: str, key: str, symbol: str) -> None:
        now = self._wall()
        first = self._symbols.first_seen(key, symbol, now)
        if first is None or now - first > NEW_SYMBOL_SECONDS:
            return
        with self._lock:
            window = self._bursts.setdefault((key, symbol), deque())
            window.append(now)
            while window and now - window[0] > BURST_WINDOW:
                window.popleft()
            burst = len(window) >= BURST_COUNT
            if burst:
                window.clear()
        if burst:
            self._alert("symbol-burst", bot=bot, key=key, symbol=symbol,
                        reason=f"{BURST_COUNT} or more requests in {BURST_WINDOW:g} s on {symbol}, "
                               f"a symbol key {key!r} had not traded before")

    def _warn_age(self, label: str, message: str) -> None:
        now = self._wall()
        with self._lock:
            if now - self._age_warned.get(label, 0.0) < 3600:
                return
            self._age_warned[label] = now
        self._alert("key-age-warning", key=label, reason=message)

    def _alert(self, kind: str, **fields: Any) -> None:
        if kind == "unauthenticated":  # the caller chose the key label: it must not defeat the throttle
            signature: tuple[str, ...] = (kind,)
        else:
            signature = (kind, str(fields.get("bot", "")), str(fields.get("key", "")), str(fields.get("rule", "")))
        now = time.monotonic()
        with self._lock:
            if len(self._last_alert) > ALERT_SLOTS:
                self._last_alert.clear()
            last, suppressed = self._last_alert.get(signature, (-ALERT_EVERY, 0))
            if now - last < ALERT_EVERY:
                self._last_alert[signature] = (last, suppressed + 1)
                return
            self._last_alert[signature] = (now, 0)
        self._alerts.alert(kind, **fields, **({"repeats_suppressed": suppressed} if suppressed else {}))

    def _audit_append(self, event: str, **fields: Any) -> bool:
        """Append to the audit; False (logged and alerted, never silent) when it cannot be written."""
        return self._audit_append_many([(event, fields)])

    def _audit_append_many(self, records: list[tuple[str, dict[str, Any]]]) -> bool:
        """Append RECORDS as one group; False (logged and alerted, never silent) when they cannot be written."""
        if self._audit is None or not records:
            return True
        try:
            self._audit.append_many(records)
        except (OSError, ValueError) as exc:
            error = getattr(exc, "strerror", None) or type(exc).__name__
            self._log.error("audit.write_failed", error=error)
            self._alert("audit-failed", reason=f"cannot write the audit log: {error}")
            return False
        return True

