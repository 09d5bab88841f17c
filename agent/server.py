"""Serving: the Signer service on a Unix socket (mode 0600, or 0660 for one group) and, opt-in, TCP
(mTLS, or plain on loopback). SIGHUP re-reads the policy and the bot credentials at once.

Threads are handed out by who is calling (see "Capacity" below): nothing a caller without a bot
credential sends can hold a signing thread, and health Watch streams are for bots, on their own,
bounded capacity."""

from __future__ import annotations

import grp
import heapq
import itertools
import os
import signal
import socket
import stat
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2

from signing_agent_client._proto import signer_pb2
from agent.alerts import AlertSender
from agent.audit import AuditLog
from agent.buildinfo import build_info
from agent.config import Config, ConfigError
from agent.firstrun import announce
from agent.custody import Keyring
from agent.guard import Caller, Guard
from agent.quorum import HEAD_FILE, HOW_OPERATORS_CHANGE, Operators, QuorumSource, quorum_recorded
from agent.policy import PolicyError, Refusal
from agent.logs import get_logger
from agent.metrics import Metrics, serve_metrics
from agent.nonces import NonceError, NonceStore
from agent.service import SignerService
from agent.send.sender import Sender
from agent.send.transport import Transport

# sockaddr_un.sun_path is 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107
GRACE_SECONDS = 5.0
MAX_MESSAGE_BYTES = 1 << 20

# -- Capacity: which calls may hold which threads -----------------------------------------------
# grpcio's synchronous server runs each call on an executor thread from the moment its headers
# arrive until it ends: a call whose request message never comes, or a stream left open, holds its
# thread all that time. With one pool for everything, anyone who could reach the socket could hold
# every signing thread with a handful of health Watch streams, or of calls that never send their
# request (issue 12 item 4). So each call is put in a lane from its headers alone, on gRPC's polling
# thread, before any thread is given to it:
#   sign    calls carrying a known bot's bearer token, and every call on the mTLS port (its callers
#           passed a handshake with a certificate from the bots' CA): Sign, SignBatch, Check
#   watch   health Watch streams of identified bots, at most MAX_WATCH_STREAMS of them
#   stream  SignStream streams of identified bots, at most MAX_SIGN_STREAMS of them
#   public  everything else: Check without a credential, and calls without a known bot's token,
#           which are refused there (UNAUTHENTICATED) exactly as before, only on other threads
# Whether the token is really a bot's, and what it may do, is still decided by the service on the
# call's thread: the lane only decides whose threads the call may wait on.
SIGN_THREADS = 8  # as before this split: the token and the GIL serialise most of the work anyway
# Check without a credential (supervisors, load balancers) and refusals: each is microseconds of work.
PUBLIC_THREADS = 2
# A public call's request message must have come this long after the call did, or the call is
# cancelled: a caller cannot park public threads by sending headers and nothing else (the same holds
# for a bot's Watch, whose lane has few spare threads). Real clients send the message right after
# the headers, and public callers are on this machine (the socket, loopback TCP): 1 s is plenty.
PUBLIC_REQUEST_SECONDS = 1.0
# ... and a call that waited in the public queue past that still gets this long to read a message
# that is already there (so a flood of parked calls costs this much each, not PUBLIC_REQUEST_SECONDS).
PUBLIC_REQUEST_GRACE_SECONDS = 0.05
# A Watch stream holds one thread for its whole life (grpcio), so streams are counted and capped:
# a bot needs one per channel it health-checks; a few cover reconnects and several processes.
MAX_WATCH_STREAMS_PER_BOT = 4
MAX_WATCH_STREAMS = 16  # all bots together: the watch lane's threads, on top of the signing threads
# Send calls wait on the exchange (up to [send] total_timeout_ms, and retries): on their own threads,
# so that a slow exchange cannot hold the signing threads; past these, Send calls queue.
SEND_THREADS = 16
# Threads beyond MAX_WATCH_STREAMS, so that a Watch over a cap is refused at once instead of
# queueing behind the streams that fill the lane.
WATCH_SPARE_THREADS = 2
# SignStream (bots that keep one stream open and sign as they go) holds a thread for the stream's
# life too, so streams have their own lane, counted and capped like Watch streams: a bot needs one
# per process that signs; the lane's threads are on top of the signing threads, so open streams
# cannot take Sign's. Each stream decides one request at a time (the next ones wait in the HTTP/2
# flow-control window, unread): its in-flight work is one request.
MAX_SIGN_STREAMS_PER_BOT = 4
MAX_SIGN_STREAMS = 16
SIGN_STREAM_SPARE_THREADS = 2

