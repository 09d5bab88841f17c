"""`signing-agent operator keygen` and `signing-agent policy propose | approve | publish | status`.

The commands an operator runs to change the policy when the config has a `[quorum]` (agent.quorum):
propose a bundle from the edited policy and bots files, have operators approve it with their own
keys, publish it where the agents read it. Each step says what the change needs (one approval
when it only tightens, the threshold when it loosens anything) the way the agent will judge it,
and each is recorded in the audit.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from agent.quorum import (
    BundleRefused,
    BundleSource,
    Chain,
    InForce,
    Operators,
    QuorumError,
    Bundle,
    check_fresh,
    check_proposer,
    diff,
    generate_operator_key,
    judge,
    key_id,
    load_operator_key,
    loosenings,
    contents,
    new_proposal,
    parse_public_key,
    public_key_text,
    read_head,
    write_atomically,
)

_DURATION = re.compile(r"(\d+)([mhd])\Z")


def _cli():  # agent.cli imports this module lazily; the reverse import stays lazy too
    from agent import cli

    return cli


def _quorum_config(args: argparse.Namespace) -> tuple[Any, Any]:
    cli = _cli()
    config = cli._config(args)
    if config.quorum is None:
        raise cli.CliError(f"{config.path} has no [quorum]: the policy file is in force as written "
                           "(README, 'Operator quorum', says how to turn it on)", cli.EXIT_CONFIG)
    return config, config.quorum


@contextmanager
def _published(config: Any) -> Iterator[BundleSource]:
    """Where the agents of CONFIG read published bundles (agent.quorum_pg.open_bundles): the database
    the hosts share, or the directory; read once, closed after the command."""
    cli = _cli()
    from agent.custody.store import StoreUnavailable
    from agent.quorum_pg import open_bundles

    try:
        source = open_bundles(config)
    except QuorumError as exc:
        raise cli.CliError(str(exc), cli.EXIT_CONFIG) from None
    except StoreUnavailable as exc:
        raise cli.CliError(f"{exc}: the published bundles live there ([store] backend = \"postgres\")",
                           cli.EXIT_UNAVAILABLE) from None
    try:
        yield source
    finally:
        source.close()


def _head(config: Any, quorum: Any, source: BundleSource) -> Chain:
    """The chain as the agent walks it (bundles it applied before keep their expiry behind them)."""
    genesis = Operators.parse(quorum.operators, quorum.threshold, where=str(config.path))
    chain = Chain(source, genesis)
    try:
        recorded = read_head(config.state_dir)
    except QuorumError:
        recorded = None
    through = recorded.version if recorded is not None else 0
    chain.advance(datetime.now(timezone.utc), trusted_through=through)
    return chain


def _fail(exc: Exception) -> int:
    cli = _cli()
    raise cli.CliError(str(exc), cli.EXIT_REFUSED) from None


def _operator_token(path: Path):
    """The operator's own token, from a config file with a [token] table (PIN from its pin_file or pin_env)."""
    cli = _cli()
    from agent.config import ConfigError, load_config
    from agent.custody.session import TokenSession

    try:
        return TokenSession.open(load_config(path).token)
    except ConfigError as exc:
        raise cli.CliError(str(exc), cli.EXIT_CONFIG) from None


def _custody_call(fn, *args):
    from agent.custody import CustodyError

    try:
        return fn(*args)
    except CustodyError as exc:
        return _fail(exc)


def cmd_operator_keygen(args: argparse.Namespace) -> int:
    if (args.out is None) == (args.token_config is None):
        cli = _cli()
        raise cli.CliError("give --out FILE (a key file) or --token-config FILE (your own token)", cli.EXIT_CONFIG)
    if args.token_config is not None:
        from agent.custody.operator import generate_in_token, operator_label

        token = _operator_token(args.token_config)
        with token:
            raw = _custody_call(generate_in_token, token, args.name)
        print(f"operator key {operator_label(args.name)!r} generated in token {token.label} (it never leaves it)",
              file=sys.stderr)
    else:
        try:
            raw = generate_operator_key(args.out)
        except QuorumError as exc:
            return _fail(exc)
        print(f"operator key written to {args.out} (mode 0600: keep it off the agent host)", file=sys.stderr)
    print("add this line under [quorum.operators] (or propose it as a new operator):", file=sys.stderr)
    print(f'{args.name} = "{public_key_text(raw)}"   # key id {key_id(raw)}')
    return 0


