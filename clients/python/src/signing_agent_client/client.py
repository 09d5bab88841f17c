"""The synchronous client a bot uses: it asks the agent to sign, and never holds a secret.

    from signing_agent_client import SignerClient

    with SignerClient() as signer:          # $SIGNING_AGENT_TARGET, else the agent's config (see below)
        req = signer.sign("binance-main", "POST", "/api/v3/order",
                          body={"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                "timeInForce": "GTC", "quantity": "0.001", "price": "50000"})
        requests.request(req.method, "https://api.binance.com" + req.path,
                         headers=req.headers_dict(), data=req.body)

Where the agent is (`default_target`): the TARGET argument ('unix:///path/agent.sock' or
'host:port'), else $SIGNING_AGENT_TARGET, else the [server] socket of the agent's config file named
by $SIGNING_AGENT_CONFIG, else of ./signing-agent.toml when the bot runs in the agent's directory.

The bot authenticates with its own credential: a bearer token (from `signing-agent bots add`)
read from TOKEN_FILE, or the file named by $SIGNING_AGENT_TOKEN_FILE; or, over TCP, an mTLS
client certificate (tls=ClientTls(...)).

Errors are raised as SigningError subclasses carrying the gRPC status name:
KeyNotFoundError, InvalidRequestError, AgentUnavailableError, NotAuthenticatedError,
RefusedError (policy; the message names the rule), RateLimitedError.
A bot that signs often keeps one stream open instead (about half the round trip of `sign`):

    with SignerClient() as signer, signer.stream() as stream:
        req = stream.sign("binance-main", "POST", "/api/v3/order", body={...})   # as signer.sign

The asyncio client (grpc.aio) is signing_agent_client.aio.AsyncSignerClient, with the same calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Union

import ipaddress
import os
import queue
import tomllib
from dataclasses import dataclass

import grpc

from signing_agent_client._proto import signer_pb2, signer_pb2_grpc
from signing_agent_client.request import ExchangeAnswer, SignedRequest

ParamsLike = Union[Mapping[str, Any], Iterable[tuple[str, Any]]]


class SigningError(Exception):
    """The agent did not sign; `code` is the gRPC status name, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class KeyNotFoundError(SigningError):
    pass


class InvalidRequestError(SigningError, ValueError):
    pass


class AgentUnavailableError(SigningError):
    pass


class NotAuthenticatedError(SigningError):
    pass


class RefusedError(SigningError):
    """Refused by the agent's policy; the message names the rule."""


class RateLimitedError(SigningError):
    pass


class OutcomeUnknownError(AgentUnavailableError):
    """Send: the request went out and no answer came back (DEADLINE_EXCEEDED). It may have been acted
    on, and the agent did not send it again: look it up (the message names the client order id, where
    there is one) before sending it again."""


class NoTargetError(ValueError):
    """The client was not told where the agent is; the message says what to pass."""


TOKEN_FILE_ENV = "SIGNING_AGENT_TOKEN_FILE"
TARGET_ENV = "SIGNING_AGENT_TARGET"
CONFIG_ENV = "SIGNING_AGENT_CONFIG"

_ERRORS = {
    grpc.StatusCode.UNAUTHENTICATED: NotAuthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: RefusedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitedError,
    grpc.StatusCode.NOT_FOUND: KeyNotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.UNAVAILABLE: AgentUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: AgentUnavailableError,
}


def param_value(name: str, value: Any) -> str:
    """Parameter values as exchanges (and ccxt) write them: booleans lower case, numbers as str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, Decimal)):
        return str(value)
    raise InvalidRequestError(
        "INVALID_ARGUMENT", f"parameter {name!r} must be a string, number or boolean, not {type(value).__name__}"
    )


def to_params(params: ParamsLike | None) -> list[signer_pb2.Param]:
    if params is None:
        return []
    pairs = params.items() if isinstance(params, Mapping) else params
    out = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InvalidRequestError("INVALID_ARGUMENT", "parameters are a mapping or (name, value) pairs")
        out.append(signer_pb2.Param(name=pair[0], value=param_value(pair[0], pair[1])))
    return out


def default_target(config_path: Path | None = None) -> str:
    """The agent's gRPC target when the bot names none.

    In order: CONFIG_PATH (the agent's config file), $SIGNING_AGENT_TARGET (a gRPC target as is:
    'unix:///run/signing-agent/agent.sock', 'localhost:50051'), $SIGNING_AGENT_CONFIG (the agent's
    config file), ./signing-agent.toml when the bot runs in the agent's directory. From a config
    file, [server] socket is read as the agent reads it (relative to the file's directory,
    run/agent.sock when absent) and nothing else, so the client needs nothing of the agent.
    Raises NoTargetError saying what to pass when none of them is there, ValueError naming a bad file.
    """
    if config_path is None:
        target = os.environ.get(TARGET_ENV, "").strip()
        if target:
            return target
        env = os.environ.get(CONFIG_ENV)
        config_path = Path(env) if env else Path.cwd() / "signing-agent.toml"
        if not env and not config_path.is_file():
            raise NoTargetError(
                "where is the signing agent? pass its target, SignerClient('unix:///path/to/run/agent.sock') "
                f"(or 'host:port'), or set {TARGET_ENV}=unix:///path/to/run/agent.sock in the bot's environment "
                f"({CONFIG_ENV}=/path/to/signing-agent.toml also works: its [server] socket is used)")
    path = Path(config_path).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoTargetError(f"the agent's config file {path} does not exist: pass the agent's target "
                            f"(unix:///path/agent.sock or host:port) or set {TARGET_ENV}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    server = raw.get("server", {})
    socket = server.get("socket", "run/agent.sock") if isinstance(server, dict) else None
    if not isinstance(socket, str) or not socket:
        raise ValueError(f"config file {path}: [server] socket must be a path")
    socket_path = Path(socket).expanduser()
    return f"unix://{socket_path if socket_path.is_absolute() else path.parent / socket_path}"


@dataclass(frozen=True)
class ClientTls:
    """mTLS to a TCP listener: the CA that signed the agent's certificate, the bot's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca_file).read_bytes(),
            private_key=Path(self.key_file).read_bytes(),
            certificate_chain=Path(self.cert_file).read_bytes(),
        )


