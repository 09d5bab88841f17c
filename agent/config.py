"""The agent's configuration file (TOML).

Example (the dev default, `signing-agent.toml` at the project root):

    [token]
    module = "/usr/lib/softhsm/libsofthsm2.so"
    label = "signing-agent-dev"
    pin_file = "softhsm/user.pin"          # mode 0600; or: pin_env = "SIGNING_AGENT_PIN"

    [token.env]                            # environment the module reads at load time
    SOFTHSM2_CONF = "softhsm/softhsm2.conf"

    [server]
    socket = "run/agent.sock"              # Unix socket, created with mode 0600
    # socket_group = "trading"             # or 0660 for this group (bots in it, each with a token)
    # tcp = "127.0.0.1:50051"              # opt-in: needs [server.tls], or tcp_plaintext on loopback
    # tcp_plaintext = true                 # plain TCP, loopback only
    # [server.tls]                         # mTLS: bots present client certificates from this CA
    # cert_file = "tls/agent.pem"
    # key_file = "tls/agent.key"
    # client_ca_file = "tls/bots-ca.pem"

    [state]
    dir = "state"                          # nonce high-water marks (mode 0700); keep it across restarts
    # sync_budgets = true                  # notional budgets on disk before an order is signed (about 0.1 ms)

    [policy]
    file = "policy.toml"                   # who may sign what; reloaded live
    bots_file = "bots.toml"                # bot credentials (hashes), managed by `signing-agent bots`

    [audit]
    file = "state/audit.jsonl"             # hash-chained; `signing-agent audit verify`

    [alerts]
    # webhook = "https://alerts.example/hook"   # JSON POSTs; also always in the log

    [metrics]
    # listen = "127.0.0.1:9464"            # Prometheus /metrics (loopback only)

    [send]                                 # Send: the agent places requests itself (keys with delivery "send")
    # ca_file = "tls/test-ca.pem"          # trust these CAs instead of the system store (tests)
    # proxy = "http://proxy.internal:3128" # outbound proxy; HTTPS through it is still verified end to end
    # connect_timeout_ms = 3000
    # read_timeout_ms = 10000
    # total_timeout_ms = 15000             # one attempt, first byte out to last byte in
    # pool_per_host = 8                    # kept-alive connections per exchange host

    # [quorum]                             # policy and bots only from bundles operators approved
    # threshold = 2                        # approvals to loosen anything (one tightens)
    # bundles = "bundles"                  # published here, or in the database with [store] backend = "postgres"
    # [quorum.operators]                   # `signing-agent operator keygen NAME --out FILE`
    # alice = "ed25519:..."

    [market]                               # the exchanges' public tickers (price_band_pct, min_quote_volume_24h)
    # ttl_ms = 1000                        # fetched again after this
    # stale_ms = 10000                     # orders needing a ticker this old are refused, and it alerts
    # [market.urls]
    # binance = "https://api.binance.com"  # per market (agent.market.SOURCES): tests point them at a local server

Relative paths are relative to the directory of the config file, so the agent
behaves the same from any working directory. The PIN itself is never in the
config file and never on a command line.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agent.market import SOURCES, MarketSettings
from agent.send.transport import SendSettings
from agent.toml_schema import BOOL, INT, STR, TEXT, Field, Invalid, Schema, Where, did_you_mean, table_of

DEFAULT_CONFIG_NAME = "signing-agent.toml"
CONFIG_ENV = "SIGNING_AGENT_CONFIG"


class ConfigError(Exception):
    """The configuration is missing or wrong; the message says what to fix."""


@dataclass(frozen=True)
class TokenConfig:
    module: Path
    label: str
    pin_file: Path | None
    pin_env: str | None
    env: dict[str, str] = field(default_factory=dict)

    def read_pin(self) -> str:
        """Read the user PIN from its file (which must not be readable by others) or its variable."""
        if self.pin_file is not None:
            try:
                st = self.pin_file.stat()
            except FileNotFoundError:
                raise ConfigError(
                    f"PIN file {self.pin_file} does not exist (create the dev token with `make token`)"
                ) from None
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"PIN file {self.pin_file} is accessible by group or others "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {self.pin_file}"
                )
            try:
                pin = self.pin_file.read_text(encoding="utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise ConfigError(f"PIN file {self.pin_file} is not UTF-8 text") from None
            source = f"PIN file {self.pin_file}"
        else:
            assert self.pin_env is not None
            pin = os.environ.get(self.pin_env, "")
            source = f"environment variable {self.pin_env}"
        if not pin:
            raise ConfigError(f"{source} is empty")
        return pin


@dataclass(frozen=True)
class TcpListen:
    host: str
    port: int

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    client_ca_file: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, client CA) as PEM bytes."""
        out = []
        for what, path in (("cert_file", self.cert_file), ("key_file", self.key_file),
                           ("client_ca_file", self.client_ca_file)):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"[server.tls] {what} {path}: {exc.strerror}") from None
        return out[0], out[1], out[2]


