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

    [policy]
    file = "policy.toml"                   # who may sign what; reloaded live
    bots_file = "bots.toml"                # bot credentials (hashes), managed by `signing-agent bots`

    [audit]
    file = "state/audit.jsonl"             # hash-chained; `signing-agent audit verify`

    [alerts]
    # webhook = "https://alerts.example/hook"   # JSON POSTs; also always in the log

    [metrics]
    # listen = "127.0.0.1:9464"            # Prometheus /metrics (loopback only)

Relative paths are relative to the directory of the config file, so the agent
behaves the same from any working directory. The PIN itself is never in the
config file and never on a command line.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

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
    policy_file: Path = Path("policy.toml")
    bots_file: Path = Path("bots.toml")
    audit_file: Path = Path("state/audit.jsonl")
    webhook: str | None = None
    metrics_listen: str | None = None  # "127.0.0.1:9464": Prometheus /metrics, loopback only


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

    token_raw = raw.get("token")
    if not isinstance(token_raw, dict):
        raise ConfigError(f"{path}: missing [token] table")
    for key in ("module", "label"):
        if not isinstance(token_raw.get(key), str) or not token_raw[key]:
            raise ConfigError(f"{path}: [token] needs a non-empty string '{key}'")
    if "pin" in token_raw:
        raise ConfigError(f"{path}: a PIN is never written in the config; use 'pin_file' or 'pin_env'")
    pin_file, pin_env = token_raw.get("pin_file"), token_raw.get("pin_env")
    if (pin_file is None) == (pin_env is None):
        raise ConfigError(f"{path}: [token] needs exactly one of 'pin_file' or 'pin_env'")
    env_raw = token_raw.get("env", {})
    if not isinstance(env_raw, dict) or not all(isinstance(v, str) for v in env_raw.values()):
        raise ConfigError(f"{path}: [token.env] values must be strings")
    # Values that look like relative paths are resolved against the config directory.
    env = {k: str(resolve(v)) if ("/" in v and not v.startswith("/")) else v for k, v in env_raw.items()}
    token = TokenConfig(
        module=Path(token_raw["module"]),
        label=token_raw["label"],
        pin_file=resolve(pin_file) if pin_file is not None else None,
        pin_env=pin_env,
        env=env,
    )

    server_raw = raw.get("server", {})
    if not isinstance(server_raw, dict):
        raise ConfigError(f"{path}: [server] must be a table")
    unknown = sorted(set(server_raw) - {"socket", "socket_group", "tcp", "tcp_plaintext", "tls", "workers"})
    if unknown:
        raise ConfigError(f"{path}: [server] has unknown keys {unknown}")
    socket = resolve(server_raw.get("socket", "run/agent.sock"))
    socket_group = server_raw.get("socket_group")
    if socket_group is not None and (not isinstance(socket_group, str) or not socket_group):
        raise ConfigError(f"{path}: [server] socket_group must be a group name")
    tls_raw = server_raw.get("tls")
    tls = None
    if tls_raw is not None:
        if not isinstance(tls_raw, dict) or not all(
            isinstance(tls_raw.get(k), str) and tls_raw[k] for k in ("cert_file", "key_file", "client_ca_file")
        ):
            raise ConfigError(f"{path}: [server.tls] needs cert_file, key_file and client_ca_file (paths)")
        tls = TlsConfig(resolve(tls_raw["cert_file"]), resolve(tls_raw["key_file"]), resolve(tls_raw["client_ca_file"]))
    tcp_raw = server_raw.get("tcp")
    tcp = parse_tcp(tcp_raw, tls=tls is not None) if tcp_raw else None
    workers = server_raw.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise ConfigError(f"{path}: [server] workers must be an integer")
    plaintext = server_raw.get("tcp_plaintext", False)
    if not isinstance(plaintext, bool):
        raise ConfigError(f"{path}: [server] tcp_plaintext must be true or false")
    state_raw = raw.get("state", {})
    if not isinstance(state_raw, dict) or not isinstance(state_raw.get("dir", "state"), str):
        raise ConfigError(f"{path}: [state] must be a table with a string 'dir'")
    state_dir = resolve(state_raw.get("dir", "state"))

    def table(name: str, keys: set[str]) -> dict:
        value = raw.get(name, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
            raise ConfigError(f"{path}: [{name}] must be a table of non-empty strings")
        extra = sorted(set(value) - keys)
        if extra:
            raise ConfigError(f"{path}: [{name}] has unknown keys {extra}; known: {sorted(keys)}")
        return value

    policy_raw = table("policy", {"file", "bots_file"})
    audit_raw = table("audit", {"file"})
    alerts_raw = table("alerts", {"webhook"})
    metrics_raw = table("metrics", {"listen"})
    metrics_listen = metrics_raw.get("listen")
    if metrics_listen is not None:
        try:
            metrics_listen = parse_tcp(metrics_listen).target
        except ConfigError as exc:
            raise ConfigError(f"{path}: [metrics] listen: {exc}") from None
    webhook = alerts_raw.get("webhook")
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: [alerts] webhook must be an http:// or https:// URL")
    return Config(
        path=path,
        token=token,
        server=ServerConfig(socket=socket, tcp=tcp, socket_group=socket_group, tls=tls, tcp_plaintext=plaintext,
                            workers=workers),
        state_dir=state_dir,
        policy_file=resolve(policy_raw.get("file", "policy.toml")),
        bots_file=resolve(policy_raw.get("bots_file", "bots.toml")),
        audit_file=resolve(audit_raw.get("file", str(state_dir / "audit.jsonl"))),
        webhook=webhook,
        metrics_listen=metrics_listen,
    )
