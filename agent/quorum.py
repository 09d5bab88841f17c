"""Policy published by k of n operators: no single person loosens what the agent signs.

Without a quorum, whoever can write `policy.toml` or `bots.toml` decides alone what the agent
signs, within a second (the live reload). With `[quorum]` in the config, the agent ignores those
files and takes its policy and bot credentials only from **bundles** in a directory (with several
hosts, in the PostgreSQL database they share: agent.quorum_pg, which only carries them):

    bundle = body + approvals
    body   = {format, version, previous, created, expires, proposer, summary,
              policy (the policy file's text), bots (the bots file's text),
              operators {name: "ed25519:<base64 public key>"}, threshold}
    digest = SHA-256 of the body's canonical JSON (sorted keys, no spaces, UTF-8)
    approval = {operator, signature}: Ed25519 over b"signing-agent bundle v1\\n" + digest (hex)

A bundle is applied only when, against the bundle in force:
  - its version is higher (no rollback to an older, looser policy) and `previous` is the digest
    in force (it chains: it was written against what is in force, not against something else);
  - it has not expired, was not created ahead of this host's clock (beyond MAX_CLOCK_SKEW) and is
    valid for at most MAX_EXPIRY from its creation (an approval is for a change now, not a change
    kept for later);
  - every approval is by a distinct operator of the set in force and verifies (a forged or
    duplicated signature refuses the whole bundle: it is an attack, not a miscount);
  - its proposer is an operator in force and signed it; that signature is the proposer's approval;
  - it has enough approvals: one when the change only tightens, `threshold` when it loosens
    anything. Which it is, the agent decides by comparing the two policies field by field
    (`loosenings`), not from a label on the proposal; a change that does both is loosening,
    and a field this module does not know how to compare counts as loosening when it changes.
Anything else is refused: the policy in force stays; the refusal is audited and alerted.

The first operator set and threshold come from the config (`[quorum.operators]`); after that the
set is what the bundle in force says, and changing it (adding or removing an operator, the
threshold) is a loosening that needs the threshold of the set in force. The highest version
applied is recorded in the state directory, so a bundle directory rolled back (bundles deleted
or replaced) stops the agent from starting instead of loading an older policy. The same record
says that this agent runs under a quorum and with which first operator set: a config without
`[quorum]`, or with another first set, stops the start (editing the config is one person's act).

Limits (the README's security model says the same): root on the agent host holds the token PIN
and can bypass all of this; the quorum protects against one operator, not against the host.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.bots import Bots, BotsFileError, parse_bots
from agent.limits import Budget, Limits
from agent.names import NAME_RE
from agent.policy import BotPolicy, KeyPolicy, Policy, PolicyError, parse_policy

FORMAT = "signing-agent-bundle/1"
GENESIS = "0" * 64  # the `previous` of the first bundle: nothing was in force before it
SIGNED_PREFIX = b"signing-agent bundle v1\n"  # domain separation: an approval signs nothing else
PUBLIC_PREFIX = "ed25519:"
MAX_BUNDLE_BYTES = 4 * 1024 * 1024
MAX_EXPIRY = timedelta(days=30)
# How far ahead of this host's clock a bundle's `created` may be: the proposer's clock may be a little
# ahead, but a bundle dated later would stretch MAX_EXPIRY (it counts from `created`).
MAX_CLOCK_SKEW = timedelta(minutes=5)
HEAD_FILE = "quorum-head.json"
_BUNDLE_NAME = re.compile(r"v(\d{6,})-([0-9a-f]{16})\.json\Z")
_BODY_KEYS = {"format", "version", "previous", "created", "expires", "proposer", "summary", "policy", "bots",
              "operators", "threshold"}


class QuorumError(Exception):
    """A bundle, proposal or operator key that cannot be used; the message says what to do."""


class BundleRefused(QuorumError):
    """The agent will not apply this bundle; `reason` says why (audited and alerted)."""


# -- operators ----------------------------------------------------------------------------------


def parse_public_key(text: str, *, where: str) -> bytes:
    """The 32 raw bytes of an "ed25519:<base64>" operator public key."""
    if not isinstance(text, str) or not text.startswith(PUBLIC_PREFIX):
        raise QuorumError(f"{where}: an operator key is \"{PUBLIC_PREFIX}<base64>\" "
                          "(printed by `signing-agent operator keygen`)")
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX):], validate=True)
    except ValueError:
        raise QuorumError(f"{where}: the operator key is not valid base64") from None
    if len(raw) != 32:
        raise QuorumError(f"{where}: an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return raw


def public_key_text(raw: bytes) -> str:
    return PUBLIC_PREFIX + base64.b64encode(raw).decode()


def key_id(raw: bytes) -> str:
    """A short, stable name for an operator key in the audit and in messages."""
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Operators:
    keys: dict[str, bytes]  # operator name -> raw Ed25519 public key
    threshold: int

    def __post_init__(self) -> None:
        for name in self.keys:
            if not NAME_RE.fullmatch(name):
                raise QuorumError(f"operator name {name[:64]!r} is invalid: 1-64 letters, digits, '.', '_' or '-'")
        if len(set(self.keys.values())) != len(self.keys):
            raise QuorumError("two operators share one public key: each operator needs a key of their own")
        if not 1 <= self.threshold <= len(self.keys):
            raise QuorumError(f"threshold {self.threshold} must be between 1 and the number of operators "
                              f"({len(self.keys)})")

    @classmethod
    def parse(cls, keys: dict[str, str], threshold: int, *, where: str) -> "Operators":
        if not isinstance(keys, dict) or not keys:
            raise QuorumError(f"{where}: name at least one operator (name = \"ed25519:...\")")
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise QuorumError(f"{where}: threshold must be an integer")
        return cls({name: parse_public_key(text, where=f"{where} operator {name!r}") for name, text in keys.items()},
                   threshold)

    def as_body(self) -> dict[str, str]:
        return {name: public_key_text(raw) for name, raw in sorted(self.keys.items())}

    def ids(self, names: list[str] | tuple[str, ...]) -> list[str]:
        return [f"{name}:{key_id(self.keys[name])}" for name in names]

    @property
    def digest(self) -> str:
        """What the state directory records of the first operator set, to notice it edited later."""
        return hashlib.sha256(canonical({"operators": self.as_body(), "threshold": self.threshold})).hexdigest()

    def key_ids(self) -> dict[str, str]:
        return {name: key_id(raw) for name, raw in sorted(self.keys.items())}


def generate_operator_key(path: Path) -> bytes:
    """A new Ed25519 key in PATH (PKCS#8 PEM, mode 0600, never overwritten); its raw public key."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise QuorumError(f"{path} exists: an operator key is never overwritten (choose another path)") from None
    except OSError as exc:
        raise QuorumError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_operator_key(path: Path) -> Ed25519PrivateKey:
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise QuorumError(f"cannot read operator key {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise QuorumError(f"operator key {path} is readable by group or others: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise QuorumError(f"{path} is not an unencrypted PEM private key (made by `signing-agent operator "
                          "keygen`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise QuorumError(f"{path} is not an Ed25519 key")
    return key


class Signer(Protocol):
    """An operator's key: a file's Ed25519PrivateKey, or one in their token (custody.operator)."""

    def sign(self, data: bytes) -> bytes: ...


# -- bundles ------------------------------------------------------------------------------------


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Approval:
    operator: str
    signature: bytes


@dataclass(frozen=True)
class Bundle:
    body: dict[str, Any]
    approvals: tuple[Approval, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(canonical(self.body)).hexdigest()

    @property
    def version(self) -> int:
        return self.body["version"]

    @property
    def file_name(self) -> str:
        return f"v{self.version:06d}-{self.digest[:16]}.json"

    def signed_bytes(self) -> bytes:
        return SIGNED_PREFIX + self.digest.encode()

    def approved_by(self, operator: str, key: "Signer") -> "Bundle":
        others = tuple(a for a in self.approvals if a.operator != operator)
        return replace(self, approvals=others + (Approval(operator, key.sign(self.signed_bytes())),))

    def to_json(self) -> str:
        return json.dumps({"body": self.body, "approvals": [
            {"operator": a.operator, "signature": base64.b64encode(a.signature).decode()} for a in self.approvals]},
            indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str) -> "Bundle":
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise QuorumError(f"{source}: not JSON ({type(exc).__name__})") from None
        if not isinstance(raw, dict) or set(raw) != {"body", "approvals"}:
            raise QuorumError(f"{source}: a bundle is an object with 'body' and 'approvals' only")
        body, approvals = raw["body"], raw["approvals"]
        if not isinstance(body, dict) or set(body) != _BODY_KEYS:
            raise QuorumError(f"{source}: the body must hold exactly {sorted(_BODY_KEYS)}")
        if body["format"] != FORMAT:
            raise QuorumError(f"{source}: format {str(body['format'])[:40]!r} is not {FORMAT!r}")
        for name, kind in (("version", int), ("threshold", int), ("previous", str), ("created", str),
                           ("expires", str), ("proposer", str), ("summary", str), ("policy", str), ("bots", str),
                           ("operators", dict)):
            if not isinstance(body[name], kind) or isinstance(body[name], bool):
                raise QuorumError(f"{source}: body.{name} must be {kind.__name__}")
        if body["version"] < 1 or not re.fullmatch(r"[0-9a-f]{64}", body["previous"]):
            raise QuorumError(f"{source}: version must be >= 1 and previous a SHA-256 digest (hex)")
        _when(body["created"], source=f"{source}: body.created")
        _when(body["expires"], source=f"{source}: body.expires")
        if not isinstance(approvals, list):
            raise QuorumError(f"{source}: approvals must be a list")
        parsed = []
        for item in approvals:
            if not isinstance(item, dict) or set(item) != {"operator", "signature"} or not all(
                    isinstance(v, str) for v in item.values()):
                raise QuorumError(f"{source}: an approval is {{'operator': NAME, 'signature': BASE64}}")
            try:
                signature = base64.b64decode(item["signature"], validate=True)
            except ValueError:
                raise QuorumError(f"{source}: approval by {item['operator'][:64]!r} is not base64") from None
            parsed.append(Approval(item["operator"], signature))
        try:
            canonical(body)  # a lone surrogate cannot be hashed: refused here, not later in the poll
        except UnicodeEncodeError:
            raise QuorumError(f"{source}: text that is not valid Unicode") from None
        return cls(body=body, approvals=tuple(parsed))

    @classmethod
    def read(cls, path: Path) -> "Bundle":
        try:
            # Only a regular file, never through a symlink, never blocking (a FIFO would hang the poll).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise QuorumError(f"{path}: not a regular file")
                data = f.read(MAX_BUNDLE_BYTES + 1)
        except OSError as exc:
            raise QuorumError(f"cannot read {path}: {exc.strerror}") from None
        if len(data) > MAX_BUNDLE_BYTES:
            raise QuorumError(f"{path}: larger than {MAX_BUNDLE_BYTES} bytes")
        try:
            return cls.from_json(data.decode("utf-8"), source=str(path))
        except UnicodeDecodeError:
            raise QuorumError(f"{path}: not UTF-8") from None


def _when(text: str, *, source: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QuorumError(f"{source}: {text[:40]!r} is not an ISO 8601 date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- what is in force, and the judgement of a new bundle -----------------------------------------


@dataclass(frozen=True)
class InForce:
    version: int
    digest: str
    operators: Operators
    policy: Policy | None  # None before the first bundle: nothing may be signed
    bots: Bots | None
    policy_text: str = ""
    bots_text: str = ""
    approvers: tuple[str, ...] = ()

    @classmethod
    def genesis(cls, operators: Operators) -> "InForce":
        return cls(version=0, digest=GENESIS, operators=operators, policy=None, bots=None)


@dataclass(frozen=True)
class Accepted:
    in_force: InForce
    loosenings: tuple[str, ...]  # empty: the change only tightens

    @property
    def change(self) -> str:
        return "loosening" if self.loosenings else "tightening"


def contents(bundle: Bundle, *, source: str) -> tuple[Policy, Bots, Operators]:
    """The policy, credentials and operator set a bundle carries (QuorumError if any is invalid)."""
    try:
        policy = parse_policy(bundle.body["policy"].encode("utf-8"), source=f"{source} policy")
        bots = parse_bots(bundle.body["bots"], source=f"{source} bots")
    except (PolicyError, BotsFileError) as exc:
        raise QuorumError(str(exc)) from None
    except (RecursionError, ValueError, TypeError) as exc:  # e.g. TOML nested past the parser's depth
        raise QuorumError(f"{source}: policy or bots text that cannot be read ({type(exc).__name__})") from None
    operators = Operators.parse(bundle.body["operators"], bundle.body["threshold"], where=source)
    return policy, bots, operators


def check_fresh(bundle: Bundle, now: datetime) -> None:
    """BundleRefused unless BUNDLE may be approved or applied NOW: created no later than NOW (give
    or take MAX_CLOCK_SKEW), not expired, and valid for at most MAX_EXPIRY from its creation."""
    source = f"bundle v{bundle.version} ({bundle.digest[:16]})"
    created = _when(bundle.body["created"], source=f"{source}: created")
    expires = _when(bundle.body["expires"], source=f"{source}: expires")
    if created > now + MAX_CLOCK_SKEW:
        raise BundleRefused(f"{source}: created at {bundle.body['created']}, after this host's clock ({_iso(now)}) "
                            f"by more than {int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes: check the proposer's "
                            "clock and propose it again")
    if not created < expires <= created + MAX_EXPIRY:
        raise BundleRefused(f"{source}: valid from {bundle.body['created']} to {bundle.body['expires']}; a bundle "
                            f"expires after its creation and within {MAX_EXPIRY.days} days of it: propose it again")
    if expires <= now:
        raise BundleRefused(f"{source}: expired at {bundle.body['expires']} (propose and approve it again)")


def check_proposer(bundle: Bundle, operators: Operators) -> None:
    """BundleRefused unless BUNDLE's proposer is one of OPERATORS and signed it. The proposer's
    signature is their approval (`policy propose` signs), so it counts toward the threshold."""
    source = f"bundle v{bundle.version} ({bundle.digest[:16]})"
    proposer = bundle.body["proposer"]
    public = operators.keys.get(proposer)
    if public is None:
        raise BundleRefused(f"{source}: proposed by {proposer[:64]!r}, who is not an operator in force "
                            f"({', '.join(sorted(operators.keys))}): only an operator proposes")
    signed = [a for a in bundle.approvals if a.operator == proposer]
    try:
        if not signed:
            raise InvalidSignature
        Ed25519PublicKey.from_public_bytes(public).verify(signed[0].signature, bundle.signed_bytes())
    except InvalidSignature:
        raise BundleRefused(f"{source}: not signed by its proposer {proposer[:64]!r} (`policy propose --key` signs "
                            "it): propose it again") from None


def judge(bundle: Bundle, in_force: InForce, now: datetime, *, applied_before: bool = False) -> Accepted:
    """Accept BUNDLE as the successor of IN_FORCE, or raise BundleRefused saying why. APPLIED_BEFORE:
    a bundle of the chain this agent recorded; its signatures and approvals are checked again, not
    its dates (it applied when it was fresh)."""
    source = f"bundle v{bundle.version} ({bundle.digest[:16]})"
    if bundle.version <= in_force.version:
        raise BundleRefused(f"{source}: version {bundle.version} is not newer than v{in_force.version} in force "
                            "(an older bundle cannot come back)")
    if bundle.version != in_force.version + 1:
        raise BundleRefused(f"{source}: the next bundle is v{in_force.version + 1}, not v{bundle.version}")
    if bundle.body["previous"] != in_force.digest:
        raise BundleRefused(f"{source}: written against {bundle.body['previous'][:16]}, but "
                            f"{in_force.digest[:16]} (v{in_force.version}) is in force: propose again from it")
    if not applied_before:
        check_fresh(bundle, now)
    names = [a.operator for a in bundle.approvals]
    if len(set(names)) != len(names):
        raise BundleRefused(f"{source}: an operator approved twice: one operator is one approval")
    for approval in bundle.approvals:
        public = in_force.operators.keys.get(approval.operator)
        if public is None:
            raise BundleRefused(f"{source}: {approval.operator[:64]!r} is not an operator in force "
                                f"({', '.join(sorted(in_force.operators.keys))})")
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(approval.signature, bundle.signed_bytes())
        except InvalidSignature:
            raise BundleRefused(f"{source}: the approval by {approval.operator!r} does not verify "
                                "(forged, or for other content)") from None
    check_proposer(bundle, in_force.operators)
    try:
        policy, bots, operators = contents(bundle, source=source)
    except QuorumError as exc:
        raise BundleRefused(str(exc)) from None
    widened = tuple(loosenings(in_force, policy, bots, operators))
    needed = in_force.operators.threshold if widened else 1
    if len(names) < needed:
        what = f"it loosens ({'; '.join(widened[:5])}{'; ...' if len(widened) > 5 else ''})" if widened else "it"
        raise BundleRefused(f"{source}: {what} needs {needed} approvals of {len(in_force.operators.keys)} "
                            f"operators, it has {len(names)} ({', '.join(names) or 'none'})")
    return Accepted(InForce(version=bundle.version, digest=bundle.digest, operators=operators, policy=policy, bots=bots,
                            policy_text=bundle.body["policy"], bots_text=bundle.body["bots"],
                            approvers=tuple(names)), widened)


# -- tightening or loosening: compared field by field ---------------------------------------------

_TIMESTAMP_STRICTNESS = {"agent": 0, "skew": 1, "any": 2}  # agent refuses caller clocks; any accepts all


def _at_most(old: Any, new: Any) -> bool:
    """A limit where None is 'no limit': the new one is no wider."""
    return old is None or (new is not None and new <= old)


def _at_least(old: Any, new: Any) -> bool:
    return old is None or (new is not None and new >= old)


def _subset(old: frozenset | None, new: frozenset | None) -> bool:
    """A list where None is 'anything'."""
    return old is None or (new is not None and new <= old)


def _caps_narrower(old: KeyPolicy, new: KeyPolicy) -> bool:
    """Order caps per symbol and unit: a capped symbol stays capped, a unit it may be sized in was
    allowed before and its cap does not grow (a symbol capped only in base refuses quote-sized
    orders, so adding a quote cap allows something new)."""
    named = set(old.max_order) | set(old.max_order_quote) | set(new.max_order) | set(new.max_order_quote) | {"*"}
    for symbol in named:
        ob, oq = (old.max_order.get(symbol, old.max_order.get("*")),
                  old.max_order_quote.get(symbol, old.max_order_quote.get("*")))
        nb, nq = (new.max_order.get(symbol, new.max_order.get("*")),
                  new.max_order_quote.get(symbol, new.max_order_quote.get("*")))
        if ob is None and oq is None:
            continue
        if nb is None and nq is None:
            return False
        for o, n in ((ob, nb), (oq, nq)):
            if n is not None and (o is None or Decimal(n) > Decimal(o)):
                return False
    # A key with any cap refuses an order whose size it cannot read; removing every cap lifts that.
    return not (old.max_order or old.max_order_quote) or bool(new.max_order or new.max_order_quote)


# One comparison per KeyPolicy field: True when NEW allows nothing OLD did not. A field missing here
# (added later) must be equal, or the change counts as loosening: fail closed.
KEY_FIELDS: dict[str, Callable[[KeyPolicy, KeyPolicy], bool]] = {
    "label": lambda o, n: True,
    "endpoints": lambda o, n: {p.text for p in n.endpoints} <= {p.text for p in o.endpoints},
    "symbols": lambda o, n: _subset(o.symbols, n.symbols),
    "rate_per_second": lambda o, n: _at_most(o.rate_per_second, n.rate_per_second),
    "burst": lambda o, n: _at_most(o.burst, n.burst),
    "max_order": _caps_narrower,
    "max_order_quote": _caps_narrower,
    "timestamps": lambda o, n: _TIMESTAMP_STRICTNESS[n.timestamps] <= _TIMESTAMP_STRICTNESS[o.timestamps],
    "skew_ms": lambda o, n: n.skew_ms <= o.skew_ms,
    "not_before": lambda o, n: _at_least(o.not_before, n.not_before),
    "expires": lambda o, n: _at_most(o.expires, n.expires),
    "max_age_days": lambda o, n: n.max_age_days <= o.max_age_days,
    "warn_age_days": lambda o, n: True,  # when to warn, not what is signed
    "allow": lambda o, n: n.allow <= o.allow,
    "max_recv_window_ms": lambda o, n: n.max_recv_window_ms <= o.max_recv_window_ms,
    # Each delivery is a power of its own (signatures for the bot; connections the agent opens for it):
    # narrower only when the new modes are among the old ("both" to "send" tightens, "sign" to "send" not).
    "delivery": lambda o, n: _DELIVERY_MODES[n.delivery] <= _DELIVERY_MODES[o.delivery],
    "send_to": lambda o, n: n.send_to == o.send_to,  # another destination is never narrower
    "limits": lambda o, n: not _widened(o.limits, n.limits, LIMIT_FIELDS),
    # The endpoint allow-list as compiled at load (KeyPolicy.allows): derived from `endpoints`, which
    # is compared above; compared again here, a narrowing of the list would count as loosening.
    "_matchers": lambda o, n: True,
}
_DELIVERY_MODES = {"send": frozenset({"send"}), "sign": frozenset({"sign"}), "both": frozenset({"send", "sign"})}
BOT_FIELDS: dict[str, Callable[[BotPolicy, BotPolicy], bool]] = {
    "name": lambda o, n: True,
    "keys": lambda o, n: "*" in o.keys or ("*" not in n.keys and n.keys <= o.keys),
    "rate_per_second": lambda o, n: _at_most(o.rate_per_second, n.rate_per_second),
    "burst": lambda o, n: _at_most(o.burst, n.burst),
    "limits": lambda o, n: not _widened(o.limits, n.limits, LIMIT_FIELDS),
}


def _budgets_narrower(old: tuple[Budget, ...], new: tuple[Budget, ...]) -> bool:
    """Every window OLD had is still there and no higher; a window added only narrows."""
    limit_by_window = {b.seconds: b.limit for b in new}
    return all(b.seconds in limit_by_window and limit_by_window[b.seconds] <= b.limit for b in old)


def _per_symbol_narrower(old: Any, new: Any, narrower: Callable[[Any, Any], bool]) -> bool:
    """Per-symbol limits, "*" standing for each symbol not named: compared for what each symbol gets,
    so a symbol's own limit removed is narrower only when the "*" limit it falls back to is."""
    for symbol in set(old) | set(new) | {"*"}:
        before, after = old.get(symbol, old.get("*")), new.get(symbol, new.get("*"))
        if before is not None and (after is None or not narrower(before, after)):
            return False
    return True


# The guardrails (agent.limits), each on its own: a limit raised or removed widens, one lowered or
# added narrows (a ceiling; for the volume floor the other way round).
LIMIT_FIELDS: dict[str, Callable[[Limits, Limits], bool]] = {
    "max_notional": lambda o, n: _budgets_narrower(o.max_notional, n.max_notional),
    "max_notional_per_symbol": lambda o, n: _per_symbol_narrower(o.max_notional_per_symbol,
                                                                 n.max_notional_per_symbol, _budgets_narrower),
    "max_orders_per_minute": lambda o, n: _at_most(o.max_orders_per_minute, n.max_orders_per_minute),
    "max_orders_per_minute_per_symbol": lambda o, n: _per_symbol_narrower(
        o.max_orders_per_minute_per_symbol, n.max_orders_per_minute_per_symbol, lambda a, b: b <= a),
    "price_band_pct": lambda o, n: _at_most(o.price_band_pct, n.price_band_pct),
    "min_quote_volume_24h": lambda o, n: _at_least(o.min_quote_volume_24h, n.min_quote_volume_24h),
}


def _widened(old: Any, new: Any, table: dict[str, Callable[[Any, Any], bool]]) -> list[str]:
    out = []
    for f in fields(old):
        compare = table.get(f.name)
        narrower = compare(old, new) if compare is not None else getattr(old, f.name) == getattr(new, f.name)
        if narrower:
            continue
        if isinstance(getattr(old, f.name), Limits):  # say which guardrail: limits.max_notional, ...
            out.extend(f"{f.name}.{inner}" for inner in _widened(getattr(old, f.name), getattr(new, f.name),
                                                                 LIMIT_FIELDS))
        else:
            out.append(f.name)
    return out


def _ways_in(bots: Bots) -> set[tuple[str, str, str]]:
    """(bot, kind, hash) of each credential: each one is a way in for that bot."""
    return ({(c.name, "token", digest) for digest, c in bots.by_token.items()}
            | {(c.name, "mTLS certificate", digest) for digest, c in bots.by_cert.items()})


def loosenings(in_force: InForce, policy: Policy, bots: Bots, operators: Operators) -> list[str]:
    """What POLICY, BOTS and OPERATORS allow that IN_FORCE did not (empty: only tightening)."""
    old = in_force.policy
    if old is None or in_force.bots is None:
        return ["the first policy"]
    out: list[str] = []
    if operators != in_force.operators:
        out.append("the operator set or threshold")
    labels = set(old.keys) | set(policy.keys)
    for label in sorted(labels) + ["*"]:
        # What a label gets is its own table or the default one: compare what is in force for it.
        before = old.fallback if label == "*" else old.for_key(label)
        after = policy.fallback if label == "*" else policy.for_key(label)
        where = "keys.\"*\"" if label == "*" else f"keys.{label}"
        if after is None:
            continue
        if before is None:
            out.append(f"{where} is new")
            continue
        out.extend(f"{where}.{name}" for name in _widened(before, replace(after, label=before.label), KEY_FIELDS))
    for name, bot in sorted(policy.bots.items()):
        was = old.bots.get(name)
        if was is None:
            out.append(f"bots.{name} is new")
        else:
            out.extend(f"bots.{name}.{f}" for f in _widened(was, bot, BOT_FIELDS))
    # Compared as (bot, kind, hash): a token hash now given as a certificate fingerprint, or moved
    # to another bot, is a new way in; only removing credentials narrows.
    for name, kind, digest in sorted(_ways_in(bots) - _ways_in(in_force.bots)):
        out.append(f"a credential for bot {name!r}: a new {kind} ({digest[:16]})")
    return out


# -- the bundle directory, the chain, and what the agent records --------------------------------


def diff(old_text: str, new_text: str, name: str) -> str:
    return "".join(difflib.unified_diff(old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
                                        fromfile=f"{name} (in force)", tofile=f"{name} (proposed)"))


@dataclass(frozen=True)
class Event:
    """What happened to one bundle: for the audit, the alerts and the log."""
    decision: str  # "applied" | "refused"
    version: int
    digest: str
    reason: str = ""
    change: str = ""
    approvers: tuple[str, ...] = ()  # "name:keyid"
    proposer: str = ""


class BundleSource(Protocol):
    """Where the agents read published bundles: a directory per host (BundleDir), or the PostgreSQL
    database the hosts share (agent.quorum_pg.PostgresBundles). Only a carrier: every bundle it yields
    is judged by each agent against its own first operator set, as if it came from anyone."""

    where: str  # for messages: the directory, or the database table
    proposals: Path  # drafts being approved: files the operators pass around, in both cases

    def fingerprint(self) -> tuple: ...

    def published(self) -> "list[tuple[str, Bundle | QuorumError]]": ...

    def publish(self, bundle: "Bundle", *, by: str) -> str: ...

    def unavailable(self) -> str | None: ...

    def watch(self) -> None: ...

    def close(self) -> None: ...


class BundleDir:
    """Published bundles (`v000042-<digest16>.json`) and, under `proposals/`, drafts being approved."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self.proposals = path / "proposals"

    def unavailable(self) -> str | None:
        return None  # a local directory: what it holds now is what is published

    def watch(self) -> None:
        pass  # read by the agent's policy watch itself: a local directory does not hang

    def close(self) -> None:
        pass

    def fingerprint(self) -> tuple:
        seen = []
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return ()
        for e in entries:
            if e.name.endswith(".json"):
                try:
                    st = e.stat(follow_symlinks=False)
                    seen.append((e.name, st.st_ino, st.st_size, st.st_mtime_ns))
                except OSError:
                    seen.append((e.name, 0, -1, 0))
        return tuple(sorted(seen))

    def published(self) -> list[tuple[str, Bundle | QuorumError]]:
        """(file name, its bundle or why it is not one), in name order."""
        out: list[tuple[str, Bundle | QuorumError]] = []
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return out
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                out.append((name, Bundle.read(self.path / name)))
            except QuorumError as exc:
                out.append((name, exc))
        return out

    def publish(self, bundle: Bundle, *, by: str = "") -> str:
        return str(write_atomically(self.path / bundle.file_name, bundle.to_json()))


def write_atomically(path: Path, text: str, *, replace_existing: bool = False) -> Path:
    """Write atomically (temporary file, fsync, rename); never over another file unless asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not replace_existing:
        raise QuorumError(f"{path} exists")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class Chain:
    """Walks the published bundles (a BundleSource) from the genesis operators to the newest bundle that applies.

    `advance` applies every bundle that chains to the one in force and is accepted; it refuses
    each other bundle once (a bad file stays refused: it is reported once, not every poll). Two
    valid bundles chaining to the same one are a fork: both are refused, nothing changes."""

    def __init__(self, directory: BundleSource, genesis: Operators) -> None:
        self.dir = directory
        self.in_force = InForce.genesis(genesis)
        self._judged: set[str] = set()  # digests or paths already applied or refused

    def advance(self, now: datetime, *, trusted_through: int = 0) -> list[Event]:
        """Apply what chains on; bundles up to version TRUSTED_THROUGH were applied before (by this
        agent, recorded in its state), so their expiry no longer matters."""
        events: list[Event] = []
        while True:
            candidates: list[tuple[str, Bundle, Accepted]] = []
            unchained: list[tuple[str, Bundle]] = []
            for name, item in self.dir.published():
                seen = f"{name}:{item.digest if isinstance(item, Bundle) else ''}"
                if seen in self._judged:
                    continue
                if isinstance(item, QuorumError):
                    self._judged.add(seen)
                    events.append(Event("refused", 0, "", reason=str(item)[:500]))
                    continue
                if item.version <= self.in_force.version:
                    # An older bundle put back (a replay), or one that lost a fork: never applied.
                    self._judged.add(seen)
                    if item.digest != self.in_force.digest:
                        events.append(self._refusal(item, f"version {item.version} is not newer than "
                                                          f"v{self.in_force.version} in force"))
                    continue
                if item.body["previous"] != self.in_force.digest:
                    unchained.append((seen, item))  # may chain once a bundle before it applies
                    continue
                try:
                    accepted = judge(item, self.in_force, now, applied_before=item.version <= trusted_through)
                except BundleRefused as exc:
                    self._judged.add(seen)
                    events.append(self._refusal(item, str(exc)))
                    continue
                candidates.append((seen, item, accepted))
            unique = {c[1].digest: c for c in candidates}  # copies of one bundle are one candidate
            for seen, item, _ in candidates:
                if unique[item.digest][0] != seen:
                    self._judged.add(seen)
            candidates = list(unique.values())
            if len(candidates) > 1:
                for seen, item, _ in candidates:
                    self._judged.add(seen)
                    events.append(self._refusal(item, f"{len(candidates)} bundles chain to "
                                                      f"v{self.in_force.version}: a fork; publish one"))
                return events
            if not candidates:
                for seen, item in unchained:
                    self._judged.add(seen)
                    events.append(self._refusal(item, f"written against {item.body['previous'][:16]}, which is "
                                                      f"not v{self.in_force.version} in force "
                                                      f"({self.in_force.digest[:16]}): it does not chain"))
                return events
            seen, bundle, accepted = candidates[0]
            self._judged.add(seen)
            # The approvers are named with the keys that approved: the operator set in force before.
            approvers = _ids(bundle, self.in_force.operators)
            self.in_force = accepted.in_force
            events.append(Event("applied", bundle.version, bundle.digest, change=accepted.change,
                                approvers=approvers, proposer=bundle.body["proposer"][:64]))

    def _refusal(self, bundle: Bundle, reason: str) -> Event:
        return Event("refused", bundle.version, bundle.digest, reason=reason[:500],
                     proposer=bundle.body["proposer"][:64])


def _ids(bundle: Bundle, operators: Operators) -> tuple[str, ...]:
    return tuple(f"{a.operator}:{key_id(operators.keys[a.operator])}" if a.operator in operators.keys else a.operator
                 for a in bundle.approvals)


@dataclass(frozen=True)
class Head:
    """What this agent recorded in its state directory (HEAD_FILE): that it runs under a quorum,
    with which first operator set, and the last bundle it applied."""
    version: int
    digest: str
    genesis: str | None  # Operators.digest of the first set; None in a file written before it was recorded
    genesis_ids: dict[str, str]  # name -> key id of the first set, to say what changed
    genesis_threshold: int | None


def read_head(state_dir: Path) -> Head | None:
    """The recorded head; None when this agent never ran under a quorum."""
    try:
        raw = json.loads((state_dir / HEAD_FILE).read_text(encoding="utf-8"))
        return Head(version=int(raw["version"]), digest=str(raw["digest"]), genesis=raw.get("genesis"),
                    genesis_ids=dict(raw.get("genesis_ids", {})), genesis_threshold=raw.get("genesis_threshold"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QuorumError(f"{state_dir / HEAD_FILE} is unreadable ({type(exc).__name__}): restore it from a "
                          "backup; the agent does not guess which policy version was in force") from None


def quorum_recorded(state_dir: Path) -> bool:
    """True once an agent with this state directory ran under a quorum (even if the file is unreadable)."""
    return os.path.lexists(state_dir / HEAD_FILE)


def write_head(state_dir: Path, in_force: InForce, genesis: Operators) -> None:
    write_atomically(state_dir / HEAD_FILE, json.dumps({
        "quorum": True, "version": in_force.version, "digest": in_force.digest, "genesis": genesis.digest,
        "genesis_ids": genesis.key_ids(), "genesis_threshold": genesis.threshold}) + "\n", replace_existing=True)


HOW_OPERATORS_CHANGE = ("operators and the threshold change only by a bundle the threshold in force approves: "
                        "signing-agent policy propose --set-operator NAME=ed25519:... --drop-operator NAME "
                        "--threshold N")


def genesis_changes(head: Head, genesis: Operators) -> list[str]:
    """How GENESIS (the config's first operator set) differs from the one HEAD recorded."""
    if head.genesis is None or head.genesis == genesis.digest:
        return []
    now = genesis.key_ids()
    out = [f"operator {n!r} added" for n in sorted(set(now) - set(head.genesis_ids))]
    out += [f"operator {n!r} removed" for n in sorted(set(head.genesis_ids) - set(now))]
    out += [f"operator {n!r} has another key ({head.genesis_ids[n]} -> {now[n]})"
            for n in sorted(set(now) & set(head.genesis_ids)) if now[n] != head.genesis_ids[n]]
    if head.genesis_threshold != genesis.threshold:
        out.append(f"threshold {head.genesis_threshold} -> {genesis.threshold}")
    return out or ["the operator set's digest differs"]


def new_proposal(in_force: InForce, *, policy_text: str, bots_text: str, proposer: str, summary: str,
                 expires_in: timedelta, now: datetime, operators: Operators | None = None) -> Bundle:
    if not timedelta(minutes=1) <= expires_in <= MAX_EXPIRY:
        raise QuorumError(f"expiry must be between 1 minute and {MAX_EXPIRY.days} days")
    operators = operators or in_force.operators
    body = {
        "format": FORMAT, "version": in_force.version + 1, "previous": in_force.digest, "created": _iso(now),
        "expires": _iso(now + expires_in), "proposer": proposer, "summary": summary, "policy": policy_text,
        "bots": bots_text, "operators": operators.as_body(), "threshold": operators.threshold,
    }
    bundle = Bundle(body=body, approvals=())
    contents(bundle, source="the proposal")  # refuse at once what the agent would refuse at load
    return bundle


class QuorumSource:
    """The policy and credentials the agent enforces, taken from the bundle chain (agent.guard)."""

    def __init__(self, source: "Path | BundleSource", genesis: Operators, state_dir: Path,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        """SOURCE: a directory of published bundles (one host), or a BundleSource (several hosts)."""
        self.chain = Chain(BundleDir(source) if isinstance(source, Path) else source, genesis)
        self._genesis, self._state_dir, self._clock = genesis, state_dir, clock
        self._seen: tuple | None = None
        self._head_missing = False  # the bundle in force is gone from the source: reported once
        self._stale: Bots | None = None

    def stale_bots(self) -> Bots | None:
        """While the source has not answered within its stale bound (a database): credentials that
        refuse every caller UNAVAILABLE, since a published revocation could be missed. One object
        per outage, so a caller identified once (a stream) is identified again when it ends."""
        reason = self.chain.dir.unavailable()
        if reason is None:
            self._stale = None
            return None
        if self._stale is None or self._stale.unavailable != reason:
            self._stale = Bots(by_token={}, by_cert={}, names=(), unavailable=reason)
        return self._stale

    @property
    def genesis_digest(self) -> str:
        return self._genesis.digest

    @property
    def policy(self) -> Policy:
        return self.chain.in_force.policy or Policy.empty()  # before the first bundle: nothing is signed

    @property
    def bots(self) -> Bots:
        return self.chain.in_force.bots or Bots.of([])

    def start(self) -> list[Event]:
        """Walk the chain to its head. Raises QuorumError (the agent does not start) when the head
        is older than, or differs from, what this agent applied before: the directory was rolled back."""
        head = read_head(self._state_dir)
        if head is not None and (changed := genesis_changes(head, self._genesis)):
            raise QuorumError(
                f"[quorum.operators] or threshold in the config is not the first operator set this agent recorded "
                f"in {self._state_dir / HEAD_FILE} ({'; '.join(changed)}). The config names only the first set; "
                f"put it back as it was: {HOW_OPERATORS_CHANGE}")
        version, digest = (head.version, head.digest) if head is not None else (0, GENESIS)
        self._seen = self.chain.dir.fingerprint()
        events = self._replay_recorded(version, digest) if version else []
        events += self.chain.advance(self._clock())
        head = self.chain.in_force
        if head.version < version or (head.version == version and head.digest != digest):
            raise QuorumError(
                f"the bundle chain in {self.chain.dir.where} ends at v{head.version} ({head.digest[:16]}), but this "
                f"agent applied v{version} ({digest[:16]}) before: bundles were removed or replaced. Restore "
                f"them; the agent does not go back to an older policy")
        self._record()
        self.chain.dir.watch()
        return events

    def close(self) -> None:
        self.chain.dir.close()

    def _replay_recorded(self, version: int, digest: str) -> list[Event]:
        """Re-apply exactly the chain that ends at the head this agent recorded, from the first
        operators on: each link's signatures verified again (not its expiry: it applied when it
        was fresh). A link missing or no longer verifying stops the start; a bundle put in its
        place cannot take over, whatever version it claims."""
        by_digest = {item.digest: (name, item) for name, item in self.chain.dir.published()
                     if isinstance(item, Bundle)}
        path_back, cursor = [], digest
        while cursor != GENESIS:
            found = by_digest.get(cursor)
            if found is None:
                raise QuorumError(
                    f"bundle {cursor[:16]} on the chain to v{version} ({digest[:16]}), which this agent applied "
                    f"before, is missing from {self.chain.dir.where}: bundles were removed or replaced. Restore "
                    "them; the agent does not go back to an older policy")
            path_back.append(found)
            cursor = found[1].body["previous"]
        events = []
        for name, bundle in reversed(path_back):
            try:
                accepted = judge(bundle, self.chain.in_force, self._clock(), applied_before=True)
            except BundleRefused as exc:
                raise QuorumError(f"the recorded chain no longer verifies: {exc}") from None
            approvers = _ids(bundle, self.chain.in_force.operators)
            self.chain.in_force = accepted.in_force
            self.chain._judged.add(f"{name}:{bundle.digest}")
            events.append(Event("applied", bundle.version, bundle.digest, change=accepted.change,
                                approvers=approvers, proposer=bundle.body["proposer"][:64]))
        return events

    def poll(self) -> list[Event]:
        """New bundles since the last look (nothing when the directory did not change)."""
        seen = self.chain.dir.fingerprint()
        if seen == self._seen:
            return []
        self._seen = seen
        events = self.chain.advance(self._clock())
        if any(e.decision == "applied" for e in events):
            self._record()
        return events + self._check_head_present()

    def _check_head_present(self) -> list[Event]:
        """A running agent whose bundle in force was deleted or replaced in the source keeps enforcing
        it (it never goes back to an older policy) and says so once; it will not start again until
        the bundle is restored (start, _replay_recorded)."""
        head = self.chain.in_force
        if head.version == 0:
            return []
        present = any(isinstance(item, Bundle) and item.digest == head.digest for _, item in self.chain.dir.published())
        if present or self._head_missing:
            self._head_missing = not present
            return []
        self._head_missing = True
        return [Event("refused", head.version, head.digest, reason=(
            f"bundle v{head.version} ({head.digest[:16]}), in force here, is gone from {self.chain.dir.where}: "
            "bundles were removed or replaced (a rollback). This agent keeps enforcing it and will not start "
            "again until it is restored (from a backup, or an operator's copy of the published bundle)"))]

    def _record(self) -> None:
        # Written from the first start on, before any bundle: from then on this state directory
        # refuses a config without [quorum] or with another first operator set (agent.server).
        write_head(self._state_dir, self.chain.in_force, self._genesis)