# -- Transport limits (grpc core; no Python thread is involved in holding a connection) -------------
# Connections past this are reset by gRPC: the file descriptors stay for the token, the audit log and
# the agent's other files (a process usually may open 1024). Bots hold one or a few connections each.
MAX_CONNECTIONS = 512
# Per connection: more concurrent calls than this wait in the client's queue (HTTP/2 flow), which
# bounds what one connection can make the agent keep in memory; far above SIGN_THREADS anyway.
MAX_STREAMS_PER_CONNECTION = 128
# A connection that has not completed its handshake (TLS and the HTTP/2 preface and settings) by
# then is closed: a real client takes milliseconds; one that connects and sits is junk.
HANDSHAKE_SECONDS = 10
# A connection with no call for this long is closed (GOAWAY). A bot's channel reconnects by itself
# at its next call, so this costs an idle bot one reconnect; an idle stranger loses its connection.
IDLE_CONNECTION_SECONDS = 300
# The agent pings its peers: one that vanished without closing (a TCP host gone) is noticed within
# KEEPALIVE_SECONDS + KEEPALIVE_TIMEOUT_SECONDS, and its calls, Watch streams included, end.
KEEPALIVE_SECONDS = 60
KEEPALIVE_TIMEOUT_SECONDS = 20


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


def _postgres_dsn(config: Config) -> str | None:
    """The database agent hosts share, when [store] is PostgreSQL: nonces and rate buckets live there too."""
    return config.store.dsn if config.store is not None and config.store.backend == "postgres" else None


def key_vetting(keyring: Keyring) -> Callable[[Any], None]:
    """The policy check that needs the token: no key may be handed signatures its exchange leaves
    unbound where its policy restricts (agent.delivery); PolicyError naming each such key."""
    from agent.delivery import check_policy

    def vet(policy: Any) -> None:
        # The keys the agent knows (listed at start), never a token scan: a reload must not hold the
        # token's lock; a key first seen later is checked at its request (agent.send.ticket).
        problems = check_policy(policy, [(info.label, info.exchange, info.key_type) for info in keyring.known_keys()])
        if problems:
            raise PolicyError("; ".join(problems))

    return vet


def build_guard(config: Config, keyring: Keyring | None = None) -> Guard:
    """Policy, credentials, audit and alerts, as configured. A bad policy file stops the start.
    KEYRING: the token, whose keys' exchanges the policy is checked against (agent.delivery)."""
    quorum = quorum_source(config)
    # Whether this start is under a quorum, and which first operator set: the audit shows a host
    # that started without the quorum it had (its state removed by root).
    started = {**build_info().as_fields(), "pid": os.getpid(),
               "quorum": quorum.genesis_digest if quorum is not None else "off"}
    try:
        alerts = AlertSender(config.webhook)
    except ValueError as exc:
        raise ConfigError(f"[alerts] webhook: {exc}") from None
    try:
        shared_bots = shared_bots_watch(config)
    except Exception:
        alerts.close()
        raise
    try:
        return Guard(policy_path=config.policy_file, bots_path=config.bots_file, state_dir=config.state_dir,
                     audit=AuditLog(config.audit_file), alerts=alerts, started=started, quorum=quorum,
                     market=config.market, vet=key_vetting(keyring) if keyring is not None else None,
                     shared_buckets_dsn=_postgres_dsn(config), sync_budgets=config.sync_budgets,
                     shared_bots=shared_bots)
    except PolicyError as exc:
        alerts.close()
        if shared_bots is not None:
            shared_bots.stop()
        if quorum is not None:
            quorum.close()
        raise ConfigError(str(exc)) from None


def shared_bots_watch(config: Config):
    """The bot credentials of the database the hosts share (agent.bots_db), when they live there; None: the
    bots file (or a quorum's bundles). Raises StoreUnavailable when the database does not answer."""
    if not config.bots_in_database:
        return None
    from agent.bots_db import BotsWatch

    assert config.store is not None and config.store.dsn is not None
    return BotsWatch(config.store.dsn, ignored_file=config.bots_file)


