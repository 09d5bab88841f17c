"""Calling a real agent from tests the way a bot does, and what it leaves behind: a Sign call by gRPC with
a bearer token, the refusal it answers, the audit it writes, the alerts its webhook receives."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc

from signing_agent_client._proto import signer_pb2, signer_pb2_grpc


class Receiver:
    """A webhook receiver on loopback: keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for alert in list(self.alerts):
                if predicate(alert):
                    return alert
            time.sleep(0.02)
        raise AssertionError(f"no matching alert among {[a.get('kind') for a in self.alerts]}")


def sign_at(target: str, msg: signer_pb2.SignRequest, token: str | None):
    """(status, details, signed reply or None) of one Sign call to TARGET as the bot holding TOKEN."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(target) as channel:
        try:
            reply = signer_pb2_grpc.SignerStub(channel).Sign(msg, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details(), None
    return grpc.StatusCode.OK, "", reply


def read_audit(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def refused(result, code: grpc.StatusCode, rule: str) -> str:
    got_code, details, reply = result
    assert reply is None, "a refused request must not be signed"
    assert got_code == code, (got_code, details)
    assert f"'{rule}" in details, details  # "refused by rule 'forbidden:withdrawal': ..."
    return details
