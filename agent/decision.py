"""One decision, one record: what the audit, the metrics, the log and the alerts are told.

The service builds one `Decision` per request (signed or refused, whatever stopped it) and hands
it to `emit`, which writes it to every sink in one place:

    audit    one "sign" line (agent.guard.Guard.record: throttled for unauthenticated callers)
    alerts   refusals, rate limits, expired and revoked keys, new-symbol bursts (the guard's throttle)
    metrics  signing_agent_sign / signing_agent_sign_seconds (agent.metrics)
    log      one structured "sign" line

Redaction happens once, here, at the sink (`Decision.redacted`): the record carries what the
caller sent, and nothing of it is written before it is cut to size, the path never with a query
(it could carry a signature).

A batch (`emit_batch`) goes to the same sinks with each sink's fixed cost paid once: every item
still gets its own chained audit line, but the lines are written as one group; metrics are
counted once for the batch; the log gets one line for the batch (with its counts) plus one per
refusal, not a formatted line per signature. A SignStream's log is paid the same way over time
(`StreamTally`): one "sign.stream" line with its counts at most every second and at its end, plus
one per refusal; its audit lines and metrics stay one per message, written before each answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from agent.guard import AuditUnavailable

if TYPE_CHECKING:
    from agent.guard import Guard
    from agent.metrics import Metrics
    from agent.policy import Refusal

SIGNED, REFUSED = "signed", "refused"
# What the caller sent is cut to these sizes before any sink sees it.
MAX_KEY, MAX_METHOD, MAX_PATH = 64, 16, 256
UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class Decision:
    bot: str  # "" when the caller is not identified
    key: str  # the label the caller asked for
    method: str
    path: str
    status: str  # the gRPC status name: "OK" when signed
    message: str = ""  # what the bot is told when refused ("" when signed)
    refusal: "Refusal | None" = None  # the rule that refused, if a rule did
    exchange: str = ""  # the key's exchange id, once known
    symbols: tuple[str, ...] = ()  # every symbol the request names (for the audit and symbol history)
    latency_ms: float = 0.0
    policy_digest: str = ""  # which policy decided ("" before the caller was admitted)
    revoked_key: bool = False  # granted, but the key is no longer in the token

    @property
    def outcome(self) -> str:
        return SIGNED if self.refusal is None and self.status == "OK" else REFUSED

    @property
    def rule(self) -> str:
        """The rule that refused ("" when none did: signed, or a failure that is not a rule's)."""
        return self.refusal.rule if self.refusal is not None else ""

    def redacted(self) -> "Decision":
        """The record as sinks may write it: caller-chosen text cut to size, the path without a query."""
        if (len(self.key) <= MAX_KEY and len(self.method) <= MAX_METHOD and len(self.path) <= MAX_PATH
                and "?" not in self.path):
            return self  # already fit (the usual case): no copy on the hot path
        return replace(self, key=self.key[:MAX_KEY], method=self.method[:MAX_METHOD],
                       path=self.path.split("?")[0][:MAX_PATH])

    def unaudited(self, message: str) -> "Decision":
        """The same decision when its audit line could not be written: nothing is handed out."""
        return replace(self, status=UNAVAILABLE, message=message)


def emit(decision: Decision, *, guard: "Guard", metrics: "Metrics | None", log: Any,
         tally: "StreamTally | None" = None) -> Decision:
    """Write DECISION to every sink; the decision as answered (UNAVAILABLE when a signature could
    not be audited, which the caller must then not hand out). TALLY: a stream's log (signatures
    counted into its periodic line, refusals one line each), instead of one line per decision."""
    shown = decision.redacted()
    try:
        guard.record(shown)
    except AuditUnavailable as exc:
        shown = shown.unaudited(str(exc))
    if metrics is not None:
        metrics.decision(exchange=shown.exchange, status=shown.status, rule=shown.rule,
                         latency_s=shown.latency_ms / 1000)
    if tally is None:
        _log(log, shown)
    else:
        tally.note(shown)
    return shown


class StreamTally:
    """The log of one SignStream, paid as a batch pays it: each refusal its own "sign" line (as `emit`
    writes it), signatures counted into one "sign.stream" line at most every LOG_EVERY seconds and
    at the stream's end (`flush`). Every message still has its own audit line and metrics."""

    LOG_EVERY = 1.0  # seconds: an open stream shows up in the log at least this often while it signs

    def __init__(self, log: Any, bot: str, clock: Any = time.monotonic) -> None:
        self._log, self._bot, self._clock = log, bot, clock
        self._since = clock()
        self._signed = self._refused = 0

    def note(self, shown: Decision) -> None:
        if shown.status == "OK":
            self._signed += 1
        else:
            self._refused += 1
            _log(self._log, shown)
        if self._clock() - self._since >= self.LOG_EVERY:
            self.flush()

    def flush(self) -> None:
        """The counts since the last line, if any (a stream that ends, or LOG_EVERY passed)."""
        now = self._clock()
        if self._signed or self._refused:
            self._log.info("sign.stream", bot=self._bot, items=self._signed + self._refused, signed=self._signed,
                           refused=self._refused, seconds=round(now - self._since, 3))
        self._since, self._signed, self._refused = now, 0, 0


def emit_batch(decisions: list[Decision], *, guard: "Guard", metrics: "Metrics | None", log: Any, bot: str,
               latency_ms: float) -> list[Decision]:
    """Write the DECISIONS of one batch to every sink, each sink once; the decisions as answered.

    Audit: one chained line per item, written as one group (Guard.record_many); when the group
    cannot be written, every signed item is answered UNAVAILABLE, as `emit` answers one. Metrics:
    once for the batch. Log: one "sign" line per refusal (as `emit` writes it) and one
    "sign.batch" line with the counts, so a batch of signatures does not format a line each.
    """
    shown = [d.redacted() for d in decisions]
    failed = guard.record_many(shown)
    if failed is not None:
        shown = [d.unaudited(str(failed)) if d.outcome == SIGNED else d for d in shown]
    if metrics is not None:
        metrics.decisions([(d.exchange, d.status, d.rule, d.latency_ms / 1000) for d in shown])
    refused = 0
    for d in shown:
        if d.status != "OK":
            refused += 1
            _log(log, d)
    log.info("sign.batch", bot=bot, items=len(shown), signed=len(shown) - refused, refused=refused,
             latency_ms=latency_ms)
    return shown


def _log(log: Any, shown: Decision) -> None:
    who = {"bot": shown.bot, "key": shown.key, "method": shown.method, "path": shown.path}
    if shown.status != "OK":
        log.info("sign", decision=REFUSED, status=shown.status, rule=shown.rule, reason=shown.message,
                 latency_ms=shown.latency_ms, **who)
    else:
        log.info("sign", decision=SIGNED, exchange=shown.exchange, latency_ms=shown.latency_ms, **who)