def quorum_source(config: Config) -> QuorumSource | None:
    """The bundle chain, when the config asks for a quorum (agent.quorum)."""
    q = config.quorum
    if q is None:
        if quorum_recorded(config.state_dir):
            # Editing the config alone must not drop what k operators decide (README, 'Operator quorum').
            raise ConfigError(
                f"{config.path} has no [quorum], but this agent ran under one ({config.state_dir / HEAD_FILE} "
                "records it): without it, whoever edits policy.toml would decide alone what is signed. Put "
                f"[quorum] back as it was; {HOW_OPERATORS_CHANGE}")
        return None
    from agent.quorum import QuorumError
    from agent.quorum_pg import open_bundles

    genesis = Operators.parse(q.operators, q.threshold, where=str(config.path))
    try:  # with several hosts, the database they share (agent.quorum_pg; StoreUnavailable: it does not answer)
        source = open_bundles(config)
    except QuorumError as exc:
        raise ConfigError(f"[quorum] published bundles: {exc}") from None
    return QuorumSource(source, genesis, config.state_dir)


class StoreWatch:
    """Polls the key store's events every STORE_POLL_SECONDS: a wrapped key revoked (or re-imported) by any
    process or host is dropped here within that time. While the store does not answer, the keyring refuses
    wrapped keys after STORE_STALE_SECONDS (UNAVAILABLE), and recovers at the first answer."""

    def __init__(self, keyring: Keyring, metrics: Metrics | None = None) -> None:
        from agent.custody.wrapped import STORE_POLL_SECONDS

        self._keyring = keyring
        self._metrics = metrics
        self._counted = {"hit": 0, "miss": 0, "eviction": 0}
        self._interval = STORE_POLL_SECONDS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-watch", daemon=True)
        self._up = True

    def start(self) -> None:
        self._poll()  # the first poll sets the event position before any request is served
        self._thread.start()

    def _poll(self) -> None:
        from agent.custody import CustodyError

        try:
            self._keyring.poll_store()
        except CustodyError as exc:
            if self._up:
                get_logger().error("store.status", up=False, reason=str(exc))
            self._up = False
            return
        if not self._up:
            get_logger().info("store.status", up=True)
        self._up = True
        if self._metrics is not None:  # the cache counts in plain ints on the hot path; exported from here
            stats = self._keyring.unwrap_stats
            for event, value in (("hit", stats.hits), ("miss", stats.misses), ("eviction", stats.evictions)):
                if value > self._counted[event]:
                    self._metrics.unwrap_cache.labels(event=event).inc(value - self._counted[event])
                    self._counted[event] = value

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._poll()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


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


def _on(pool: futures.ThreadPoolExecutor, behavior: Callable) -> Callable:
    """BEHAVIOR, to be run on POOL's threads (grpcio reads this attribute when it dispatches a call)."""
    behavior.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return behavior


class RequestDeadlines:
    """Cancels a call whose request message has not come by its deadline (see PUBLIC_REQUEST_SECONDS).

    The call's thread waits for the message in `read`; one thread here sleeps until the earliest
    deadline and cancels the calls still waiting then, which frees their threads at once."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, list]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="request-deadlines", daemon=True).start()

    def read(self, requests: Iterator[bytes], context: grpc.ServicerContext, arrived: float) -> bytes:
        """The call's request message (the first; a unary call sends one), or the call is ended."""
        deadline = max(arrived + PUBLIC_REQUEST_SECONDS, time.monotonic() + PUBLIC_REQUEST_GRACE_SECONDS)
        waiting = [True, context]
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._order), waiting))
            if self._heap[0][2] is waiting:
                self._cond.notify()
        try:
            raw = next(requests, None)
        except grpc.RpcError:  # cancelled
            raw = None
        finally:
            waiting[:] = [False, None]
        if raw is None:
            if not context.is_active():
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                              f"no request message within {PUBLIC_REQUEST_SECONDS:g} s of the call")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call ended without its request message")
        return raw

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, waiting = heapq.heappop(self._heap)
            still_waiting, context = waiting
            if still_waiting:
                context.cancel()