@dataclass(frozen=True)
class ServerConfig:
    socket: Path
    tcp: TcpListen | None
    socket_group: str | None = None
    tls: TlsConfig | None = None
    tcp_plaintext: bool = False  # plain TCP accepted (loopback only; checked in parse_tcp)
    workers: int = 1  # agent processes; worker i > 0 listens on <socket>.i, TCP is shared (SO_REUSEPORT)

    def check_listeners(self) -> None:
        """TCP needs mTLS, or an explicit opt-in to plain TCP (which parse_tcp keeps on loopback)."""
        if self.tcp is not None and self.tls is None and not self.tcp_plaintext:
            raise ConfigError(
                f"TCP listener {self.tcp.target} without TLS: configure [server.tls] (mTLS), or opt in to plain "
                "TCP on loopback (tcp_plaintext = true, or serve --tcp-plaintext); bots still need their tokens"
            )
        if self.tls is not None and self.tcp is None:
            raise ConfigError("[server.tls] is set but there is no TCP listener (tcp = \"HOST:PORT\")")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"workers must be 1 to 64, not {self.workers}")


@dataclass(frozen=True)
class Config:
    path: Path
    token: TokenConfig
    server: ServerConfig
    state_dir: Path  # the agent's durable state: nonce high-water marks
    # Each notional-budget charge fdatasync'd before the order is signed (agent.budgets): a host crash forgets
    # no spending. Off: a power loss may forget the last orders' spending, for about 0.1 ms less a signature.
    sync_budgets: bool = True
    policy_file: Path = Path("policy.toml")
    bots_file: Path = Path("bots.toml")
    audit_file: Path = Path("state/audit.jsonl")
    webhook: str | None = None
    metrics_listen: str | None = None  # "127.0.0.1:9464": Prometheus /metrics, loopback only
    send: SendSettings = field(default_factory=SendSettings)  # [send]: how Send reaches the exchanges
    quorum: "QuorumConfig | None" = None  # policy only from bundles k operators approved (agent.quorum)
    market: MarketSettings = MarketSettings()  # the tickers price bands and thin markets read (agent.market)
    store: StoreConfig | None = None  # wrapped keys' store; None: token objects only

    @property
    def bots_in_database(self) -> bool:
        """Bot credentials live in the PostgreSQL database the hosts share (agent.bots_db), not in bots_file.
        Not with a quorum: then credentials come only from the bundles operators approved."""
        return self.store is not None and self.store.backend == "postgres" and self.quorum is None

    @property
    def bundles_in_database(self) -> bool:
        """A quorum's published bundles live in the PostgreSQL database the hosts share (agent.quorum_pg),
        so every host enforces one chain; without PostgreSQL, in the [quorum] bundles directory."""
        return self.store is not None and self.store.backend == "postgres" and self.quorum is not None


@dataclass(frozen=True)
class QuorumConfig:
    bundles: Path  # published bundles; proposals under bundles/proposals
    operators: dict[str, str]  # the first operator set: name -> "ed25519:<base64>"
    threshold: int


@dataclass(frozen=True)
class StoreConfig:
    """[store]: where wrapped keys (and, with PostgreSQL, the state agent hosts share) live."""

    backend: str  # "sqlite" (one host) | "postgres" (several hosts: keys, nonces, rate buckets, bots, the audit)
    sqlite_file: Path
    dsn: str | None = None
    host: str = ""  # this host's name in the shared audit (agent.audit_ship): one per audit chain

    def open(self):
        from agent.custody.store import PostgresKeyStore, SqliteKeyStore

        if self.backend == "postgres":
            assert self.dsn is not None
            return PostgresKeyStore(self.dsn)
        return SqliteKeyStore(self.sqlite_file)


