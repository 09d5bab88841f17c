"""Serving: the Signer service on a Unix socket (mode 0600, or 0660 for one group) and, opt-in, TCP
(mTLS, or plain on loopback). SIGHUP re-reads the policy and the bot credentials at once."""

from __future__ import annotations

import grp
import os
import signal
import socket
import stat
import threading
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2

from agent._proto import signer_pb2
from agent.alerts import AlertSender
from agent.audit import AuditLog
from agent.buildinfo import build_info
from agent.config import Config, ConfigError
from agent.custody import Keyring
from agent.guard import Guard
from agent.policy import PolicyError
from agent.logs import get_logger
from agent.metrics import Metrics, serve_metrics
from agent.nonces import NonceError, NonceStore
from agent.service import SignerService

# sockaddr_un.sun_path is 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107
GRACE_SECONDS = 5.0
MAX_MESSAGE_BYTES = 1 << 20


def prepare_socket_path(path: Path) -> None:
    """Make the socket's directory private and clear a stale socket; refuse to displace a live agent."""
    if len(str(path)) > MAX_SOCKET_PATH:
        raise ConfigError(f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; choose a shorter one")
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = directory.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            if st.st_uid != os.getuid():
                raise ConfigError(f"socket directory {directory} is open to others and not ours to fix; use another")
            directory.chmod(0o700)  # others must not even reach the socket file
    except OSError as exc:
        raise ConfigError(f"cannot prepare socket directory {directory}: {exc.strerror}") from None
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: left by an agent that did not exit cleanly
        else:
            raise ConfigError(f"another agent is already serving on {path}")
        finally:
            probe.close()


def _share_with_group(socket_path: Path, group: str) -> None:
    """Open the socket (and its directory) to one group: bots in it still need their own tokens."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"socket_group {group!r} does not exist (create it, or remove socket_group)") from None
    try:
        os.chown(socket_path.parent, -1, gid)
        os.chmod(socket_path.parent, 0o750)
        os.chown(socket_path, -1, gid)
        os.chmod(socket_path, 0o660)
    except OSError as exc:
        raise ConfigError(f"cannot give group {group!r} access to {socket_path}: {exc.strerror}") from None


def build_guard(config: Config) -> Guard:
    """Policy, credentials, audit and alerts, as configured. A bad policy file stops the start."""
    try:
        alerts = AlertSender(config.webhook)
    except ValueError as exc:
        raise ConfigError(f"[alerts] webhook: {exc}") from None
    try:
        return Guard(policy_path=config.policy_file, bots_path=config.bots_file, state_dir=config.state_dir,
                     audit=AuditLog(config.audit_file), alerts=alerts,
                     started={**build_info().as_fields(), "pid": os.getpid()})
    except PolicyError as exc:
        alerts.close()
        raise ConfigError(str(exc)) from None


class TokenWatch:
    """Probes the token every PROBE_SECONDS; gRPC health and the token_up metric follow it.

    While the token is unreachable, health says NOT_SERVING (load balancers and supervisors
    take the agent out) and signing answers UNAVAILABLE; the probe also reconnects, so the
    agent recovers by itself when the token returns, with no request needed.
    """

    PROBE_SECONDS = 0.5
    SERVICES = ("", "signing_agent.v1.Signer")

    def __init__(self, keyring: Keyring, health: health.HealthServicer, metrics: Metrics | None) -> None:
        self._keyring, self._health, self._metrics = keyring, health, metrics
        self._stop = threading.Event()
        self._up: bool | None = None
        self._thread = threading.Thread(target=self._run, name="token-watch", daemon=True)

    def start(self) -> None:
        self._set(True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for service in self.SERVICES:
            self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    def _run(self) -> None:
        while not self._stop.wait(self.PROBE_SECONDS):
            self._set(self._keyring.probe())

    def _set(self, up: bool) -> None:
        if up == self._up:
            return
        self._up = up
        status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in self.SERVICES:
            self._health.set(service, status)
        if self._metrics is not None:
            self._metrics.token_up.set(1 if up else 0)
        log = get_logger()
        (log.info if up else log.error)("token.status", up=up, token=self._keyring.label)


def _decoded(request_type, method):
    """METHOD, with its request parsed here: bytes that are not a REQUEST_TYPE message get
    INVALID_ARGUMENT (grpcio's own deserialisation failure is INTERNAL, which no client can act on)."""

    def handler(raw: bytes, context: grpc.ServicerContext):
        try:
            request = request_type.FromString(raw)
        except DecodeError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the request is not a valid {request_type.DESCRIPTOR.full_name} message")
        return method(request, context)

    return handler


def _add_service(server: grpc.Server, name: str, methods: dict) -> None:
    """Register NAME's methods: {method: (request type, implementation, response type, streams?)}."""
    handlers = {
        method: (grpc.unary_stream_rpc_method_handler if streams else grpc.unary_unary_rpc_method_handler)(
            _decoded(request_type, implementation), response_serializer=response_type.SerializeToString)
        for method, (request_type, implementation, response_type, streams) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))


def build_server(
    keyring: Keyring, config: Config, guard: Guard, metrics: Metrics | None = None
) -> tuple[grpc.Server, list[str], health.HealthServicer]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="sign"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Workers share a TCP port through SO_REUSEPORT; a lone agent must not share it with a stranger.
            ("grpc.so_reuseport", 1 if config.server.workers > 1 else 0),
        ],
    )
    nonces = NonceStore(config.state_dir)
    try:
        nonces.check()
    except NonceError as exc:
        raise ConfigError(str(exc)) from None
    service = SignerService(keyring, nonces, guard, metrics)
    _add_service(server, "signing_agent.v1.Signer", {
        "Sign": (signer_pb2.SignRequest, service.Sign, signer_pb2.SignedRequest, False),
        "SignBatch": (signer_pb2.SignBatchRequest, service.SignBatch, signer_pb2.SignBatchResponse, False),
    })
    health_servicer = health.HealthServicer()
    _add_service(server, "grpc.health.v1.Health", {
        "Check": (health_pb2.HealthCheckRequest, health_servicer.Check, health_pb2.HealthCheckResponse, False),
        "Watch": (health_pb2.HealthCheckRequest, health_servicer.Watch, health_pb2.HealthCheckResponse, True),
    })
    socket_path = config.server.socket
    prepare_socket_path(socket_path)
    endpoints = [f"unix:{socket_path}"]
    # The socket is created by the bind below: a umask makes it 0600 from its first instant.
    old_umask = os.umask(0o177)
    try:
        server.add_insecure_port(f"unix:{socket_path}")
    finally:
        os.umask(old_umask)
    os.chmod(socket_path, 0o600)
    if config.server.socket_group:
        _share_with_group(socket_path, config.server.socket_group)
    config.server.check_listeners()
    if config.server.tcp is not None:
        target = config.server.tcp.target
        try:
            if config.server.tls is not None:
                cert, key, client_ca = config.server.tls.read()
                credentials = grpc.ssl_server_credentials(
                    [(key, cert)], root_certificates=client_ca, require_client_auth=True)
                port = server.add_secure_port(target, credentials)
            else:
                port = server.add_insecure_port(target)
        except RuntimeError:
            port = 0
        if port == 0:
            raise ConfigError(f"cannot listen on {target} (address in use?)")
        endpoints.append(target)
    return server, endpoints, health_servicer