class _Stream:
    __slots__ = ("bot", "context", "watcher")

    def __init__(self, bot: str, context: grpc.ServicerContext) -> None:
        self.bot, self.context, self.watcher = bot, context, None


class _CappedStreams:
    """Streams held open for their life (each on a thread of its lane), counted per bot and in all:
    at most PER_BOT per bot and TOTAL together, each released when its call ends, none taken once
    the agent is stopping. WHAT names them in refusals, CAP_NAME the caps' constant, INSTEAD what
    a refused bot can do instead."""

    what = cap_name = instead = ""
    per_bot = total = 0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[_Stream] = set()
        self._per_bot: dict[str, int] = {}
        self._closed = False

    def _admit(self, bot: str, context: grpc.ServicerContext) -> _Stream | None:
        """A stream for BOT, counted until its call ends; the call is aborted when over a cap (or the
        agent is stopping); None when the call has ended already."""
        refusal: tuple[grpc.StatusCode, str] | None = None
        with self._lock:
            held = self._per_bot.get(bot, 0)
            if self._closed:
                refusal = (grpc.StatusCode.UNAVAILABLE, "the agent is stopping")
            elif held >= self.per_bot:
                refusal = (grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"bot {bot!r} already holds {held} {self.what} streams, the most one bot may "
                           f"({self.cap_name}_PER_BOT = {self.per_bot}); end one, or {self.instead}")
            elif len(self._open) >= self.total:
                refusal = (grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"{len(self._open)} {self.what} streams are open, the most this agent serves "
                           f"({self.cap_name} = {self.total}); retry later, or {self.instead}")
            else:
                stream = _Stream(bot, context)
                self._open.add(stream)
                self._per_bot[bot] = held + 1
        if refusal is not None:
            context.abort(*refusal)
        if not context.add_callback(lambda: self._release(stream)):
            self._release(stream)  # the call already ended
            return None
        return stream

    def _release(self, stream: _Stream) -> None:
        with self._lock:
            if stream in self._open:
                self._open.discard(stream)
                left = self._per_bot[stream.bot] - 1
                if left:
                    self._per_bot[stream.bot] = left
                else:
                    del self._per_bot[stream.bot]
            watcher = stream.watcher
        if watcher is not None:
            watcher.close()

    def _close(self) -> list[_Stream]:
        """Take no more streams; the ones open now."""
        with self._lock:
            self._closed = True
            return list(self._open)


class WatchStreams(_CappedStreams):
    """grpc.health.v1.Health/Watch for bots: identified as Sign identifies them, at most
    MAX_WATCH_STREAMS_PER_BOT streams per bot and MAX_WATCH_STREAMS in all, each released when its
    call ends (the client went away, or the agent is stopping)."""

    what, cap_name, instead = "health Watch", "MAX_WATCH_STREAMS", "poll Check"
    per_bot, total = MAX_WATCH_STREAMS_PER_BOT, MAX_WATCH_STREAMS

    def __init__(self, health_servicer: health.HealthServicer,
                 identify: Callable[[grpc.ServicerContext], Caller | Refusal]) -> None:
        super().__init__()
        self._health, self._identify = health_servicer, identify

    @staticmethod
    def unauthenticated(refusal: Refusal) -> str:
        return (f"health Watch needs a bot credential, as it holds a stream open: {refusal.message}. "
                "Without a credential, use Check, which needs none")

    def refuse(self, context: grpc.ServicerContext) -> Iterator[Any]:
        """A Watch whose headers named no known bot (the public lane): refused without reading it."""
        caller = self._identify(context)
        if isinstance(caller, Caller):  # its token became known as the call arrived (bots reloaded)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the bot credentials were reloaded as this call came; retry")
        context.abort(grpc.StatusCode.UNAUTHENTICATED, self.unauthenticated(caller))
        return iter(())

    def watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        caller = self._identify(context)
        if not isinstance(caller, Caller):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, self.unauthenticated(caller))
        stream = self._admit(caller.bot, context)
        if stream is None:
            return iter(())
        # grpcio's blocking watcher: this thread sends each status change; the health servicer
        # closes it when the call ends, and so does _release (whichever comes first).
        stream.watcher = self._health.Watch(request, context)
        if not context.is_active() or self._closed:
            stream.watcher.close()
        return stream.watcher

    def close(self) -> None:
        """End every stream (after the last status, NOT_SERVING, is sent) and take no more."""
        for stream in self._close():
            if stream.watcher is not None:
                stream.watcher.close()