def check_dsn(dsn: str) -> str:
    """DSN, if libpq can read it and it holds no password ([store] dsn, `store init --postgres`)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        fields = conninfo_to_dict(dsn)
    except ProgrammingError:
        # libpq's message quotes the string, which may hold a password: not repeated here.
        raise Invalid("is not a libpq connection string: write host=... dbname=... user=..., "
                      "or postgresql://user@host/dbname") from None
    # A DSN is shown in `status` and may end up in a process listing or a log: passwords go in
    # ~/.pgpass or PGPASSFILE (libpq reads them), or the server trusts a local socket / a client certificate.
    if "password" in fields:
        raise Invalid("must not contain a password: put it in a .pgpass file (PGPASSFILE) that libpq reads")
    return dsn


def default_config_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else Path.cwd() / DEFAULT_CONFIG_NAME


def parse_tcp(value: str, *, tls: bool = False) -> TcpListen:
    """Parse HOST:PORT; without TLS only loopback addresses are accepted."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"tcp listen address {value!r} is not HOST:PORT")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            raise ConfigError(f"tcp listen host {host!r} is not an IP address or 'localhost'") from None
        if not loopback and not tls:
            raise ConfigError(
                f"refusing to listen on {host}: plain TCP without TLS is only allowed on loopback "
                "(127.0.0.1 or ::1); configure [server.tls] (mTLS), or use the Unix socket"
            )
    return TcpListen(host="127.0.0.1" if host == "localhost" else host, port=int(port_text))


def _http_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _loopback_target(value: str) -> str:
    try:
        return parse_tcp(value).target
    except ConfigError as exc:
        raise Invalid(f"must be a loopback HOST:PORT ({exc})") from None


def _market_urls(urls: dict[str, str]) -> dict[str, str]:
    for market, url in urls.items():
        if market not in SOURCES:
            raise Invalid(f"has market {market[:40]!r}{did_you_mean(market, SOURCES)}; known: {sorted(SOURCES)}")
        if not _http_url(url):
            raise Invalid(f"{market} must be an http:// or https:// URL")
    return urls


_TOKEN = Schema(
    Field("module", TEXT, required="a non-empty string: the PKCS#11 module's path"),
    Field("label", TEXT, required="a non-empty string: the token's label"),
    Field("pin_file", TEXT),
    Field("pin_env", TEXT),
    Field("env", table_of(STR), default={}),  # environment the module reads at load time
    one_of=[("pin_file", "pin_env")],
    refused={"pin": "a PIN is never written in the config; use 'pin_file' or 'pin_env'"},
)
_TLS = Schema(*(Field(name, TEXT, required="a non-empty string: a PEM file's path")
                for name in ("cert_file", "key_file", "client_ca_file")))
_SERVER = Schema(
    Field("socket", TEXT, default="run/agent.sock"),
    Field("socket_group", TEXT, expect="a group name"),
    Field("tcp", STR, default=""),  # "": no TCP listener
    Field("tcp_plaintext", BOOL, default=False),
    Field("tls", schema=_TLS),  # mTLS
    Field("workers", INT, default=1),  # range: ServerConfig.check_listeners (serve --workers may override it)
)
_CONFIG = Schema(
    Field("token", schema=_TOKEN, required="module, label, and pin_file or pin_env"),
    Field("server", schema=_SERVER),
    Field("state", schema=Schema(Field("dir", STR, default="state"), Field("sync_budgets", BOOL, default=True))),
    Field("policy", schema=Schema(Field("file", TEXT, default="policy.toml"),
                                  Field("bots_file", TEXT, default="bots.toml"))),
    Field("audit", schema=Schema(Field("file", TEXT))),
    Field("alerts", schema=Schema(Field("webhook", TEXT, check=_http_url, expect="an http:// or https:// URL"))),
    Field("metrics", schema=Schema(Field("listen", TEXT, convert=_loopback_target))),
    Field("send", schema=Schema(
        Field("ca_file", TEXT),
        Field("proxy", TEXT, check=_http_url, expect="an http:// or https:// URL of the proxy"),
        Field("connect_timeout_ms", INT, default=3_000, low=100, high=60_000),
        Field("read_timeout_ms", INT, default=10_000, low=100, high=120_000),
        Field("total_timeout_ms", INT, default=15_000, low=100, high=300_000),
        Field("pool_per_host", INT, default=8, low=1, high=256),
    )),
    Field("quorum", schema=Schema(
        Field("bundles", TEXT, default="bundles"),
        Field("threshold", INT, required="the number of operators who must approve a loosening"),
        Field("operators", table_of(STR), required="name = \"ed25519:...\" per operator "
                                                   "(`signing-agent operator keygen`)"),
    )),
    Field("market", schema=Schema(
        Field("ttl_ms", INT, default=1000, low=100, high=10_000),
        Field("stale_ms", INT, default=10_000, low=1000, high=300_000),
        Field("timeout_ms", INT, default=1000, low=100, high=10_000),
        Field("urls", table_of(TEXT), default={}, convert=_market_urls),
    )),
    Field("store", schema=Schema(
        Field("backend", STR, default="", choices=("", "sqlite", "postgres")),
        Field("sqlite_file", TEXT, default="state/keys.db"),
        Field("dsn", TEXT, convert=check_dsn),
        Field("host", TEXT, check=lambda v: bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", v)),
              expect="a host name: letters, digits, '.', '_', '-' (default: this machine's name)"),
    )),
)