def _duration(text: str) -> timedelta:
    m = _DURATION.match(text)
    if not m:
        cli = _cli()
        raise cli.CliError(f"--expires takes a duration like 30m, 24h or 7d, not {text[:20]!r}", cli.EXIT_CONFIG)
    n, unit = int(m.group(1)), m.group(2)
    return timedelta(minutes=n) if unit == "m" else timedelta(hours=n) if unit == "h" else timedelta(days=n)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "" if what == "bots" else _fail(QuorumError(f"{path} does not exist"))  # no bots file: no bots
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(QuorumError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"))


def _needs(in_force: InForce, bundle: Bundle) -> tuple[list[str], int]:
    policy, bots, operators = contents(bundle, source="the proposal")
    widened = loosenings(in_force, policy, bots, operators)
    return widened, (in_force.operators.threshold if widened else 1)


def cmd_policy_propose(args: argparse.Namespace) -> int:
    config, quorum = _quorum_config(args)
    with _published(config) as source:
        chain = _head(config, quorum, source)
    in_force = chain.in_force
    operators = in_force.operators
    try:
        proposer_key = operators.keys.get(args.proposer)
        if proposer_key is None:
            raise QuorumError(f"--proposer {args.proposer[:64]!r} is not an operator in force "
                              f"({', '.join(sorted(operators.keys))}): only an operator proposes")
        if args.set_operator or args.drop_operator or args.threshold is not None:
            keys = dict(operators.keys)
            for item in args.set_operator:
                name, _, text = item.partition("=")
                keys[name] = parse_public_key(text, where=f"--set-operator {name}")
            for name in args.drop_operator:
                if keys.pop(name, None) is None:
                    raise QuorumError(f"--drop-operator {name}: not an operator in force ({', '.join(sorted(keys))})")
            operators = Operators(keys, args.threshold if args.threshold is not None else operators.threshold)
        bundle = new_proposal(
            in_force, policy_text=_read_text(args.policy or config.policy_file, "policy"),
            bots_text=_read_text(args.bots or config.bots_file, "bots"), proposer=args.proposer,
            summary=args.summary, expires_in=_duration(args.expires), now=datetime.now(timezone.utc),
            operators=operators)
        bundle = _signed(args.proposer, args, bundle, proposer_key)  # the proposer's signature is an approval
        widened, needed = _needs(in_force, bundle)
        path = write_atomically(source.proposals / bundle.file_name, bundle.to_json())
    except QuorumError as exc:
        return _fail(exc)
    print(diff(in_force.policy_text, bundle.body["policy"], "policy") + diff(in_force.bots_text, bundle.body["bots"],
                                                                            "bots"), end="")
    _cli()._audit(config, "policy.propose", version=bundle.version, digest=bundle.digest,
                  proposer=f"{args.proposer}:{key_id(proposer_key)}", previous=in_force.digest,
                  change="loosening" if widened else "tightening")
    print(f"proposal v{bundle.version} written to {path}", file=sys.stderr)
    print(f"digest {bundle.digest}: give it to the approvers; `policy approve` signs only this content", file=sys.stderr)
    print(_explain(widened, needed, operators=in_force.operators, proposer=args.proposer), file=sys.stderr)
    return 0


def _explain(widened: list[str], needed: int, *, operators: Operators, proposer: str) -> str:
    if widened:
        return (f"it loosens: {'; '.join(widened)}. It needs {needed} approvals of {len(operators.keys)} operators; "
                f"{proposer}'s signature as proposer is the first. Other operators: signing-agent policy approve FILE "
                "--digest DIGEST --operator NAME --key KEYFILE; then: signing-agent policy publish FILE")
    return (f"it only tightens: {proposer}'s signature as proposer is the one approval it needs; publish it: "
            "signing-agent policy publish FILE")


def _read_proposal(path: Path) -> Bundle:
    try:
        return Bundle.read(path)
    except QuorumError as exc:
        return _fail(exc)


def cmd_policy_approve(args: argparse.Namespace) -> int:
    config, quorum = _quorum_config(args)
    with _published(config) as source:
        chain = _head(config, quorum, source)
    bundle = _read_proposal(args.proposal)
    try:
        public = chain.in_force.operators.keys.get(args.operator)
        if public is None:
            raise QuorumError(f"{args.operator!r} is not an operator in force "
                              f"({', '.join(sorted(chain.in_force.operators.keys))})")
        if len(args.digest) < 16 or not bundle.digest.startswith(args.digest.lower()):
            raise QuorumError(f"{args.proposal} has digest {bundle.digest[:16]}..., not the {args.digest[:64]!r} you "
                              "were given: its content is not what was proposed to you; nothing was signed")
        if bundle.body["previous"] != chain.in_force.digest:
            raise QuorumError(f"the proposal was written against {bundle.body['previous'][:16]}, but v"
                              f"{chain.in_force.version} ({chain.in_force.digest[:16]}) is in force: propose again")
        check_fresh(bundle, datetime.now(timezone.utc))  # an expired proposal is not signed
        check_proposer(bundle, chain.in_force.operators)  # nor one no operator proposed
        # What is signed, shown first (from the file itself, against what is in force).
        print(diff(chain.in_force.policy_text, bundle.body["policy"], "policy")
              + diff(chain.in_force.bots_text, bundle.body["bots"], "bots"), end="")
        approved = _signed(args.operator, args, bundle, public)
        widened, needed = _needs(chain.in_force, approved)
        write_atomically(args.proposal, approved.to_json(), replace_existing=True)
    except QuorumError as exc:
        return _fail(exc)
    _cli()._audit(config, "policy.approve", version=bundle.version, digest=bundle.digest,
                  approver=f"{args.operator}:{key_id(public)}")
    have = len(approved.approvals)
    print(f"approved v{bundle.version} ({bundle.digest[:16]}) as {args.operator}: {have} of {needed} needed"
          + ("; publish it: signing-agent policy publish " + str(args.proposal) if have >= needed else ""),
          file=sys.stderr)
    if widened:
        print(f"it loosens: {'; '.join(widened)}", file=sys.stderr)
    return 0


def _signed(operator: str, args: argparse.Namespace, bundle: Bundle, public: bytes) -> Bundle:
    """BUNDLE approved by OPERATOR's key: a file (--key) or their token (--token-config)."""
    if (args.key is None) == (args.token_config is None):
        raise QuorumError("give --key FILE (a key file) or --token-config FILE (your own token)")
    if args.token_config is not None:
        from agent.custody.operator import TokenOperatorKey

        token = _operator_token(args.token_config)
        with token:
            key = TokenOperatorKey(token, operator)
            if _custody_call(key.public_bytes_raw) != public:
                raise QuorumError(f"the key in token {token.label} is not {operator!r}'s "
                                  f"(key id {key_id(public)} is in force)")
            return _custody_call(bundle.approved_by, operator, key)
    key = load_operator_key(args.key)
    if key.public_key().public_bytes_raw() != public:
        raise QuorumError(f"{args.key} is not {operator!r}'s key (key id {key_id(public)} is in force)")
    return bundle.approved_by(operator, key)


def cmd_policy_publish(args: argparse.Namespace) -> int:
    config, quorum = _quorum_config(args)
    bundle = _read_proposal(args.proposal)
    with _published(config) as source:
        chain = _head(config, quorum, source)
        try:
            accepted = judge(bundle, chain.in_force, datetime.now(timezone.utc))  # as the agent will judge it
            path = source.publish(bundle, by=_cli()._operator())
        except BundleRefused as exc:
            _cli()._audit(config, "policy.publish", decision="refused", version=bundle.version, digest=bundle.digest,
                          reason=str(exc)[:500])
            return _fail(exc)
        except QuorumError as exc:
            return _fail(exc)
        proposals = source.proposals
    if args.proposal.resolve().parent == proposals.resolve():
        args.proposal.unlink(missing_ok=True)
    _cli()._audit(config, "policy.publish", decision="published", version=bundle.version, digest=bundle.digest,
                  change=accepted.change, approvers=[a.operator for a in bundle.approvals])
    print(f"published v{bundle.version} ({bundle.digest[:16]}, {accepted.change}) to {path}; running agents apply "
          "it within a second (their audit says so: policy.bundle)", file=sys.stderr)
    return 0


def cmd_policy_status(args: argparse.Namespace) -> int:
    config, quorum = _quorum_config(args)
    with _published(config) as source:
        chain = _head(config, quorum, source)
    head = chain.in_force
    ops = head.operators
    print(f"in force: v{head.version} ({head.digest[:16]})" + (
        f", approved by {', '.join(head.approvers)}" if head.version
        else " (no bundle published yet: the agent signs nothing)"))
    print(f"operators ({ops.threshold} of {len(ops.keys)} to loosen, 1 to tighten): "
          + ", ".join(f"{n} ({key_id(k)})" for n, k in sorted(ops.keys.items())))
    print(f"published in: {source.where}")
    proposals = source.proposals
    for path in sorted(proposals.glob("*.json")) if proposals.is_dir() else []:
        try:
            bundle = Bundle.read(path)
            widened, needed = _needs(head, bundle)
        except QuorumError as exc:
            print(f"proposal {path.name}: unreadable ({exc})")
            continue
        stale = "" if bundle.body["previous"] == head.digest else " (stale: not written against the version in force)"
        print(f"proposal {path.name}: v{bundle.version} by {bundle.body['proposer']}, "
              f"{'loosening' if widened else 'tightening'}, {len(bundle.approvals)} of {needed} approvals, "
              f"expires {bundle.body['expires']}{stale}")
    return 0


def verify_audited_bundles(config: Any, audit_path: Path, out: Any) -> int:
    """`audit verify` with a quorum: every bundle the audit says an agent applied is in the chain
    the published bundles prove (signatures verified again, from the first operators on), under
    the same digest and approved by the same keys. 0 when all are; 1 otherwise."""
    from agent.audit import verify_chain

    def records():
        for path, _ in verify_chain(audit_path).files:
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                yield f"{path.name} line {number}", line

    return _verify_applied(config, records(), out)


def verify_shipped_bundles(config: Any, out: Any) -> int:
    """`audit verify --all` with a quorum: the same check over every host's audit shipped to the
    database (agent.audit_ship), against the bundles published there. 0 when all verify; 1 otherwise."""
    from agent.custody.store import Postgres

    db = Postgres(config.store.dsn)
    try:
        with db.tx() as cur:
            # Only the lines that can name a bundle: the others are the chain verifier's business.
            cur.execute("SELECT host, id, convert_from(line, 'UTF8') FROM audit_lines "
                        "WHERE position('\"policy.bundle\"' IN convert_from(line, 'UTF8')) > 0 ORDER BY host, id")
            rows = cur.fetchall()
    finally:
        db.close()
    return _verify_applied(config, ((f"host {host} row {row_id}", line) for host, row_id, line in rows), out)


def _verify_applied(config: Any, records: Any, out: Any) -> int:
    """RECORDS: (where, audit line); each `policy.bundle` line with decision `applied` is checked."""
    quorum = config.quorum
    genesis = Operators.parse(quorum.operators, quorum.threshold, where=str(config.path))
    with _published(config) as source:
        where = source.where
        chain = Chain(source, genesis)
        proven = {e.version: e for e in chain.advance(datetime.now(timezone.utc), trusted_through=10**9)
                  if e.decision == "applied"}
    problems, checked = [], 0
    for at, line in records:
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("event") != "policy.bundle" or record.get("decision") != "applied":
            continue
        checked += 1
        event = proven.get(record.get("version"))
        if event is None or event.digest != record.get("digest"):
            problems.append(f"{at}: bundle v{record.get('version')} ({str(record.get('digest'))[:16]}) is not in "
                            f"the verified chain of {where}")
        elif sorted(event.approvers) != sorted(record.get("approvers", [])):
            problems.append(f"{at}: bundle v{event.version} approvers {record.get('approvers')} differ from its "
                            f"signatures {list(event.approvers)}")
    for problem in problems:
        print(f"  {problem}", file=out)
    print(f"policy bundles: {checked} applied in the audit, "
          + ("every one verified against the operators' signatures" if not problems
             else f"{len(problems)} not verified"), file=out)
    return 1 if problems else 0


def quorum_status(config: Any) -> dict[str, Any]:
    """For `signing-agent status`: the bundle in force as this host's bundle directory proves it."""
    with _published(config) as source:
        head = _head(config, config.quorum, source).in_force
        proposals = source.proposals
    return {"version": head.version, "digest": head.digest, "approvers": list(head.approvers),
            "operators": sorted(head.operators.keys), "threshold": head.operators.threshold,
            "pending": len(list(proposals.glob("*.json"))) if proposals.is_dir() else 0}
