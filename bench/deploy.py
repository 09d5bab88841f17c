"""Throw-away deployments for the benchmark: a SoftHSM2 token, keys, bot credentials, agent processes.

Everything goes through the operator's commands (`signing-agent token init-softhsm`,
`keys import` with the secret on stdin, `bots add`, `serve`), except the bulk of the
scale test's keys: see `fill`.

    python -m bench.deploy fill --config C --count N --prefix P      (run by bench.run)
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

MODULE = os.environ.get("SOFTHSM2_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
ROOT = Path(__file__).resolve().parents[1]
BENCH_LABEL = "bench-binance"
BENCH_BOT = "bench"
API_KEY = "bench-api-key-0123456789abcdef0123456789abcdef0123456789abcdef"


def fill(keyring, keys: Iterable[tuple[str, bytes]], *, exchange_id: str = "binance") -> int:
    """Write HMAC keys straight into the token, as `keys import` writes them; returns how many.

    Why a shortcut: an import searches the whole token before and after writing (is the label
    free? is it unique?), so its cost grows with the key count (measured: 24 ms per key at 100
    keys, 44 ms at 300 on disk; about 2 s at 10,000 on tmpfs). Here each key is the same two objects
    from custody's own templates and encodings (the key object with its metadata, then its
    account), in one session, without those searches (the labels are fresh and distinct by
    construction) and without the per-key self-test. tests/token/test_lookup_scale.py checks that
    the objects equal those of an import, attribute by attribute.
    """
    import hashlib
    import hmac as hmac_

    from agent.custody import objects, validate_secret
    from agent.names import validate_label
    from agent.provision import exchange_rules

    exchange = exchange_rules(exchange_id)
    options = exchange.resolve_options({})
    count = 0
    with keyring.session() as session:  # custody's own lock: one token call at a time
        for label, secret in keys:
            validate_label(label)
            validate_secret(secret, api_key=API_KEY)
            key = exchange.hmac_key(secret)
            fp = objects.fingerprint_of(hmac_.new(key, objects.FINGERPRINT_MESSAGE, hashlib.sha256).digest())
            info = objects.new_info(label, exchange.id, API_KEY, "hmac", fp, options, None)
            material = objects.hmac_key_material(key)
            try:
                session.create_object(objects.hmac_key_template(label, objects.encode_metadata(info), material))
            finally:
                material[:] = b"\x00" * len(material)
            session.create_object(objects.account_template(label, objects.encode_account(API_KEY, None)))
            count += 1
    return count


def new_secret() -> str:
    return secrets.token_hex(32)


@dataclass
class Deployment:
    """A token, a config and (when the agent has them) a bot credential and a policy."""

    root: Path
    name: str
    label: str = BENCH_LABEL
    bearer_file: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "agent.toml"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "agent.sock"

    def variant(self, name: str) -> Path:
        """A second config for the same token, serving on its own socket (run/NAME.sock)."""
        path = self.root / f"{name}.toml"
        path.write_text(self.config.read_text().replace('socket = "run/agent.sock"', f'socket = "run/{name}.sock"'))
        return path

    def cli(self, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "agent", "--config", str(self.config), *args], input=stdin,
                              capture_output=True, text=True, cwd=self.root, timeout=600)
        if check and proc.returncode != 0:
            raise RuntimeError(f"signing-agent {' '.join(args[:2])} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    @classmethod
    def create(cls, base: Path, name: str) -> "Deployment":
        root = base / name
        root.mkdir(parents=True)
        d = cls(root=root, name=name)
        subprocess.run([sys.executable, "-m", "agent", "token", "init-softhsm", "--dir", str(root / "softhsm"),
                        "--label", f"bench-{name}", "--module", MODULE],
                       check=True, capture_output=True, cwd=ROOT, timeout=120)
        d.config.write_text(
            f'[token]\nmodule = "{MODULE}"\nlabel = "bench-{name}"\npin_file = "softhsm/user.pin"\n'
            '[token.env]\nSOFTHSM2_CONF = "softhsm/softhsm2.conf"\n'
            '[server]\nsocket = "run/agent.sock"\n'
            '[state]\ndir = "state"\n'
        )
        d.import_key(d.label)
        d._authorize()
        return d

    def import_key(self, label: str) -> float:
        """`keys import` of a fresh secret (on stdin, as an operator does); returns its seconds."""
        t0 = time.perf_counter()
        self.cli("keys", "import", "--label", label, "--exchange", "binance", "--api-key", API_KEY, "--type", "hmac",
                 stdin=new_secret() + "\n")
        return time.perf_counter() - t0

    def _authorize(self) -> None:
        """A bearer token for the bench's bot, and a policy allowing its one request, if the agent has them."""
        if self.cli("bots", "--help", check=False).returncode != 0:
            self.notes.append("this agent version has no caller authentication: calls carry no token")
            return
        token_file = self.root / "bench.token"
        self.cli("bots", "add", BENCH_BOT, "--token-file", str(token_file))
        self.bearer_file = token_file
        policy = self.root / "policy.toml"
        # Generous on purpose: the bench measures signing, not the rate limiter.
        policy.write_text(
            f'[bots.{BENCH_BOT}]\nkeys = ["*"]\n\n'
            '[keys."*"]\nendpoints = ["POST /api/v3/order"]\nsymbols = ["BTCUSDT"]\n'
        )
        policy.chmod(0o600)

    def flood_tokens(self, count: int) -> list[str]:
        """The bench bot's token and COUNT more bots' (`bots add`; no policy grant: they only Watch),
        for bench.flood. Empty when the agent has no caller authentication."""
        if self.bearer_file is None:
            return []
        tokens = [self.bearer_file.read_text().strip()]
        for i in range(count):
            path = self.root / f"flood-{i}.token"
            if not path.exists():
                self.cli("bots", "add", f"flood-{i}", "--token-file", str(path))
            tokens.append(path.read_text().strip())
        return tokens

    def fill(self, count: int, prefix: str = "bulk") -> float:
        """Add COUNT keys with the shortcut (in a separate process: it loads the module); returns seconds."""
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench.deploy", "fill", "--config", str(self.config),
                        "--count", str(count), "--prefix", prefix], check=True, cwd=ROOT, timeout=3600)
        return time.perf_counter() - t0