def load_config(path: Path | None = None) -> Config:
    path = (path or default_config_path()).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found (pass --config, set {CONFIG_ENV}, or run from the project directory)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    base = path.parent

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    c = _CONFIG.read(raw, Where(str(path), ConfigError))
    token, server, state_dir = c["token"], c["server"], resolve(c["state"]["dir"])
    tls = server["tls"]
    tls = TlsConfig(*(resolve(tls[k]) for k in ("cert_file", "key_file", "client_ca_file"))) if tls else None
    try:
        tcp = parse_tcp(server["tcp"], tls=tls is not None) if server["tcp"] else None
    except ConfigError as exc:
        raise ConfigError(f"{path}: [server] tcp: {exc}") from None
    audit_file = resolve(c["audit"]["file"] or str(state_dir / "audit.jsonl"))
    store = _store(c["store"], resolve, path, audit_file)
    quorum = _quorum(c["quorum"], resolve, path)
    return Config(
        path=path,
        token=TokenConfig(
            module=Path(token["module"]),
            label=token["label"],
            pin_file=resolve(token["pin_file"]) if token["pin_file"] is not None else None,
            pin_env=token["pin_env"],
            # Values that look like relative paths are resolved against the config directory.
            env={k: str(resolve(v)) if ("/" in v and not v.startswith("/")) else v for k, v in token["env"].items()},
        ),
        server=ServerConfig(socket=resolve(server["socket"]), tcp=tcp, socket_group=server["socket_group"], tls=tls,
                            tcp_plaintext=server["tcp_plaintext"], workers=server["workers"]),
        state_dir=state_dir,
        sync_budgets=c["state"]["sync_budgets"],
        policy_file=resolve(c["policy"]["file"]),
        bots_file=resolve(c["policy"]["bots_file"]),
        audit_file=audit_file,
        webhook=c["alerts"]["webhook"],
        metrics_listen=c["metrics"]["listen"],
        send=_send_settings(c["send"], resolve),
        quorum=quorum,
        market=MarketSettings(ttl=c["market"]["ttl_ms"] / 1000, stale=c["market"]["stale_ms"] / 1000,
                              timeout=c["market"]["timeout_ms"] / 1000, urls=c["market"]["urls"]),
        store=store,
    )


def _send_settings(v: dict, resolve) -> SendSettings:
    return SendSettings(ca_file=resolve(v["ca_file"]) if v["ca_file"] else None, proxy=v["proxy"],
                        connect_timeout_s=v["connect_timeout_ms"] / 1000, read_timeout_s=v["read_timeout_ms"] / 1000,
                        total_timeout_s=v["total_timeout_ms"] / 1000, pool_per_host=v["pool_per_host"])


def _quorum(q: dict | None, resolve: "Callable[[str], Path]", path: Path) -> QuorumConfig | None:
    if not q:
        return None
    from agent.quorum import Operators, QuorumError

    try:  # checked now: a typo in a key or a threshold above the count stops the start, not a reload
        Operators.parse(q["operators"], q["threshold"], where=f"{path}: [quorum]")
    except QuorumError as exc:
        raise ConfigError(str(exc)) from None
    return QuorumConfig(bundles=resolve(q["bundles"]), operators=dict(q["operators"]), threshold=q["threshold"])


def _store(table: dict, resolve, path: Path, audit_file: Path) -> StoreConfig | None:
    if not table["backend"]:
        return None
    if table["backend"] == "postgres" and not table["dsn"]:
        raise ConfigError(f"{path}: [store] backend = \"postgres\" needs dsn = \"host=... dbname=...\"")
    return StoreConfig(backend=table["backend"], sqlite_file=resolve(table["sqlite_file"]), dsn=table["dsn"],
                       # One chain per name: two agents of one machine write two audit files.
                       host=table["host"] or f"{socket.gethostname()}:{audit_file}")