class SignStreams(_CappedStreams):
    """SignStream for bots (agent.service.SignerService.SignStream does the signing): at most
    MAX_SIGN_STREAMS_PER_BOT streams per bot and MAX_SIGN_STREAMS in all, each released when its
    call ends; when the agent stops, every open stream is cancelled, so none holds the grace up."""

    what, cap_name, instead = "SignStream", "MAX_SIGN_STREAMS", "use Sign"
    per_bot, total = MAX_SIGN_STREAMS_PER_BOT, MAX_SIGN_STREAMS

    def __init__(self, service: SignerService) -> None:
        super().__init__()
        self._service = service

    def serve(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        caller = self._service._caller(context)  # noqa: SLF001 - streams identify callers as Sign does
        if isinstance(caller, Caller) and self._admit(caller.bot, context) is None:
            return iter(())  # the call already ended
        # A caller the headers' token no longer names (credentials reloaded): the service refuses it.
        return self._service.SignStream(_messages(requests, context), context)

    def close(self) -> None:
        """Cancel every open stream and take no more (a stream waits for its bot's next request,
        which would hold the shutdown grace up)."""
        for stream in self._close():
            stream.context.cancel()


def _messages(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[signer_pb2.SignRequest]:
    """A stream's messages, parsed here (as `_decoded` parses a unary call's): bytes that are not a
    SignRequest end the stream with INVALID_ARGUMENT; a stream cancelled (the client went away, the
    agent stops) ends it quietly."""
    try:
        for raw in requests:
            try:
                yield signer_pb2.SignRequest.FromString(raw)
            except DecodeError:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"a stream message is not a valid {signer_pb2.SignRequest.DESCRIPTOR.full_name}")
    except grpc.RpcError:
        return


SIGNER, HEALTH = "/signing_agent.v1.Signer/", "/grpc.health.v1.Health/"


class Lanes(grpc.GenericRpcHandler):
    """Puts each call in its lane (see Capacity) from its method and headers. Runs on gRPC's polling
    thread, before the call has a thread: only a hash and a dict lookup (Guard.identify) per call."""

    def __init__(self, *, guard: Guard, service: SignerService, health_servicer: health.HealthServicer,
                 watches: WatchStreams, streams: SignStreams, deadlines: RequestDeadlines,
                 sign_pool: futures.ThreadPoolExecutor, watch_pool: futures.ThreadPoolExecutor,
                 stream_pool: futures.ThreadPoolExecutor, public_pool: futures.ThreadPoolExecutor,
                 transport_identified: bool, send_pool: futures.ThreadPoolExecutor | None = None) -> None:
        self._guard, self._watches, self._streams, self._deadlines = guard, watches, streams, deadlines
        self._watch_pool, self._stream_pool, self._public_pool = watch_pool, stream_pool, public_pool
        self._service = service
        self._transport_identified = transport_identified
        # method: (request type, implementation, response type)
        self._unary = {
            SIGNER + "Sign": (signer_pb2.SignRequest, service.Sign, signer_pb2.SignedRequest),
            SIGNER + "SignBatch": (signer_pb2.SignBatchRequest, service.SignBatch, signer_pb2.SignBatchResponse),
            SIGNER + "Send": (signer_pb2.SignRequest, service.Send, signer_pb2.ExchangeResponse),
            HEALTH + "Check": (health_pb2.HealthCheckRequest, health_servicer.Check, health_pb2.HealthCheckResponse),
        }
        self._signing = {  # identified callers: the sign lane, as before (Send: its own, see SEND_THREADS)
            method: grpc.unary_unary_rpc_method_handler(
                _on(send_pool if send_pool is not None and method == SIGNER + "Send" else sign_pool,
                    _decoded(request_type, implementation)),
                response_serializer=response_type.SerializeToString)
            for method, (request_type, implementation, response_type) in self._unary.items()
        }
        self._watch_decoded = _decoded(health_pb2.HealthCheckRequest, watches.watch)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        arrived = time.monotonic()
        try:
            identified = self._transport_identified or self._names_a_bot(handler_call_details.invocation_metadata)
        except Exception:  # never a reason to fail the call here: the service identifies it again
            identified = False
        if method == HEALTH + "Watch":
            if identified:
                return grpc.stream_stream_rpc_method_handler(
                    _on(self._watch_pool, lambda requests, context: self._watch_decoded(
                        self._deadlines.read(requests, context, arrived), context)),
                    response_serializer=health_pb2.HealthCheckResponse.SerializeToString)
            return grpc.stream_stream_rpc_method_handler(
                _on(self._public_pool, lambda requests, context: self._watches.refuse(context)),
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString)
        if method == SIGNER + "SignStream":
            if identified:
                return grpc.stream_stream_rpc_method_handler(
                    _on(self._stream_pool, lambda requests, context: self._streams.serve(requests, context)),
                    response_serializer=signer_pb2.SignResult.SerializeToString)
            # No known bot: its first message is awaited as a public unary call's is, then refused
            # (and audited) by the service, which ends the stream.
            return grpc.stream_stream_rpc_method_handler(
                _on(self._public_pool, lambda requests, context: self._service.SignStream(
                    _messages(iter([self._deadlines.read(requests, context, arrived)]), context), context)),
                response_serializer=signer_pb2.SignResult.SerializeToString)
        if identified:
            return self._signing.get(method)
        found = self._unary.get(method)
        if found is None:
            return None  # UNIMPLEMENTED
        request_type, implementation, response_type = found
        decoded = _decoded(request_type, implementation)
        # Request-streaming on the server (a unary call looks the same on the wire), so that the
        # thread is ours while the message is awaited, and the wait can be cut short.
        return grpc.stream_unary_rpc_method_handler(
            _on(self._public_pool, lambda requests, context: decoded(
                self._deadlines.read(requests, context, arrived), context)),
            response_serializer=response_type.SerializeToString)

    def _names_a_bot(self, metadata: Any) -> bool:
        """The headers carry a known bot's bearer token (parsed as SignerService._caller parses it)."""
        for name, value in metadata or ():
            if name == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() != "bearer":
                    return False
                try:
                    self._guard.identify(token.strip(), None)
                except Refusal:
                    return False
                return True
        return False


class _AllStopped:
    def __init__(self, events: list[threading.Event]) -> None:
        self._events = events

    def wait(self, timeout: float | None = None) -> bool:
        return all(event.wait(timeout) for event in self._events)


class Servers:
    """The agent's gRPC servers, started and stopped together: the socket's (and plain TCP's), and the
    mTLS port's when there is one. They share the lanes' pools: the capacity above is the agent's."""

    def __init__(self, servers: list[grpc.Server], watches: WatchStreams, streams: SignStreams) -> None:
        self.servers, self.watches, self.streams = servers, watches, streams

    def start(self) -> None:
        for server in self.servers:
            server.start()

    def stop(self, grace: float | None) -> _AllStopped:
        self.watches.close()  # Watch streams never end by themselves: they would hold the grace up
        self.streams.close()  # nor do SignStream streams
        return _AllStopped([server.stop(grace) for server in self.servers])


def _transport_options(config: Config) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Workers share a TCP port through SO_REUSEPORT; a lone agent must not share it with a stranger.
        ("grpc.so_reuseport", 1 if config.server.workers > 1 else 0),
        ("grpc.max_allowed_incoming_connections", MAX_CONNECTIONS),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_SECONDS * 1000),
        ("grpc.http2.settings_timeout", HANDSHAKE_SECONDS * 1000),
        ("grpc.max_connection_idle_ms", IDLE_CONNECTION_SECONDS * 1000),
        ("grpc.keepalive_time_ms", KEEPALIVE_SECONDS * 1000),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_SECONDS * 1000),
    ]