def serve(keyring: Keyring, config: Config, *, metrics_http: bool = True) -> int:
    """Serve until SIGTERM or SIGINT; in-flight requests get GRACE_SECONDS to finish. Returns 0."""
    log = get_logger()
    key_count = len(keyring.list_keys())  # also proves the session works before we listen
    guard = build_guard(config)
    metrics = Metrics()
    if config.metrics_listen and metrics_http:  # with workers, the supervisor serves their sum
        try:
            serve_metrics(config.metrics_listen)
        except OSError as exc:
            raise ConfigError(f"[metrics] cannot listen on {config.metrics_listen}: {exc.strerror}") from None
    server, endpoints, health_servicer = build_server(keyring, config, guard, metrics)
    watch = TokenWatch(keyring, health_servicer, metrics)
    stopping = threading.Event()
    reload_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("agent.stopping", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda *_: reload_requested.set())
    guard.start()
    watch.start()
    server.start()
    log.info(
        "agent.ready",
        endpoints=endpoints,
        token=config.token.label,
        module=str(config.token.module),
        keys=key_count,
        pid=os.getpid(),
    )
    # Wait with a timeout: a signal delivered to one of gRPC's threads only sets a flag, which
    # the main thread acts on when it runs Python code again. An untimed wait could miss it
    # for good (seen: an agent ignoring SIGTERM).
    while not stopping.wait(0.2):
        if reload_requested.is_set():
            reload_requested.clear()
            guard.reload(reason="SIGHUP")
    watch.stop()  # health says NOT_SERVING first, so balancers stop sending while in-flight calls finish
    server.stop(GRACE_SECONDS).wait()
    guard.stop()
    keyring.close()
    try:
        config.server.socket.unlink()
    except FileNotFoundError:
        pass
    log.info("agent.stopped")
    return 0
