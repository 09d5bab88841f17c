"""`signing-agent`: serve, manage keys, and sign from the shell as a bot would.

Secrets are read from standard input only (no echo at a terminal), never from
argv or the environment, and never printed.

Exit codes: 0 success; 1 the operation was refused (key exists, not found,
malformed input, signing refused); 2 usage or configuration error; 3 the token
refused the PIN; 4 the token or the agent is unreachable.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

EXIT_REFUSED, EXIT_CONFIG, EXIT_LOGIN, EXIT_UNAVAILABLE = 1, 2, 3, 4
MAX_STDIN_BYTES = 1 << 20


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def _config(args: argparse.Namespace):
    from agent.config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None


@contextlib.contextmanager
def _opening():
    """Map what opening the config, the token and the store raises to the CLI's exit codes."""
    from agent.config import ConfigError
    from agent.custody import TokenLoginError, TokenUnavailable

    try:
        yield
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None
    except TokenLoginError as exc:
        raise CliError(str(exc), EXIT_LOGIN) from None
    except TokenUnavailable as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None


def _open_keyring(args: argparse.Namespace):
    from agent.custody import Keyring

    config = _config(args)
    with _opening():
        return config, Keyring.open(config.token, store=config.store.open() if config.store else None)


def _custody_errors(fn):
    """Map custody errors of a keyring operation to CLI errors."""
    from agent.custody import CustodyError, TokenUnavailable

    def wrapped(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except TokenUnavailable as exc:
            raise CliError(str(exc), EXIT_UNAVAILABLE) from None
        except CustodyError as exc:
            raise CliError(str(exc)) from None

    return wrapped


def read_key_input(*, pem: bool, passphrase: bool) -> tuple[bytearray, str | None]:
    """The secret (one line, or a PEM block) then, where the exchange has one, the passphrase.

    From a pipe or file: the secret first, the passphrase on the next line. At a terminal:
    prompted without echo (PEM keys must come from a file: `< key.pem`).
    """
    if sys.stdin.isatty():
        if pem:
            raise CliError("give the private key on standard input from a file: ... < key.pem")
        secret = bytearray(getpass.getpass("Secret: ").encode())
        phrase = getpass.getpass("Passphrase: ") if passphrase else None
        return secret, phrase
    data = bytearray(sys.stdin.buffer.read(MAX_STDIN_BYTES + 1))
    try:
        if len(data) > MAX_STDIN_BYTES:
            raise CliError("standard input is larger than 1 MiB; give the secret alone")
        lines = [line.rstrip(b"\r") for line in bytes(data).split(b"\n")]
        if pem:
            # Skip what precedes the block (blank lines, openssl's "Bag Attributes" ...).
            begin = next((i for i, line in enumerate(lines) if line.startswith(b"-----BEGIN")), None)
            lines = lines[begin:] if begin is not None else lines
        if pem and lines and lines[0].startswith(b"-----BEGIN"):
            # `in`, not startswith: a PEM copied out of a JSON file is one line with literal \\n escapes.
            end = next((i for i, line in enumerate(lines) if b"-----END" in line), None)
            if end is None:
                raise CliError("the PEM block on standard input has no -----END line")
            secret, rest = bytearray(b"\n".join(lines[: end + 1]) + b"\n"), lines[end + 1:]
        else:
            secret, rest = bytearray(lines[0] if lines else b""), lines[1:]
        while rest and not rest[-1]:
            rest.pop()
        if len(rest) > (1 if passphrase else 0):
            what = "the secret, then the passphrase on the next line" if passphrase else "the secret alone"
            raise CliError(f"standard input has more lines than expected; give {what}")
        phrase = None
        if passphrase:
            if not rest:
                raise CliError("this exchange's keys have a passphrase: give it on the line after the secret")
            try:
                phrase = rest[0].decode("utf-8")
            except UnicodeDecodeError:
                raise CliError("the passphrase is not UTF-8 text") from None
        return secret, phrase
    finally:
        data[:] = b"\x00" * len(data)


def _options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--option takes NAME=VALUE, not {pair[:64]!r}", EXIT_CONFIG)
        options[name] = value
    return options


# -- commands -------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from agent import logs
    from agent.buildinfo import build_info
    from agent.config import ConfigError, parse_tcp

    logs.configure()
    # Which code is about to sign: also the first record each agent process writes to the audit.
    logs.get_logger().info("agent.start", **build_info().as_fields())
    try:
        config = _config(args)
        server = config.server
        if args.tcp:
            server = dataclasses.replace(server, tcp=parse_tcp(args.tcp, tls=server.tls is not None))
        if args.tcp_plaintext:
            server = dataclasses.replace(server, tcp_plaintext=True)
        if args.workers is not None:
            server = dataclasses.replace(server, workers=args.workers)
        server.check_listeners()
        config = dataclasses.replace(config, server=server)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None
    if server.workers == 1:
        return _serve_one(args, config)
    return _serve_workers(args, config)


def _serve_one(args: argparse.Namespace, config) -> int:
    """One agent process: its own module instance, session and gRPC server."""
    from agent.config import ConfigError
    from agent.custody import Keyring, TokenLoginError, TokenUnavailable
    from agent.server import serve

    try:
        keyring = Keyring.open(config.token, store=config.store.open() if config.store else None)
        return serve(keyring, config, metrics_http=config.server.workers == 1)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None
    except TokenLoginError as exc:
        raise CliError(str(exc), EXIT_LOGIN) from None
    except TokenUnavailable as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None


def _serve_workers(args: argparse.Namespace, config) -> int:
    """Several agent processes, forked before any gRPC object or PKCS#11 module exists in this one
    (see agent/workers.py): python-pkcs11 makes one token call at a time per process."""
    from agent.workers import run_workers, worker_socket

    metrics_dir = None
    if config.metrics_listen:
        # Set before prometheus_client is first imported (it picks its value store then): the
        # workers' values go to files in this directory, and this process serves their sum.
        import shutil

        metrics_dir = config.state_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(mode=0o700, parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    if config.server.tcp is not None:
        # Workers share the port through SO_REUSEPORT, which would also let them join a port another
        # agent of this user already serves: refuse that before forking.
        import socket

        with socket.socket(socket.AF_INET6 if ":" in config.server.tcp.host else socket.AF_INET) as probe:
            probe.settimeout(1)
            if probe.connect_ex((config.server.tcp.host, config.server.tcp.port)) == 0:
                raise CliError(f"something already listens on {config.server.tcp.target}; refusing to share it",
                               EXIT_CONFIG)

    def serve_one(index: int) -> int:
        worker = dataclasses.replace(config, server=dataclasses.replace(
            config.server, socket=worker_socket(config.server.socket, index)))
        try:
            return _serve_one(args, worker)
        except CliError as exc:
            print(f"signing-agent: worker {index}: error: {exc}", file=sys.stderr)
            return exc.code

    if metrics_dir is not None:
        from agent.metrics import serve_metrics

        try:
            serve_metrics(config.metrics_listen, metrics_dir)
        except OSError as exc:
            raise CliError(f"[metrics] cannot listen on {config.metrics_listen}: {exc.strerror}", EXIT_CONFIG)
    return run_workers(serve_one, config.server.workers)


def _audit(config, event: str, **fields: Any) -> None:
    """Record an operator action in the audit log (the agent's decisions share its chain)."""
    from agent.audit import AuditLog

    try:
        AuditLog(config.audit_file).append(event, operator=_operator(), **fields)
    except OSError as exc:
        print(f"signing-agent: warning: the action was done but could not be audited in {config.audit_file}: "
              f"{exc.strerror}", file=sys.stderr)


def _draft_notice(config, what: str) -> None:
    """With [quorum] the agent reads only published bundles: say that this edit is a draft."""
    if config.quorum is not None:
        print(f"signing-agent: NOT IN FORCE YET: with [quorum] the agent reads only published bundles; {what} "
              "changed the draft. Propose it (signing-agent policy propose --proposer NAME), have it approved "
              "(one operator for a revoke or any tightening, the threshold to loosen) and publish it.",
              file=sys.stderr)


def _operator() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _exchange_checked(args: argparse.Namespace, *, generated: bool = False):
    """The exchange's rules, checked against the arguments before the token is opened."""
    from agent.custody import InvalidKeyMaterial
    from agent.names import InvalidName, validate_api_key, validate_label
    from agent.provision import exchange_rules
    from agent.schemes import UnsupportedKey

    try:
        validate_label(args.label)
        exchange = exchange_rules(args.exchange)
        args.type = args.type or exchange.key_types[0]
        exchange.check_key_type(args.type, generated=generated)
        options = exchange.resolve_options(_options(args.option))
        if getattr(args, "api_key", None) is not None:
            validate_api_key(args.api_key)
    except (InvalidName, InvalidKeyMaterial, UnsupportedKey) as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None
    return exchange, options


def cmd_keys_import(args: argparse.Namespace) -> int:
    from agent import provision

    exchange, options = _exchange_checked(args)
    needs_passphrase = exchange.passphrase_rule(options) is not None
    config, keyring = _open_keyring(args)
    with keyring:
        secret, passphrase = read_key_input(pem=args.type != "hmac", passphrase=needs_passphrase)
        try:
            info = _custody_errors(provision.import_key)(
                keyring, label=args.label, exchange_id=exchange.id, api_key=args.api_key, key_type=args.type,
                secret=secret, passphrase=passphrase, options=options, wrapped=args.wrapped,
            )
        finally:
            secret[:] = b"\x00" * len(secret)
    _audit(config, "key.import", key=info.label, exchange=info.exchange, key_type=info.key_type,
           fingerprint=info.fingerprint)
    print(f"imported {info.key_type} key {info.label!r} for {info.exchange} (fingerprint {info.fingerprint})")
    return 0


def cmd_store_init(args: argparse.Namespace) -> int:
    """Create the master key (PyKCS11, in this process before anything else loads the module) and the store's
    tables: in [store]'s store, or in the one --postgres or --sqlite names (then print the [store] to add)."""
    from agent.config import StoreConfig, check_dsn
    from agent.custody import CustodyError, KeyExists, TokenLoginError, TokenUnavailable
    from agent.custody.master import create_master_key
    from agent.toml_schema import Invalid

    config = _config(args)
    store = config.store
    if args.postgres is not None:
        try:
            store = StoreConfig(backend="postgres", sqlite_file=Path(), dsn=check_dsn(args.postgres))
        except Invalid as exc:
            raise CliError(f"--postgres {exc}", EXIT_CONFIG) from None
    elif args.sqlite is not None:
        store = StoreConfig(backend="sqlite", sqlite_file=args.sqlite.resolve())
    if store is None:
        raise CliError(f"{config.path} has no [store] table: add one (backend = \"sqlite\" or \"postgres\"), "
                       "or name the store: store init --postgres DSN | --sqlite FILE", EXIT_CONFIG)
    with _opening():
        try:
            create_master_key(config.token)
            print(f"created the master key in token {config.token.label!r} (non-extractable; it only wraps and unwraps)")
        except KeyExists:
            print(f"token {config.token.label!r} holds a master key already; kept")
        except (TokenLoginError, TokenUnavailable):
            raise  # _opening's
        except CustodyError as exc:
            raise CliError(str(exc), EXIT_REFUSED) from None
        _create_store_tables(store)
    def where(s: Any) -> Any:
        return s.dsn if s.backend == "postgres" else s.sqlite_file

    print(f"key store ready: {store.backend} ({where(store)})")
    if config.store is None or (config.store.backend, where(config.store)) != (store.backend, where(store)):
        value = f'dsn = "{store.dsn}"' if store.backend == "postgres" else f'sqlite_file = "{store.sqlite_file}"'
        print(f"agents use it once {config.path} has:\n[store]\nbackend = \"{store.backend}\"\n{value}")
    _audit(config, "store.init", backend=store.backend)
    return 0


def _create_store_tables(store: Any) -> None:
    """STORE's tables (with PostgreSQL, also the nonces and rate buckets agent hosts share)."""
    if store.backend == "sqlite":
        try:
            store.open().close()
        except OSError as exc:
            raise CliError(f"cannot create the key store {store.sqlite_file}: {exc.strerror}", EXIT_CONFIG) from None
        return
    import psycopg

    from agent.custody.store import Postgres
    from agent.quorum import QuorumError
    from agent.freeze_pg import create_tables as create_freeze_table
    from agent.quorum_pg import create_tables as create_bundle_table
    from agent.shared_state import create_tables

    try:
        store.open().close()
        create_tables(store.dsn)
        create_freeze_table(store.dsn)
        db = Postgres(store.dsn)
        try:
            create_bundle_table(db)  # a quorum's published bundles, should the hosts run under one
        except QuorumError as exc:  # the server's refusal, said as for the tables above
            raise CliError(str(exc)) from None
        finally:
            db.close()
    except psycopg.Error as exc:  # the server's refusal (a role without CREATE...): it names no secret
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CliError(f"the database refused to create the store's tables ({reason}); run store init as a "
                       "role that may create tables in it, then let the agents' role use them") from None


def cmd_store_rotate_master(args: argparse.Namespace) -> int:
    """A new master key generation for new imports; with --retire-old, destroy the older generations that no
    row uses. Blobs are not re-wrapped (master.NO_IN_TOKEN_REWRAP): each keeps the generation its row names."""
    from agent.custody import CustodyError
    from agent.custody.master import (NO_IN_TOKEN_REWRAP, create_master_key, destroy_master_key,
                                      master_generations)

    config = _config(args)
    if config.store is None:
        raise CliError(f"{config.path} has no [store] table: add one, then run signing-agent store init", EXIT_CONFIG)
    with _opening():
        generations = master_generations(config.token)
        if not generations:
            raise CliError(f"token {config.token.label!r} has no master key: run signing-agent store init first")
        store = config.store.open()
        try:
            if args.retire_old:
                return _retire_old_masters(args, config, store, generations, destroy_master_key)
            newest = generations[-1]
            if store.count_by_master().get(newest, 0) == 0:
                # Also the rerun after a kill that followed the creation: one new generation, never two.
                print(f"master key generation {newest} wraps no key yet: it stays the one new keys are wrapped "
                      "under (nothing created)")
            else:
                try:
                    create_master_key(config.token, generation=newest + 1)
                except CustodyError as exc:
                    raise CliError(str(exc)) from None
                newest += 1
                _audit(config, "store.rotate-master", generation=newest)
                print(f"created master key generation {newest} in token {config.token.label!r}; new imports and "
                      "migrations are wrapped under it, and agents use it without a restart")
            older = {g: n for g, n in store.count_by_master().items() if g != newest}
            for generation, count in sorted(older.items()):
                shown = store.labels_under(generation, 20)
                more = f" and {count - len(shown)} more" if count > len(shown) else ""
                print(f"generation {generation} still wraps {count} key(s): {', '.join(shown)}{more}")
            if older:
                print(f"They keep signing under their generation. Not re-wrapped: {NO_IN_TOKEN_REWRAP}. To move a "
                      "key, revoke it and import the exchange's secret again with --wrapped; once no key uses a "
                      "generation, retire it: signing-agent store rotate-master --retire-old")
        finally:
            store.close()
    return 0


def _retire_old_masters(args: argparse.Namespace, config: Any, store: Any, generations: list[int],
                        destroy: Any) -> int:
    newest, older = generations[-1], generations[:-1]
    counts = store.count_by_master()
    used = [g for g in older if counts.get(g, 0)]
    unused = [g for g in older if not counts.get(g, 0)]
    if not unused and not used:
        print(f"the token holds master key generation {newest} only; nothing to retire")
        return 0
    if unused:
        what = (f"master key generation(s) {', '.join(map(str, unused))} wrap no key in {config.store.backend}'s "
                "store. Destroying them cannot be undone: any copy of a blob wrapped under them (a backup, "
                "another store using this HSM) becomes useless")
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError(f"{what}. Nothing destroyed: standard input is not a terminal, so confirm with --yes",
                               EXIT_CONFIG)
            print(f"{what}.", file=sys.stderr)
            try:
                answer = input("Type retire to destroy them: ")
            except EOFError:
                answer = ""
            if answer.strip() != "retire":
                raise CliError("not confirmed; no master key destroyed")
        for generation in unused:
            # Read again right before: an import that began before the rotation may have just written a row.
            if store.count_by_master().get(generation, 0):
                used.append(generation)
                continue
            _custody_errors(destroy)(config.token, generation)
            _audit(config, "store.retire-master", generation=generation)
            print(f"destroyed master key generation {generation}")
    if used:
        raise CliError(f"master key generation(s) {', '.join(map(str, sorted(used)))} still wrap keys and are kept; "
                       "run store rotate-master to list them, move or revoke them, then retire again")
    return 0


def cmd_store_backup(args: argparse.Namespace) -> int:
    from agent.custody.backup import USELESS_WITHOUT_THE_HSM, write_backup

    config = _config(args)
    if config.store is None:
        raise CliError(f"{config.path} has no [store] table: there is no key store to back up", EXIT_CONFIG)
    with _opening():
        store = config.store.open()
        try:
            by_master = _custody_errors(write_backup)(store, args.out)
        finally:
            store.close()
    generations = ", ".join(f"{g} ({n} keys)" for g, n in sorted(by_master.items())) or "none"
    print(f"wrote {sum(by_master.values())} wrapped key(s) to {args.out} (mode 0600); master key generations: "
          f"{generations}")
    print(f"Note: {USELESS_WITHOUT_THE_HSM}.")
    _audit(config, "store.backup", file=str(args.out), keys=sum(by_master.values()))
    return 0


def cmd_store_restore(args: argparse.Namespace) -> int:
    from agent.custody.backup import USELESS_WITHOUT_THE_HSM, read_backup

    config = _config(args)
    if config.store is None:
        raise CliError(f"{config.path} has no [store] table: add one, then run signing-agent store init", EXIT_CONFIG)
    records = _custody_errors(read_backup)(args.file)
    _, keyring = _open_keyring(args)
    with keyring:
        store = keyring.store
        labels = [r.label for r in records]
        existing = _custody_errors(store.present)(labels)
        if existing and not args.replace:
            shown = ", ".join(sorted(existing)[:20]) + (" ..." if len(existing) > 20 else "")
            raise CliError(f"{len(existing)} label(s) of the backup exist in the key store: {shown}. Nothing was "
                           "restored; revoke them first, or give --replace to overwrite them with the backup's rows")
        on_token = {info.label for info in _custody_errors(keyring.list_keys)(wrapped=False)} & set(labels)
        unusable = _custody_errors(keyring.unusable_blobs)([r for r in records if r.label not in on_token])
        for label in sorted(on_token):
            print(f"not restored  {label}  a token object holds this label; revoke it first")
        for label, reason in sorted(unusable.items()):
            print(f"not restored  {label}  {reason}")
        restoring = [r for r in records if r.label not in on_token and r.label not in unusable]
        if restoring:
            _custody_errors(store.restore)(restoring, replace=args.replace)
            keyring.evict_wrapped([r.label for r in restoring])
    for record in restoring:
        _audit(config, "store.restore", key=record.label, fingerprint=record.fingerprint, master=record.master)
    print(f"restored {len(restoring)} of {len(records)} wrapped key(s) from {args.file}"
          + (f" ({len(existing)} replaced)" if existing else ""))
    left = len(records) - len(restoring)
    if left:
        raise CliError(f"{left} key(s) of the backup were not restored (see the lines above). Keys wrapped under a "
                       f"master key this token does not hold need that HSM: {USELESS_WITHOUT_THE_HSM}")
    return 0


# Tests only: `store migrate` exits at once, as if killed, after writing this many rows (before destroying
# the token object of the last one), so that the rerun's recovery is tested from a real cut.
CRASH_AFTER_ROWS_ENV = "SIGNING_AGENT_TEST_CRASH_AFTER_ROWS"


def _crash_hook() -> Any:
    limit = os.environ.get(CRASH_AFTER_ROWS_ENV, "")
    if not limit.isdigit():
        return None
    written = [0]

    def row_written(_label: str) -> None:
        written[0] += 1
        if written[0] >= int(limit):
            os._exit(137)

    return row_written


def cmd_store_migrate(args: argparse.Namespace) -> int:
    from agent import provision

    config = _config(args)
    if config.store is None:
        raise CliError(f"{config.path} has no [store] table: add one, then run signing-agent store init",
                       EXIT_CONFIG)
    _, keyring = _open_keyring(args)
    counts: dict[str, int] = {}

    def report(m: Any) -> None:
        counts[m.outcome] = counts.get(m.outcome, 0) + 1
        print(f"{m.outcome:<13}  {m.label}  {m.reason}", flush=True)
        if m.outcome in ("migrated", "finished"):
            _audit(config, "store.migrate", key=m.label)

    with keyring:
        _custody_errors(provision.migrate_to_store)(keyring, dry_run=args.dry_run, progress=report,
                                                    row_written=_crash_hook())
    if not counts:
        print("no keys in the token")
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    left = counts.get("re-import", 0) + counts.get("conflict", 0)
    if args.dry_run:
        print(f"dry run, nothing changed: {summary}" if counts else "dry run, nothing changed")
        return 0
    if left:
        raise CliError(f"{summary}: {left} key(s) were left as they are and need a person (see the lines above)")
    print(summary or "nothing to migrate")
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from agent import provision

    exchange, options = _exchange_checked(args, generated=True)
    config, keyring = _open_keyring(args)
    with keyring:
        info, public = _custody_errors(provision.generate_key)(
            keyring, label=args.label, exchange_id=exchange.id, key_type=args.type, bits=args.bits, options=options
        )
    _audit(config, "key.generate", key=info.label, exchange=info.exchange, key_type=info.key_type,
           fingerprint=info.fingerprint)
    print(provision.public_key_pem(public), end="")
    print(
        f"generated {info.key_type} key {info.label!r} for {info.exchange} inside the token (fingerprint "
        f"{info.fingerprint}). Register the public key above with {info.exchange}, then: signing-agent keys "
        f"register --label {info.label} --api-key <the API key id {info.exchange} issues>",
        file=sys.stderr,
    )
    return 0


def cmd_keys_register(args: argparse.Namespace) -> int:
    from agent import provision
    from agent.names import InvalidName, validate_api_key, validate_label

    try:
        validate_label(args.label)
        validate_api_key(args.api_key)
    except InvalidName as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None
    config, keyring = _open_keyring(args)
    with keyring:
        info = _custody_errors(keyring.lookup)(args.label).info
        exchange = _custody_errors(provision.exchange_rules)(info.exchange)
        passphrase = None
        if exchange.passphrase_rule(info.options) is not None:
            passphrase = (getpass.getpass("Passphrase: ") if sys.stdin.isatty()
                          else sys.stdin.readline().rstrip("\r\n"))
        info = _custody_errors(provision.register)(keyring, label=args.label, api_key=args.api_key,
                                                   passphrase=passphrase)
    _audit(config, "key.register", key=info.label, exchange=info.exchange, api_key=info.api_key)
    print(f"registered key {info.label!r} with API key {info.api_key}; it can sign now")
    return 0


def cmd_keys_public(args: argparse.Namespace) -> int:
    from agent import provision

    _, keyring = _open_keyring(args)
    with keyring:
        public = _custody_errors(keyring.public_key)(args.label)
    print(provision.public_key_pem(public), end="")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    _, keyring = _open_keyring(args)
    with keyring:
        keys = _custody_errors(keyring.list_keys)()
    if args.json:
        print(json.dumps([k.as_dict() for k in keys], indent=2))
        return 0
    if not keys:
        print("no keys in the token (import one: signing-agent keys import --help)")
        return 0
    rows = [("LABEL", "EXCHANGE", "API KEY", "TYPE", "CREATED", "FINGERPRINT")]
    rows += [(k.label, k.exchange, k.api_key or "(unregistered)", k.key_type, k.created, k.fingerprint)
             for k in keys]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def confirm_unrecoverable(label: str, exchange: str, *, yes: bool) -> None:
    """A key generated in the token exists nowhere else: revoking it cannot be undone. Ask at a terminal;
    elsewhere (scripts, make) require --yes."""
    what = (f"key {label!r} ({exchange}) was generated inside the token and exists nowhere else: revoking it "
            "destroys it for good, and the exchange's API key registered for it stops working")
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{what}. Not revoked: standard input is not a terminal, so confirm with --yes "
                       "(make revoke-key LABEL=... YES=1)", EXIT_CONFIG)
    print(f"{what}.", file=sys.stderr)
    try:
        answer = input(f"Type the label ({label}) to revoke it: ")
    except EOFError:
        answer = ""
    if answer.strip() != label:
        raise CliError(f"not confirmed; key {label!r} is unchanged")


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    config, keyring = _open_keyring(args)
    with keyring:
        if _custody_errors(keyring.generated_in_token)(args.label):
            exchange = _custody_errors(keyring.lookup)(args.label).info.exchange
            confirm_unrecoverable(args.label, exchange, yes=args.yes)
        info = _custody_errors(keyring.revoke)(args.label)
    _audit(config, "key.revoke", key=info.label, exchange=info.exchange, fingerprint=info.fingerprint)
    print(f"revoked key {info.label!r} ({info.exchange}, fingerprint {info.fingerprint}); the token object is destroyed")
    return 0


class _JsonObject(list):
    """A JSON object as its (name, value) pairs, in order: tells objects from arrays after parsing."""


def parse_request_json(text: str) -> dict[str, Any]:
    """The bot's request shape: {"method", "path", "query": {...}?, "body": {...} | "raw text"?}.

    Numbers are kept exactly as written (1e-7 stays "1e-7"); order is kept; duplicate names are refused.
    """

    def pairs_hook(pairs: list[tuple[str, Any]]) -> _JsonObject:
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise CliError(f"request JSON: {name[:64]!r} appears twice in one object")
            seen.add(name)
        return _JsonObject(pairs)

    def no_constants(name: str) -> Any:
        raise CliError(f"request JSON: {name} is not a valid value")

    try:
        doc = json.loads(
            text, object_pairs_hook=pairs_hook, parse_float=str, parse_int=str, parse_constant=no_constants
        )
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CliError(f"request JSON is not valid: {exc}") from None
    if not isinstance(doc, _JsonObject):
        raise CliError('request JSON must be an object: {"method": ..., "path": ..., "query": {...}, "body": ...}')
    request = dict(doc)
    unknown = set(request) - {"method", "path", "query", "body"}
    if unknown:
        raise CliError(f"request JSON: unknown field(s) {', '.join(sorted(n[:64] for n in unknown))}")
    for field in ("method", "path"):
        if not isinstance(request.get(field), str):
            raise CliError(f"request JSON: {field!r} is required and must be a string")
    query = request.get("query")
    if query is not None and not isinstance(query, _JsonObject):
        raise CliError("request JSON: 'query' must be an object of name: value")
    body = request.get("body")
    if body is not None and not isinstance(body, (_JsonObject, str)):
        raise CliError("request JSON: 'body' must be an object of name: value, or a string of raw text")
    for where, params in (("query", query), ("body", body)):
        if isinstance(params, _JsonObject):
            for name, value in params:
                if not isinstance(value, (str, bool)):
                    raise CliError(f"request JSON: {where} value of {name[:64]!r} must be a string, number or boolean")
    return {"method": request["method"], "path": request["path"], "query": query, "body": body}


def cmd_sign(args: argparse.Namespace) -> int:
    from signing_agent_client.client import AgentUnavailableError, SignerClient, SigningError

    data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
    if len(data) > MAX_STDIN_BYTES:
        raise CliError("the request on standard input is larger than 1 MiB")
    try:
        request = parse_request_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CliError("the request on standard input is not UTF-8 text") from None
    # The agent's own config names its socket; the client is handed the plain target.
    target = args.target or f"unix://{_config(args).server.socket}"
    try:
        with SignerClient(target, timeout=args.timeout, token_file=args.token_file) as client:
            signed = client.sign(args.key, **request)
    except AgentUnavailableError as exc:
        raise CliError(f"agent at {target}: {exc}", EXIT_UNAVAILABLE) from None
    except SigningError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(signed.as_dict(), indent=2))
    return 0