def read_token(token_file: Path | str | None | bool) -> str | None:
    """The bot's bearer token from TOKEN_FILE, else from the file $SIGNING_AGENT_TOKEN_FILE names.

    TOKEN_FILE=False: no token (a bot identified by its mTLS certificate alone).
    """
    if token_file is False:
        return None
    path = token_file or os.environ.get(TOKEN_FILE_ENV)
    if not path:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise NotAuthenticatedError("UNAUTHENTICATED", f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise NotAuthenticatedError("UNAUTHENTICATED", f"the token file {path} is empty")
    return token


def sign_request(
    key: str,
    method: str,
    path: str,
    query: ParamsLike | None = None,
    body: ParamsLike | str | None = None,
    *,
    timestamp_ms: int | None = None,
) -> signer_pb2.SignRequest:
    """The SignRequest message for one exchange request (see SignerClient.sign)."""
    msg = signer_pb2.SignRequest(
        key=key, method=method, path=path, query=to_params(query), timestamp_ms=timestamp_ms or 0
    )
    if isinstance(body, str):
        msg.raw = body
    elif body is not None:
        msg.fields.items.extend(to_params(body))
    return msg


def _error(exc: grpc.RpcError) -> SigningError:
    code = exc.code()
    return _ERRORS.get(code, SigningError)(code.name, exc.details() or "")


def _send_error(exc: grpc.RpcError) -> SigningError:
    """A Send's failure: as Sign's, except that a deadline means the request's fate is unknown."""
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return OutcomeUnknownError("DEADLINE_EXCEEDED", exc.details() or "no answer in time: the request may have "
                                   "been placed; look it up before sending it again")
    return _error(exc)


def _answer(reply: signer_pb2.ExchangeResponse) -> ExchangeAnswer:
    return ExchangeAnswer(status=reply.status, headers=tuple((h.name, h.value) for h in reply.headers),
                          body=reply.body, client_order_id=reply.client_order_id, reconciled=reply.reconciled)


# Send waits for the exchange, and the agent may retry a read or look a lost order up: its own
# deadline must outlast the agent's ([send] total_timeout_ms, 15 s by default, plus its retries).
SEND_TIMEOUT = 45.0


def _signed(reply: signer_pb2.SignedRequest) -> SignedRequest:
    return SignedRequest(
        method=reply.method,
        path=reply.path,
        headers=tuple((h.name, h.value) for h in reply.headers),
        body=reply.body,
    )


def _local(target: str) -> bool:
    """A Unix socket or a loopback address: where a bearer token may travel without TLS."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    host = target.rpartition(":")[0].strip("[]") if ":" in target else target
    host = host.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Connection:
    """What the sync and asyncio clients share: where the agent is, the bot's credential, the channel.

    CHANNELS is the module whose insecure_channel/secure_channel make the channel: grpc for
    SignerClient, grpc.aio for AsyncSignerClient. The RPCs themselves differ (awaited or not), so
    each client writes its own.
    """

    _channels: Any = grpc

    def __init__(
        self,
        target: str | None = None,
        *,
        config_path: Path | None = None,
        timeout: float = 5.0,
        token_file: Path | str | None | bool = None,
        tls: ClientTls | None = None,
    ):
        self.target = target or default_target(config_path)
        self.timeout = timeout
        token = read_token(token_file)
        if token and tls is None and not _local(self.target):
            raise NotAuthenticatedError(
                "UNAUTHENTICATED", f"refusing to send the bot's token in clear to {self.target}: use the Unix "
                "socket, loopback, or mTLS (tls=ClientTls(...))")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # A multi-worker agent's Unix sockets ("unix:/run/agent.sock,/run/agent.sock.1", see
        # agent.workers.unix_target): one channel, each call to the next worker.
        options = [("grpc.lb_policy_name", "round_robin")] if "," in self.target else []
        self._channel = (self._channels.secure_channel(self.target, tls.credentials(), options=options) if tls
                         else self._channels.insecure_channel(self.target, options=options))
        self._stub = signer_pb2_grpc.SignerStub(self._channel)


def _batch_results(reply: signer_pb2.SignBatchResponse) -> list[SignedRequest | SigningError]:
    return [_result(result) for result in reply.results]


def _result(result: signer_pb2.SignResult) -> SignedRequest | SigningError:
    """One item of a batch or a stream: its signed request, or the SigningError it was refused with."""
    if result.WhichOneof("outcome") == "signed":
        return _signed(result.signed)
    code = getattr(grpc.StatusCode, result.refused.code, None)
    return _ERRORS.get(code, SigningError)(result.refused.code, result.refused.message)


def _stream_answer(result: Any) -> SignedRequest:
    """A stream's answer to one request: the signed request, or its refusal raised (as `sign` raises it)."""
    if result is None:  # the stream ended without answering (the agent stopped): ask again on a new one
        raise AgentUnavailableError("UNAVAILABLE", "the agent ended the stream; open a new one")
    answer = _result(result)
    if isinstance(answer, SigningError):
        raise answer
    return answer


class SignStream:
    """One SignStream kept open (SignerClient.stream()): `sign` sends a request and waits for its
    answer, about half the round trip of a unary Sign. One request at a time: a stream per thread."""

    _END = object()

    def __init__(self, stub: signer_pb2_grpc.SignerStub, metadata: Any) -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # No deadline: the stream lives as long as the bot keeps it; each answer follows its request.
        self._responses = stub.SignStream(iter(self._requests.get, self._END), metadata=metadata)

    def sign(self, *args: Any, **kwargs: Any) -> SignedRequest:
        """As SignerClient.sign (the same arguments, those of `sign_request`), on this stream."""
        self._requests.put(sign_request(*args, **kwargs))
        try:
            return _stream_answer(next(self._responses, None))
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def close(self) -> None:
        """End the stream (the agent sees the end of its requests)."""
        self._requests.put(self._END)
        self._responses.cancel()

    def __enter__(self) -> "SignStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SignerClient(_Connection):
    """A connection to the agent. TARGET is 'unix:///path/agent.sock' or 'host:port' (else
    default_target); TOKEN_FILE, else $SIGNING_AGENT_TOKEN_FILE, holds the bot's token; TLS for mTLS."""

    def sign(
        self,
        key: str,
        method: str,
        path: str,
        query: ParamsLike | None = None,
        body: ParamsLike | str | None = None,
        *,
        timestamp_ms: int | None = None,
    ) -> SignedRequest:
        """Return the signed request for the key labelled KEY. BODY: parameters, raw text, or None.

        TIMESTAMP_MS: the instant to sign for, instead of the agent's clock (ccxt bridge, replays of
        test vectors); the agent's nonces never go below it, nor backwards.
        """
        msg = sign_request(key, method, path, query, body, timestamp_ms=timestamp_ms)
        try:
            reply = self._stub.Sign(msg, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return _signed(reply)

    def send(
        self,
        key: str,
        method: str,
        path: str,
        query: ParamsLike | None = None,
        body: ParamsLike | str | None = None,
        *,
        timeout: float = SEND_TIMEOUT,
    ) -> ExchangeAnswer:
        """Have the agent place the request itself (keys with delivery "send" or "both") and return the
        exchange's answer, whatever its HTTP status. The bot never sees the signature. Raises as sign()
        does, and OutcomeUnknownError when the request went out and no answer came back."""
        msg = sign_request(key, method, path, query, body)
        try:
            reply = self._stub.Send(msg, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _send_error(exc) from None
        return _answer(reply)

    def sign_batch(self, requests: Iterable[signer_pb2.SignRequest]) -> list[SignedRequest | SigningError]:
        """Sign many requests in one RPC (build each with `sign_request`). Results in order: a
        SignedRequest, or the SigningError that item alone was refused with."""
        batch = signer_pb2.SignBatchRequest(requests=list(requests))
        try:
            reply = self._stub.SignBatch(batch, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return _batch_results(reply)

    def stream(self) -> SignStream:
        """A SignStream for signing request after request on one open stream (lower latency than
        `sign` for a bot that signs often); close it, or use it as a context manager."""
        return SignStream(self._stub, self._metadata)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "SignerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