def _ready(target: str) -> bool:
    import grpc

    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=1)
            return True
        except grpc.FutureTimeoutError:
            return False


def serve_help() -> str:
    return subprocess.run([sys.executable, "-m", "agent", "serve", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60).stdout


@dataclass
class AgentProcess:
    """`signing-agent serve` of a deployment, with its log in the deployment's directory."""

    deployment: Deployment
    tcp_port: int | None = None
    workers: int = 1
    config: Path | None = None  # default: the deployment's
    proc: subprocess.Popen | None = None
    startup_s: float = 0.0

    @property
    def socket(self) -> Path:
        if self.config is None:
            return self.deployment.socket
        from agent.config import load_config

        return load_config(self.config).server.socket

    def start(self, timeout: float = 600) -> "AgentProcess":
        from agent.workers import worker_socket

        args = [sys.executable, "-m", "agent", "--config", str(self.config or self.deployment.config), "serve"]
        if self.tcp_port:
            args += ["--tcp", f"127.0.0.1:{self.tcp_port}"]
            if "--tcp-plaintext" in serve_help():
                args.append("--tcp-plaintext")
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        log = self.deployment.root / f"agent-{int(time.time() * 1000)}.log"
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=self.deployment.root,
                                     start_new_session=True)
        sockets = [worker_socket(self.socket, i) for i in range(self.workers)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited {self.proc.returncode}: {log.read_text()[-2000:]}")
            if all(path.exists() for path in sockets) and all(_ready(f"unix:{path}") for path in sockets):
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"the agent did not come up in {timeout} s: {log.read_text()[-2000:]}")
        self.startup_s = time.perf_counter() - t0
        return self

    @property
    def unix_target(self) -> str:
        from agent.workers import unix_target

        return unix_target(self.socket, self.workers)

    @property
    def tcp_target(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deploy")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fill")
    p.add_argument("--config", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--prefix", default="bulk")
    args = parser.parse_args(argv)
    from agent.config import load_config
    from agent.custody import Keyring

    with Keyring.open(load_config(Path(args.config)).token) as keyring:
        width = len(str(args.count))
        done = fill(keyring, ((f"{args.prefix}-{i:0{width}d}", new_secret().encode()) for i in range(args.count)))
    print(f"{done} keys written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