def build_server(
    keyring: Keyring, config: Config, guard: Guard, metrics: Metrics | None = None
) -> tuple[Servers, list[str], health.HealthServicer]:
    dsn = _postgres_dsn(config)
    nonces: Any = NonceStore(config.state_dir)
    try:
        if dsn is not None:
            from agent.shared_state import PostgresNonces

            nonces = PostgresNonces(dsn)
        nonces.check()
    except NonceError as exc:
        raise ConfigError(str(exc)) from None
    sender = Sender(Transport(config.send), guard.record_send, metrics=metrics)
    service = SignerService(keyring, nonces, guard, metrics, sender=sender)
    health_servicer = health.HealthServicer()
    watches = WatchStreams(health_servicer, service._caller)  # noqa: SLF001 - Watch identifies callers as Sign does
    sign_pool = futures.ThreadPoolExecutor(max_workers=SIGN_THREADS, thread_name_prefix="sign")
    watch_pool = futures.ThreadPoolExecutor(max_workers=MAX_WATCH_STREAMS + WATCH_SPARE_THREADS,
                                            thread_name_prefix="watch")
    streams = SignStreams(service)
    stream_pool = futures.ThreadPoolExecutor(max_workers=MAX_SIGN_STREAMS + SIGN_STREAM_SPARE_THREADS,
                                             thread_name_prefix="stream")
    public_pool = futures.ThreadPoolExecutor(max_workers=PUBLIC_THREADS, thread_name_prefix="public")
    send_pool = futures.ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="send")
    deadlines = RequestDeadlines()
    options = _transport_options(config)

    def new_server(*, transport_identified: bool) -> grpc.Server:
        # Not maximum_concurrent_rpcs: it counts the calls of every lane, so a flood of refused calls
        # would get bots' Sign calls refused (RESOURCE_EXHAUSTED) too.
        server = grpc.server(sign_pool, options=options)
        server.add_generic_rpc_handlers((Lanes(
            guard=guard, service=service, health_servicer=health_servicer, watches=watches, streams=streams,
            deadlines=deadlines, sign_pool=sign_pool, watch_pool=watch_pool, stream_pool=stream_pool,
            public_pool=public_pool, transport_identified=transport_identified, send_pool=send_pool),))
        return server

    server = new_server(transport_identified=False)
    servers = [server]
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
                # Its own server: every caller of this port showed a certificate from the bots' CA, so
                # its calls go to the sign lane even without a bearer token (mTLS bots send none).
                tls_server = new_server(transport_identified=True)
                servers.append(tls_server)
                port = tls_server.add_secure_port(target, credentials)
            else:
                port = server.add_insecure_port(target)
        except RuntimeError:
            port = 0
        if port == 0:
            raise ConfigError(f"cannot listen on {target} (address in use?)")
        endpoints.append(target)
    return Servers(servers, watches, streams), endpoints, health_servicer


