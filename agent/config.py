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
    # tcp = "127.0.0.1:50051"              # opt-in, loopback only

    [state]
    dir = "state"                          # nonce high-water marks (mode 0700); keep it across restarts

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
class ServerConfig:
    socket: Path
    tcp: TcpListen | None


@dataclass(frozen=True)
class Config:
    path: Path
    token: TokenConfig
    server: ServerConfig
    state_dir: Path  # the agent's durable state: nonce high-water marks


def default_config_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else Path.cwd() / DEFAULT_CONFIG_NAME


def parse_tcp(value: str) -> TcpListen:
    """Parse HOST:PORT; only loopback addresses are accepted (there is no TLS yet)."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"tcp listen address {value!r} is not HOST:PORT")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            raise ConfigError(f"tcp listen host {host!r} is not an IP address or 'localhost'") from None
        if not loopback:
            raise ConfigError(
                f"refusing to listen on {host}: plain TCP without TLS is only allowed on loopback "
                "(127.0.0.1 or ::1); use the Unix socket, or bind to loopback"
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
    socket = resolve(server_raw.get("socket", "run/agent.sock"))
    tcp_raw = server_raw.get("tcp")
    tcp = parse_tcp(tcp_raw) if tcp_raw else None
    state_raw = raw.get("state", {})
    if not isinstance(state_raw, dict) or not isinstance(state_raw.get("dir", "state"), str):
        raise ConfigError(f"{path}: [state] must be a table with a string 'dir'")
    state_dir = resolve(state_raw.get("dir", "state"))
    return Config(path=path, token=token, server=ServerConfig(socket=socket, tcp=tcp), state_dir=state_dir)