class StagedTokenFile:
    """A bot's token file, checked and staged before the bot is registered (all or nothing).

    `check` refuses what would fail later: a missing or unwritable directory, a symlink, an existing
    file (unless FORCE). `write` puts the token into a new private file beside the target (mode
    0600, fsynced); `commit` moves it into place; `discard` removes it. The bot is registered between
    `write` and `commit`, so a token that cannot be written leaves no bot behind.
    """

    def __init__(self, path: Path, *, force: bool) -> None:
        self.path = Path(os.path.abspath(path))
        self.force = force
        self.tmp: Path | None = None

    def check(self) -> None:
        path, parent = self.path, self.path.parent
        if path.is_symlink():
            raise CliError(f"{path} is a symbolic link; give the token file's real path", EXIT_CONFIG)
        if not parent.exists():
            raise CliError(f"the directory {parent} does not exist; create it first (as the bot's user, "
                           f"mode 0700: install -d -m 700 {parent}) or choose another --token-file", EXIT_CONFIG)
        if not parent.is_dir():
            raise CliError(f"{parent} is not a directory; choose another --token-file", EXIT_CONFIG)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CliError(f"the directory {parent} is not writable by {_operator()}; fix its permissions or "
                           "choose another --token-file", EXIT_CONFIG)
        if path.exists():
            if path.is_dir():
                raise CliError(f"{path} is a directory; give a file name for the token", EXIT_CONFIG)
            if not self.force:
                raise CliError(f"{path} exists; choose a new file for the token, or --force to replace it",
                               EXIT_CONFIG)

    def write(self, token: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.tmp = tmp
        try:
            data = (token + "\n").encode()
            if os.write(fd, data) != len(data):
                raise OSError(28, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)

    def commit(self) -> None:
        assert self.tmp is not None
        if self.force:
            os.replace(self.tmp, self.path)
        else:
            os.link(self.tmp, self.path)  # EEXIST if the file appeared meanwhile: never overwritten
            os.unlink(self.tmp)
        self.tmp = None

    def discard(self) -> None:
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None


@contextlib.contextmanager
def _bots_registry(config, file_error: int = EXIT_REFUSED):
    """Where bot credentials are written and read (agent.bots_db.open_registry): the bots file, or the
    database the hosts share. Its refusals are exit 1 (a malformed file: FILE_ERROR), a database that
    does not answer exit 4."""
    from agent.bots import BotsError, BotsFileError
    from agent.bots_db import open_registry
    from agent.custody.store import StoreUnavailable

    registry = None
    try:
        registry = open_registry(config)
        yield registry
    except StoreUnavailable as exc:
        raise CliError(f"{exc}; nothing was changed", EXIT_UNAVAILABLE) from None
    except BotsFileError as exc:
        raise CliError(str(exc), file_error) from None
    except BotsError as exc:
        raise CliError(str(exc)) from None
    finally:
        if registry is not None:
            registry.close()


def cmd_bots_add(args: argparse.Namespace) -> int:
    from agent.bots import BotsFileError, validate_bot_name

    config = _config(args)
    try:
        validate_bot_name(args.name)
    except BotsFileError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None
    cert = None
    if args.cert is not None:
        if args.token_file is not None:
            raise CliError("give --cert or --token-file, not both", EXIT_CONFIG)
        try:
            cert = args.cert.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {args.cert}: {exc.strerror}", EXIT_CONFIG) from None
    staged = None
    if args.token_file is not None:
        staged = StagedTokenFile(args.token_file, force=args.force)
        staged.check()  # before anything is registered
    with _bots_registry(config) as registry:
        try:
            token = registry.add(args.name, cert_pem=cert, deliver=staged.write if staged is not None else None)
        except BaseException as exc:
            if staged is not None:
                staged.discard()
            if isinstance(exc, OSError):
                where = exc.filename or (staged.path if staged is not None else config.bots_file)
                raise CliError(f"cannot write {where}: {exc.strerror or exc}; bot {args.name!r} was not added") from None
            raise
        if staged is not None:
            try:
                staged.commit()
            except OSError as exc:
                staged.discard()
                registry.revoke(args.name)  # all or nothing: nobody holds that token
                raise CliError(f"cannot write {staged.path}: {exc.strerror or exc}; bot {args.name!r} was not added")
    _audit(config, "bot.add", bot=args.name, credential="certificate" if cert else "token",
           **({"draft": True} if config.quorum else {}))
    if token is None:
        print(f"bot {args.name!r} added: it authenticates with its client certificate over mTLS")
    elif staged is not None:
        print(f"bot {args.name!r} added; its token is in {staged.path} (mode 0600, shown nowhere else)")
    else:
        print(token)
        print(f"bot {args.name!r} added. The line above is its token, shown only now: give it to the bot "
              "(SIGNING_AGENT_TOKEN_FILE or SignerClient(token_file=...)); the agent keeps only its hash.",
              file=sys.stderr)
    print(f"grant it keys in {config.policy_file}: [bots.{args.name}] keys = [...]", file=sys.stderr)
    _draft_notice(config, f"adding bot {args.name!r}")
    return 0


def cmd_bots_list(args: argparse.Namespace) -> int:
    config = _config(args)
    with _bots_registry(config, file_error=EXIT_CONFIG) as registry:
        bots, where = registry.list(), registry.where
    if not bots:
        print(f"no bots in {where} (add one: signing-agent bots add NAME)")
    for bot in bots:
        kind = "certificate " + (bot.cert_sha256 or "")[:16] if bot.cert_sha256 else "token"
        print(f"{bot.name}  {kind}  created {bot.created}")
    return 0


def cmd_bots_revoke(args: argparse.Namespace) -> int:
    config = _config(args)
    with _bots_registry(config) as registry:
        registry.revoke(args.name)
    _audit(config, "bot.revoke", bot=args.name, **({"draft": True} if config.quorum else {}))
    if config.quorum is not None:
        _draft_notice(config, f"revoking bot {args.name!r}")
        return 0
    everywhere = "on every host " if config.bots_in_database else ""
    print(f"bot {args.name!r} revoked; running agents {everywhere}refuse its credential within a second")
    return 0


def cmd_bots_import_file(args: argparse.Namespace) -> int:
    """Move a bots file into the database the hosts share, once (agent.bots_db.PostgresBots.import_file)."""
    config = _config(args)
    if config.quorum is not None:
        raise CliError(f"bots import-file writes bot credentials into the database, but {config.path} has [quorum]: "
                       "credentials then come only from the bundles operators approve, on every host. Propose the "
                       "bots file instead: signing-agent policy propose --proposer NAME --key KEYFILE --bots "
                       f"{args.file or config.bots_file}", EXIT_CONFIG)
    if not config.bots_in_database:
        raise CliError("bots import-file moves a bots file into the PostgreSQL database the agent hosts share: it "
                       f"needs [store] backend = \"postgres\" in {config.path} (without it, the agent reads "
                       f"{config.bots_file} itself)", EXIT_CONFIG)
    path = args.file or config.bots_file
    with _bots_registry(config) as registry:
        added, present = registry.import_file(path)
    _audit(config, "bot.import", file=str(path), bots=added, already=present)
    print(f"imported {len(added)} bot(s) from {path} into the database" +
          (f" ({len(present)} were there already, unchanged)" if present else "") +
          f"; every agent host on it accepts them within a second. The file is no longer read: remove it "
          "(and its copies on the other hosts)")
    return 0


def _freeze_scope(args: argparse.Namespace) -> tuple[str, str]:
    from agent.names import InvalidName, validate_label

    if args.all:
        return "all", ""
    scope, name = ("key", args.key) if args.key is not None else ("bot", args.bot)
    try:
        validate_label(name)  # a bot name obeys the same rules; it goes into a file and the audit
    except InvalidName as exc:
        raise CliError(f"--{scope}: {exc}") from None
    return scope, name


def _freeze_alert(config, kind: str, **fields: Any) -> None:
    """Send the alert from here, whether or not an agent runs: the webhook must hear of a freeze at once."""
    from agent.alerts import AlertSender

    class _Quiet:  # the CLI prints its own line; the sender's structured log lines would be noise here
        def warning(self, *a: Any, **k: Any) -> None: ...
        def error(self, *a: Any, **k: Any) -> None: ...
        info = warning

    if config.webhook is None:
        return
    sender = AlertSender(config.webhook, log=_Quiet())
    sender.alert(kind, operator=_operator(), **fields)
    sender.close(timeout=5)
    if not sender.stats().sent:
        print(f"signing-agent: warning: the {kind} alert could not be delivered to [alerts] webhook",
              file=sys.stderr)


def _freezes(config) -> Any:
    """Where a freeze goes: with several hosts on PostgreSQL ([store] backend = "postgres") the table every
    host reads, so that it stops orders on all of them; else this host's state dir (every worker reads it)."""
    from agent import freeze

    if config.store is not None and config.store.backend == "postgres":
        from agent.custody.store import StoreUnavailable
        from agent.freeze_pg import PostgresFreezes

        try:
            return PostgresFreezes(config.store.dsn)
        except StoreUnavailable as exc:
            raise CliError(f"the freezes table cannot be reached ({exc}): nothing changed; the brake on one host "
                           "alone is `signing-agent freeze` with a config without [store] backend = \"postgres\", "
                           "or stop its agents", EXIT_UNAVAILABLE) from None
        except freeze.FreezeFileError as exc:
            raise CliError(str(exc), EXIT_UNAVAILABLE) from None
    return freeze.FileFreezes(config.state_dir)


def cmd_freeze(args: argparse.Namespace) -> int:
    from agent import freeze

    config = _config(args)
    scope, name = _freeze_scope(args)
    store = _freezes(config)
    try:
        entry, new = store.freeze(scope, name, by=_operator(), reason=args.reason or "")
    except freeze.FreezeFileError as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None
    finally:
        store.close()
    if not new:
        print(f"already frozen: {entry.describe()}; to lift it: {entry.undo()}")
        return 0
    _audit(config, "freeze", scope=scope, name=name, reason=entry.reason[:200])
    _freeze_alert(config, "freeze", scope=scope, name=name, reason=entry.describe())
    print(f"{entry.describe()}: running agents refuse its orders and amends within a second "
          f"(reads and cancels are still signed); to lift it: {entry.undo()}")
    return 0


def cmd_unfreeze(args: argparse.Namespace) -> int:
    from agent import freeze
    from agent.custody.store import StoreUnavailable

    config = _config(args)
    scope, name = _freeze_scope(args)
    store = _freezes(config)
    try:
        lifted = store.unfreeze(scope, name)
        others = store.read().entries if lifted is None else ()
    except (freeze.FreezeFileError, StoreUnavailable) as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None
    finally:
        store.close()
    what = "every key (--all)" if scope == "all" else f"{scope} {name!r}"
    if lifted is None:
        raise CliError(f"{what} is not frozen" + (
            "; frozen: " + ", ".join(e.undo().removeprefix("signing-agent unfreeze ") for e in others)
            if others else ""))
    _audit(config, "unfreeze", scope=scope, name=name)
    _freeze_alert(config, "unfreeze", scope=scope, name=name, reason=f"{what} unfrozen")
    print(f"{what} unfrozen: running agents sign its orders again within a second")
    return 0


def _pairs(values: list[str], flag: str, what: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise CliError(f"{flag} takes {what}, not {value[:64]!r}", EXIT_CONFIG)
        out[name] = rest
    return out


def _key_exchanges(args: argparse.Namespace, labels: list[str], given: dict[str, str],
                   key_types: dict[str, str] | None = None) -> tuple[dict[str, str], str | None]:
    """Each policy key's exchange: from --exchange, else from the token (None: why the token was not read).
    KEY_TYPES, when given, receives the type of each key read from the token."""
    exchanges = dict(given)
    if all(label in exchanges for label in labels):
        return exchanges, None
    try:
        _, keyring = _open_keyring(args)
        with keyring:
            listed = _custody_errors(keyring.list_keys)()
    except CliError as exc:
        return exchanges, str(exc)
    for info in listed:
        exchanges.setdefault(info.label, info.exchange)
        if key_types is not None and exchanges[info.label] == info.exchange:
            key_types[info.label] = info.key_type
    return exchanges, None


def cmd_policy_check(args: argparse.Namespace) -> int:
    from agent import policy_lint
    from agent.delivery import check_policy
    from agent.policy import PolicyError, load_policy

    config = _config(args)
    path = args.file or config.policy_file
    given = _pairs(args.exchange, "--exchange", "LABEL=EXCHANGE")
    markets = {}
    for exchange_id, file in _pairs(args.markets, "--markets", "EXCHANGE=FILE").items():
        try:
            markets[exchange_id] = policy_lint.read_markets(Path(file))
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the market list {file}: {getattr(exc, 'strerror', None) or exc}",
                           EXIT_CONFIG) from None
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        raise CliError(str(exc)) from None
    for warning in policy.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    key_types: dict[str, str] = {}
    exchanges, token_problem = _key_exchanges(args, sorted(policy.keys), given, key_types)
    # What the running agent refuses too (agent.delivery): signatures its exchange leaves unbound.
    problems = check_policy(policy, [(label, exchange, key_types.get(label, "")) for label, exchange in exchanges.items()])
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        raise CliError(f"{path}: refused: {len(problems)} key(s) would hand out signatures that do not cover what "
                       "their policy restricts (above); the agent refuses this policy at start and on reload")
    report = policy_lint.lint(policy, exchanges, markets=markets)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if token_problem is not None and report.notes:
        print(f"note: the token was not read for the keys' exchanges: {token_problem}", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    count = len(policy.warnings) + len(report.warnings)
    print(f"{path}: OK ({len(policy.keys)} keys{' + a default' if policy.fallback else ''}, "
          f"{len(policy.bots)} bots, sha256 {policy.digest[:16]})"
          + (f"; {count} warning{'s' if count != 1 else ''} above: the agent accepts it, but read them"
             if count else ""))
    return 0


def cmd_policy_template(args: argparse.Namespace) -> int:
    from agent.names import InvalidName, validate_label
    from agent.policy_templates import default_policy
    from agent.schemes import UnknownExchange

    if args.merge is not None:
        from agent.bots import BotsFileError, validate_bot_name
        from agent.policy_merge import MergeError, merge_into

        try:
            validate_label(args.key)
            if args.bot is not None:
                validate_bot_name(args.bot)
            print(merge_into(args.merge, args.exchange, args.key, args.bot))
        except (InvalidName, BotsFileError, UnknownExchange) as exc:
            raise CliError(str(exc), EXIT_CONFIG) from None
        except MergeError as exc:
            raise CliError(f"cannot merge into {args.merge}: {exc}") from None
        config = _config(args)
        if config.quorum is not None and args.merge.resolve() == config.policy_file.resolve():
            _draft_notice(config, f"adding key {args.key!r}")
        else:
            print("the running agent picks it up within a second; check it: signing-agent policy check",
                  file=sys.stderr)
        return 0
    try:
        print(default_policy(args.exchange, args.key, bot=args.bot), end="")
    except UnknownExchange as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None
    return 0



def _quorum_command(name: str):
    """A quorum command (agent.quorum_cli), imported when it runs: other commands do not load it."""
    def run(args: argparse.Namespace) -> int:
        from agent import quorum_cli

        return getattr(quorum_cli, name)(args)
    return run


HEALTH_SERVICE = "signing_agent.v1.Signer"


def health_check(target: str, timeout: float, service: str = HEALTH_SERVICE) -> tuple[str, str | None]:
    """The agent's gRPC health (standard grpc.health.v1 Check, no credential): (status name, problem)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        name = code.name if code is not None else "UNKNOWN"
        return ("UNREACHABLE" if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                else name), (exc.details() if hasattr(exc, "details") else str(exc))
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), None


def _agent_target(args: argparse.Namespace) -> str:
    return args.target or f"unix://{_config(args).server.socket}"


def cmd_health(args: argparse.Namespace) -> int:
    target = _agent_target(args)
    status, problem = health_check(target, args.timeout, args.service)
    print(f"{status}" + (f" ({target}: {problem})" if problem and not args.quiet else ""))
    return 0 if status == "SERVING" else 1


def _status_lines(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    from agent.audit import read_head
    from agent.policy import PolicyError, load_policy

    config = _config(args)
    target = args.target or f"unix://{config.server.socket}"
    status: dict[str, Any] = {}
    health, problem = health_check(target, args.timeout)
    status["agent"] = {"target": target, "health": health, **({"problem": problem} if problem else {})}
    try:
        _, keyring = _open_keyring(args)
        with keyring:
            keys = _custody_errors(keyring.list_keys)()
        status["token"] = {"label": config.token.label, "up": True, "keys": len(keys),
                           "unregistered": sum(1 for k in keys if not k.registered)}
    except CliError as exc:
        status["token"] = {"label": config.token.label, "up": False, "problem": str(exc)}
    where = {"database": config.store.dsn} if config.bots_in_database else {"file": str(config.bots_file)}
    try:
        with _bots_registry(config) as registry:
            status["bots"] = {**where, "count": len(registry.list())}
    except CliError as exc:
        status["bots"] = {**where, "problem": str(exc)}
    try:
        policy = load_policy(config.policy_file)
        status["policy"] = {"file": str(config.policy_file), "sha256": policy.digest, "keys": len(policy.keys),
                            "bots": len(policy.bots)}
    except PolicyError as exc:
        status["policy"] = {"file": str(config.policy_file), "problem": str(exc)}
    if config.quorum is not None:
        from agent.quorum_cli import quorum_status

        try:
            status["quorum"] = quorum_status(config)
        except CliError as exc:  # the database holding the bundles does not answer: said, not a crash
            status["quorum"] = {"problem": str(exc)}
    try:
        head, seq = read_head(config.audit_file)
        status["audit"] = {"file": str(config.audit_file), "head": head, "lines": seq}
    except FileNotFoundError:
        status["audit"] = {"file": str(config.audit_file), "head": None, "lines": 0}
    except OSError as exc:
        status["audit"] = {"file": str(config.audit_file), "problem": exc.strerror or str(exc)}
    status["metrics"] = {"listen": config.metrics_listen}
    from agent import freeze

    freezes = freeze.read(config.state_dir)
    entries, problem = list(freezes.entries), freezes.problem
    if config.store is not None and config.store.backend == "postgres":  # the table every host reads, too
        from agent.custody.store import StoreUnavailable
        from agent.freeze_pg import WHERE, PostgresFreezes

        try:
            table = PostgresFreezes(config.store.dsn)
            try:
                entries += table.read().entries
            finally:
                table.close()
        except (StoreUnavailable, freeze.FreezeFileError) as exc:
            problem = problem or f"{WHERE} is unreadable ({exc}): running agents treat every key as frozen"
    status["frozen"] = {"entries": [dataclasses.asdict(e) for e in entries], **({"problem": problem} if problem else {})}
    healthy = health == "SERVING" and status["token"]["up"]
    return status, healthy


def cmd_status(args: argparse.Namespace) -> int:
    status, healthy = _status_lines(args)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if healthy else EXIT_UNAVAILABLE
    a, t, b, p, au = status["agent"], status["token"], status["bots"], status["policy"], status["audit"]
    agent_line = a["health"] + (f" ({a['problem']})" if "problem" in a else "")
    if a["health"] == "UNREACHABLE":
        agent_line = "not running (start it: make run, or signing-agent serve)" + (
            f" [{a['problem']}]" if "problem" in a else "")
    print(f"agent:   {agent_line} at {a['target']}")
    print(f"token:   {t['label']!r} " + (f"up, {t['keys']} keys" + (f" ({t['unregistered']} unregistered)"
                                                                       if t["unregistered"] else "")
                                          if t["up"] else f"unreachable: {t['problem']}"))
    where = f"the database ({b['database']})" if "database" in b else b["file"]
    print(f"bots:    {b.get('count', 'unreadable')} in {where}" + (f": {b['problem']}" if "problem" in b else ""))
    print(f"policy:  {p['file']}: " + (f"sha256 {p['sha256']} ({p['keys']} keys, {p['bots']} bots)"
                                       if "sha256" in p else f"refused: {p['problem']}")
          + (" [a draft: with [quorum] the published bundle is in force]" if "quorum" in status else ""))
    if "quorum" in status and "problem" in status["quorum"]:
        print(f"quorum:  unreadable: {status['quorum']['problem']}")
    elif "quorum" in status:
        q = status["quorum"]
        print(f"quorum:  v{q['version']} in force ({q['digest'][:16]}), approved by {', '.join(q['approvers']) or '-'}; "
              f"{q['threshold']} of {len(q['operators'])} operators to loosen; {q['pending']} pending proposal(s)")
    print(f"audit:   {au['file']}: " + (f"problem: {au['problem']}" if "problem" in au else
                                        f"head {au['head']} ({au['lines']} lines)" if au["head"] else "no lines yet"))
    print(f"metrics: {'http://' + status['metrics']['listen'] + '/metrics' if status['metrics']['listen'] else 'off ([metrics] listen)'}")
    frozen = status["frozen"]
    if frozen.get("problem"):
        print(f"frozen:  EVERY KEY: {frozen['problem']}")
    for entry in frozen["entries"]:
        what = "EVERY KEY" if entry["scope"] == "all" else f"{entry['scope']} {entry['name']}"
        print(f"frozen:  {what} by {entry['by']} at {entry['at']}" + (f" ({entry['reason']})" if entry["reason"] else "")
              + f"; lift: signing-agent unfreeze " + ("--all" if entry["scope"] == "all" else f"--{entry['scope']} {entry['name']}"))
    if not frozen["entries"] and not frozen.get("problem"):
        print("frozen:  nothing")
    return 0 if healthy else EXIT_UNAVAILABLE


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from agent.audit import verify_main

    if args.all:
        from agent.audit_ship import verify_all_main

        config = _config(args)
        if config.store is None or config.store.backend != "postgres":
            raise CliError("audit verify --all reads the hosts' chains from the shared database: it needs "
                           "[store] backend = \"postgres\" in the config", EXIT_CONFIG)
        status = verify_all_main(config.store.dsn, sys.stdout)
        if status == 0 and config.quorum is not None:  # every host's applied bundles, against the database's
            from agent.quorum_cli import verify_shipped_bundles

            status = verify_shipped_bundles(config, sys.stdout)
        return status
    config = _config(args) if args.file is None else None
    path = args.file or config.audit_file
    status = verify_main(path, sys.stdout, expect_head=args.head)
    if status == 0 and config is not None and config.quorum is not None:
        from agent.quorum_cli import verify_audited_bundles

        status = verify_audited_bundles(config, path, sys.stdout)
    return status


def _size(text: str) -> int:
    """Bytes from 123, 64K, 64M, 1G (powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (bytes, or with K, M or G)")
    return int(m[1]) * 1024 ** " KMG".index(m[2].upper() or " ")


def cmd_audit_rotate(args: argparse.Namespace) -> int:
    from agent.audit import rotate

    path = args.file or _config(args).audit_file
    try:
        done = rotate(path, min_size=args.min_size, operator=_operator())
    except FileNotFoundError:
        raise CliError(f"audit log not found: {path}", EXIT_CONFIG) from None
    except OSError as exc:
        raise CliError(f"cannot rotate audit log {path}: {exc.strerror or exc}", EXIT_UNAVAILABLE) from None
    if done is None:
        print(f"audit log {path} is under {args.min_size} bytes: not rotated")
        return 0
    print(f"audit log rotated: {done.rotated} (closed at seq {done.lines}, head {done.head});")
    print(f"{path} continues the chain. Keep the rotated file next to it (signing-agent audit verify follows it).")
    return 0


def cmd_token_init_softhsm(args: argparse.Namespace) -> int:
    from agent.tokeninit import TokenInitError, init_softhsm_dir

    if not Path(args.module).exists():
        raise CliError(f"PKCS#11 module {args.module} not found (install softhsm2)", EXIT_UNAVAILABLE)
    try:
        for line in init_softhsm_dir(Path(args.dir), args.label, args.module):
            print(line)
    except TokenInitError as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None
    return 0


def cmd_token_init_opencryptoki(args: argparse.Namespace) -> int:
    from agent.tokeninit import TokenInitError, init_opencryptoki

    if not Path(args.module).exists():
        raise CliError(f"PKCS#11 module {args.module} not found (install opencryptoki)", EXIT_UNAVAILABLE)
    try:
        for line in init_opencryptoki(Path(args.dir), args.label, args.module, args.slot):
            print(line)
    except TokenInitError as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None
    print(f"the agent's [token] table is in {Path(args.dir).resolve() / 'token.toml'}", file=sys.stderr)
    return 0


# -- argument parsing --------------------------------------------------------------


class _VersionAction(argparse.Action):
    """--version, computed only when asked (it may run git)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from agent.buildinfo import build_info

        print(build_info().describe())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signing-agent",
        description="Exchange secrets stay in a PKCS#11 token; bots get signed requests over gRPC.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $SIGNING_AGENT_CONFIG, else ./signing-agent.toml)",
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version, the git commit and the SHA-256 of the dependency lock, and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the agent (Unix socket; TCP opt-in)")
    p.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP (mTLS from [server.tls], or plain on loopback)")
    p.add_argument("--tcp-plaintext", action="store_true", help="accept plain TCP (loopback only)")
    p.add_argument("--workers", type=int, help="agent processes (default: [server] workers, else 1); worker i>0 "
                                               "listens on <socket>.i, TCP is shared")
    p.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="import, list and revoke keys in the token").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    p = keys.add_parser(
        "import",
        help="import an exchange secret (read from stdin) as a non-extractable token key",
        description="The secret is read from standard input (prompted without echo at a terminal). "
        "Example: signing-agent keys import --label main --exchange binance --api-key KEYID < secret.txt",
    )
    p.add_argument("--label", required=True, help="name the bots will use for this key")
    p.add_argument("--exchange", required=True, help="exchange id (ccxt's): binance, okx, kraken... (see README)")
    p.add_argument("--api-key", required=True, help="the exchange's API key id (public half)")
    p.add_argument("--type", choices=("hmac", "ed25519", "rsa", "ec-p256"),
                   help="hmac (the secret string) or a private key (PEM on stdin); default: the exchange's "
                   "usual type (hmac; ec-p256 for coinbase)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="per-key option, e.g. key_version=3 for KuCoin")
    p.add_argument("--wrapped", action="store_true",
                   help="store the secret in the key store ([store]), wrapped under the token's master key, "
                   "instead of as a token object (HMAC secrets; run `store init` once first)")
    p.set_defaults(func=cmd_keys_import)
    p = keys.add_parser(
        "generate",
        help="generate a key pair inside the token (the strongest mode) and print its public key",
        description="The private key is created non-extractable inside the token and never exists elsewhere. "
        "Register the printed public key with the exchange, then run `keys register` with the API key id it issues.",
    )
    p.add_argument("--label", required=True)
    p.add_argument("--exchange", required=True)
    p.add_argument("--type", required=True, choices=("ed25519", "rsa"))
    p.add_argument("--bits", type=int, default=2048, help="RSA modulus size: 2048 (default), 3072 or 4096")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE")
    p.set_defaults(func=cmd_keys_generate)
    p = keys.add_parser("register", help="give a generated key the API key id the exchange issued for it")
    p.add_argument("--label", required=True)
    p.add_argument("--api-key", required=True)
    p.set_defaults(func=cmd_keys_register)
    p = keys.add_parser("public", help="print the public key of an asymmetric key (PEM)")
    p.add_argument("--label", required=True)
    p.set_defaults(func=cmd_keys_public)
    p = keys.add_parser("list", help="list keys: label, exchange, API key id, type, created, fingerprint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("revoke", help="destroy a key in the token; running agents refuse it at once",
                        description="A key generated in the token cannot be recovered once revoked: at a terminal "
                        "the label must be typed to confirm; elsewhere --yes is required.")
    p.add_argument("--label", required=True)
    p.add_argument("--yes", action="store_true", help="confirm revoking a key generated in the token (unrecoverable)")
    p.set_defaults(func=cmd_keys_revoke)

    p = sub.add_parser(
        "sign",
        help="sign one JSON request from stdin through the running agent, as a bot would",
        description='stdin: {"method": "POST", "path": "/api/v3/order", "query": {...}, "body": {...} or "raw"}',
    )
    p.add_argument("--key", required=True, help="label of the key to sign with")
    p.add_argument("--target", help="agent address (default: the config's Unix socket), e.g. 127.0.0.1:50051")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the agent (default 5)")
    p.add_argument("--token-file", type=Path, help="the bot's token (default: $SIGNING_AGENT_TOKEN_FILE)")
    p.set_defaults(func=cmd_sign)

    bots = sub.add_parser("bots", help="bot credentials: add, list, revoke").add_subparsers(
        dest="bots_command", required=True, metavar="ACTION"
    )
    p = bots.add_parser("add", help="add a bot: prints its bearer token once (or registers its mTLS certificate)")
    p.add_argument("name")
    p.add_argument("--token-file", type=Path, help="write the token to this new file (mode 0600) instead of stdout; "
                   "its directory must exist")
    p.add_argument("--force", action="store_true", help="replace an existing --token-file (never a symbolic link)")
    p.add_argument("--cert", type=Path, help="the bot's client certificate (PEM): it authenticates over mTLS")
    p.set_defaults(func=cmd_bots_add)
    p = bots.add_parser("list", help="list bots (names, credential kind, creation)")
    p.set_defaults(func=cmd_bots_list)
    p = bots.add_parser("revoke", help="remove a bot's credential; running agents refuse it within a second")
    p.add_argument("name")
    p.set_defaults(func=cmd_bots_revoke)
    p = bots.add_parser("import-file", help="[store] postgres: move a bots file into the database, once "
                        "(all or none; a credential revoked there is refused)")
    p.add_argument("--file", type=Path, help="the bots file (default: the config's [policy] bots_file)")
    p.set_defaults(func=cmd_bots_import_file)

    policy = sub.add_parser("policy", help="check a policy file, print a safe starting policy").add_subparsers(
        dest="policy_command", required=True, metavar="ACTION"
    )
    p = policy.add_parser(
        "check", help="validate the policy file as the agent would (exit 1 if it is refused), and warn about "
        "endpoints and symbols that cannot work (exit 0)",
        description="Warnings (exit status 0): endpoints unknown to the key's exchange (ccxt's catalogue, when ccxt "
        "is installed), endpoints the default-deny rules always refuse, unified symbols (BTC/USDT), and symbols "
        "missing from a market list given with --markets. Each key's exchange is read from the token, or given "
        "with --exchange.")
    p.add_argument("--file", type=Path, help="policy file (default: the config's)")
    p.add_argument("--exchange", action="append", default=[], metavar="LABEL=EXCHANGE",
                   help="the exchange of a key not in the token (yet); repeatable")
    p.add_argument("--markets", action="append", default=[], metavar="EXCHANGE=FILE",
                   help="the exchange's symbols (a JSON list, ccxt's markets, or one per line): symbols not in it "
                   "are warned about; repeatable")
    p.set_defaults(func=cmd_policy_check)
    p = policy.add_parser("template", help="print a safe default policy for one key of an exchange")
    p.add_argument("--exchange", required=True)
    p.add_argument("--key", required=True, help="the key's label")
    p.add_argument("--bot", help="also grant the key to this bot")
    p.add_argument("--merge", type=Path, metavar="FILE",
                   help="add the key (and the bot's grant) to this policy file instead of printing: the bot's existing "
                   "table gains the key, an existing key table is never overwritten; written in one step")
    p.set_defaults(func=cmd_policy_template)
    p = policy.add_parser("propose", help="[quorum] propose the edited policy and bots files as the next bundle")
    p.add_argument("--proposer", required=True, help="your operator name")
    p.add_argument("--key", type=Path, help="your operator key file: the proposal is signed (your approval)")
    p.add_argument("--token-config", type=Path, metavar="FILE",
                   help="or: a config whose [token] is your own token holding the key (operator keygen --token-config)")
    p.add_argument("--policy", type=Path, help="policy file (default: the config's)")
    p.add_argument("--bots", type=Path, help="bots file (default: the config's)")
    p.add_argument("--summary", default="", help="one line: why")
    p.add_argument("--expires", default="24h", help="approve and publish within (30m, 24h, 7d; default 24h)")
    p.add_argument("--set-operator", action="append", default=[], metavar="NAME=ed25519:KEY",
                   help="add or replace an operator (a loosening: needs the threshold)")
    p.add_argument("--drop-operator", action="append", default=[], metavar="NAME")
    p.add_argument("--threshold", type=int, help="new threshold")
    p.set_defaults(func=_quorum_command("cmd_policy_propose"))
    p = policy.add_parser("approve", help="[quorum] approve a proposal with your operator key")
    p.add_argument("proposal", type=Path)
    p.add_argument("--operator", required=True, help="your operator name")
    p.add_argument("--digest", required=True, metavar="HEX",
                   help="the proposal's digest as `policy propose` printed it (16+ hex digits): what you approve")
    p.add_argument("--key", type=Path, help="your operator key file (operator keygen --out)")
    p.add_argument("--token-config", type=Path, metavar="FILE",
                   help="or: a config whose [token] is your own token holding the key (operator keygen --token-config)")
    p.set_defaults(func=_quorum_command("cmd_policy_approve"))
    p = policy.add_parser("publish", help="[quorum] publish an approved proposal where the agents read it")
    p.add_argument("proposal", type=Path)
    p.set_defaults(func=_quorum_command("cmd_policy_publish"))
    p = policy.add_parser("status", help="[quorum] the version in force, who approved it, pending proposals")
    p.set_defaults(func=_quorum_command("cmd_policy_status"))

    operator = sub.add_parser("operator", help="[quorum] operator keys").add_subparsers(
        dest="operator_command", required=True, metavar="ACTION")
    p = operator.add_parser("keygen", help="make an Ed25519 operator key (a file, mode 0600) and print its public key")
    p.add_argument("name")
    p.add_argument("--out", type=Path, help="where to write the private key (a file, never overwritten)")
    p.add_argument("--token-config", type=Path, metavar="FILE",
                   help="or: generate it in your own PKCS#11 token, named by this file's [token] table (PIN from its "
                   "pin_file or pin_env); the private key never leaves the token")
    p.set_defaults(func=_quorum_command("cmd_operator_keygen"))

    for command, func, verb in (("freeze", cmd_freeze, "stop signing orders and amends for"),
                                ("unfreeze", cmd_unfreeze, "sign orders again for")):
        p = sub.add_parser(command, help=f"kill switch: {verb} a key, a bot or everything (reads and cancels are "
                                         "always signed)",
                           description="In force on every running agent and worker sharing the state dir within a "
                           "second; audited, and alerted to [alerts] webhook. `status` shows what is frozen.")
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--key", help="a key label")
        which.add_argument("--bot", help="a bot name (every key it uses)")
        which.add_argument("--all", action="store_true", help="every key and bot")
        if command == "freeze":
            p.add_argument("--reason", help="why (shown to bots in the refusal, and in status and the audit)")
        p.set_defaults(func=func)

    p = sub.add_parser("status", help="the agent, the token, keys, bots, policy digest, audit head, metrics address",
                       description="Exit 0 when the agent serves and the token answers, 4 otherwise.")
    p.add_argument("--target", help="agent address (default: the config's Unix socket)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the agent (default 2)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("health", help="the agent's gRPC health check: exit 0 SERVING, 1 otherwise",
                       description="Asks the standard grpc.health.v1 Check (no credential needed) and prints the "
                       "status: SERVING, NOT_SERVING (the token does not answer), UNREACHABLE...")
    p.add_argument("--target", help="agent address (default: the config's Unix socket), e.g. unix:///run/agent.sock")
    p.add_argument("--service", default=HEALTH_SERVICE, help=f"service to check (default {HEALTH_SERVICE}; '' = the server)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait (default 2)")
    p.add_argument("--quiet", action="store_true", help="print the status only")
    p.set_defaults(func=cmd_health)

    audit = sub.add_parser("audit", help="the hash-chained audit log").add_subparsers(
        dest="audit_command", required=True, metavar="ACTION"
    )
    p = audit.add_parser("verify", help="check the chain: reports modified, inserted and deleted lines")
    p.add_argument("--file", type=Path, help="audit file (default: the config's)")
    p.add_argument("--head", help="a head hash recorded earlier: also detects lines cut from the end")
    p.add_argument("--all", action="store_true",
                   help="with a PostgreSQL store: every host's chain as shipped to the database")
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser(
        "rotate", help="close the audit log into a dated file and continue its chain in a new one",
        description="Closes the log with a last record naming its new name (FILE.<UTC time>), and starts FILE "
        "anew with a record chained to that one, under the log's lock (the agent keeps writing, into the new "
        "file). `audit verify` follows the rotated files back and reports one missing, swapped, cut or altered. "
        "Never rotate the audit log with logrotate (deploy/logrotate/signing-agent says why).")
    p.add_argument("--file", type=Path, help="audit file (default: the config's)")
    p.add_argument("--min-size", type=_size, default=0, metavar="SIZE",
                   help="rotate only a log of at least SIZE bytes (K, M, G suffixes), e.g. from a daily timer")
    p.set_defaults(func=cmd_audit_rotate)

    store = sub.add_parser("store", help="the wrapped-key store and the token's master key").add_subparsers(
        dest="store_command", required=True)
    p = store.add_parser("init", help="create the token's master key (once) and the store's tables ([store], "
                         "or the store named here)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--postgres", metavar="DSN", help="create the tables in this PostgreSQL database "
                       "(host=... dbname=... user=...; no password: libpq reads .pgpass) instead of [store]'s")
    where.add_argument("--sqlite", metavar="FILE", type=Path, help="create the store in this SQLite file instead")
    p.set_defaults(func=cmd_store_init)
    p = store.add_parser("rotate-master", help="a new master key generation for new keys; --retire-old destroys "
                         "the generations no key uses (blobs are not re-wrapped: see the README)")
    p.add_argument("--retire-old", action="store_true",
                   help="destroy the older master key generations that no row of the store uses")
    p.add_argument("--yes", action="store_true", help="confirm --retire-old without a terminal (cannot be undone)")
    p.set_defaults(func=cmd_store_rotate_master)
    p = store.add_parser("backup", help="write the key store's rows (wrapped blobs) to a file, mode 0600; useless "
                         "without the HSM holding their master key")
    p.add_argument("--out", required=True, type=Path, help="the backup file to create (never overwritten)")
    p.set_defaults(func=cmd_store_backup)
    p = store.add_parser("restore", help="restore a store backup: each blob must unwrap under a master key of "
                         "this token; existing labels are refused unless --replace")
    p.add_argument("file", type=Path, help="a file written by store backup")
    p.add_argument("--replace", action="store_true", help="overwrite the rows of labels the store has already")
    p.set_defaults(func=cmd_store_restore)
    p = store.add_parser("migrate", help="move the token's extractable HMAC keys into the store, wrapped inside "
                         "the token; lists the keys that must be re-imported")
    p.add_argument("--dry-run", action="store_true", help="list what would be done; change nothing")
    p.set_defaults(func=cmd_store_migrate)

    token = sub.add_parser("token", help="development tokens").add_subparsers(
        dest="token_command", required=True, metavar="ACTION"
    )
    p = token.add_parser("init-softhsm", help="create a SoftHSM2 dev token with random PINs (mode 0600)")
    p.add_argument("--dir", required=True, help="directory for softhsm2.conf, tokens/ and the PIN files")
    p.add_argument("--label", required=True, help="token label")
    p.add_argument("--module", default="/usr/lib/softhsm/libsofthsm2.so", help="SoftHSM2 module path")
    p.set_defaults(func=cmd_token_init_softhsm)
    p = token.add_parser(
        "init-opencryptoki",
        help="initialise a free opencryptoki token with random PINs (mode 0600)",
        description="Needs opencryptoki's slot daemon (pkcsslotd, started by root) and a token still at the "
        "factory SO PIN. Writes user.pin, so.pin and token.toml (the agent's [token] table) into --dir.",
    )
    p.add_argument("--dir", required=True, help="directory for the PIN files and token.toml")
    p.add_argument("--label", required=True, help="token label")
    p.add_argument("--module", default="/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so",
                   help="opencryptoki's PKCS#11 module path")
    p.add_argument("--slot", type=int, help="the slot to initialise (default: the only free one; see pkcsconf -t)")
    p.set_defaults(func=cmd_token_init_opencryptoki)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"signing-agent: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