def serve(keyring: Keyring, config: Config, *, metrics_http: bool = True) -> int:
    """Serve until SIGTERM or SIGINT; in-flight requests get GRACE_SECONDS to finish. Returns 0."""
    log = get_logger()
    # Also proves the session works before we listen. Wrapped keys are counted, not listed: they are
    # looked up in the store on first use, so the start does not grow with their number.
    key_count = len(keyring.list_keys(wrapped=False))
    guard = build_guard(config, keyring)
    metrics = Metrics()
    store_watch = None
    if keyring.store is not None:
        key_count += keyring.store.count()
        store_watch = StoreWatch(keyring, metrics)
        store_watch.start()
    audit_shipper = None
    if _postgres_dsn(config) is not None:  # several hosts: this host's audit chain to the shared database
        from agent.audit_ship import AuditShipper

        audit_shipper = AuditShipper(config.audit_file, _postgres_dsn(config), config.store.host)
        audit_shipper.start()
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
    announce(config, key_count, log)  # the next step, while the agent cannot sign anything yet
    # Wait with a timeout: a signal delivered to one of gRPC's threads only sets a flag, which
    # the main thread acts on when it runs Python code again. An untimed wait could miss it
    # for good (seen: an agent ignoring SIGTERM).
    while not stopping.wait(0.2):
        if reload_requested.is_set():
            reload_requested.clear()
            guard.reload(reason="SIGHUP")
    if store_watch is not None:
        store_watch.stop()
    watch.stop()  # health says NOT_SERVING first, so balancers stop sending while in-flight calls finish
    server.stop(GRACE_SECONDS).wait()
    guard.stop()
    if audit_shipper is not None:
        audit_shipper.stop()  # after the guard: the last decisions' lines go too
    keyring.close()
    try:
        config.server.socket.unlink()
    except FileNotFoundError:
        pass
    log.info("agent.stopped")
    return 0
