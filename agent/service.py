"""The gRPC Signer service: request in, key from custody, scheme from the exchange, signed request out.

Every outcome maps to a status a bot can act on:
  unknown or revoked key  NOT_FOUND          (import it, or fix the label)
  malformed request       INVALID_ARGUMENT   (the message names the field)
  token unreachable       UNAVAILABLE        (transient; retry with backoff)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import grpc

from agent._proto import signer_pb2, signer_pb2_grpc
from agent.custody import (
    CustodyError,
    InvalidKeyMaterial,
    Keyring,
    KeyNotFound,
    KeyRevoked,
    TokenUnavailable,
    validate_label,
)
from agent.logs import get_logger
from agent.nonces import NonceError, NonceStore, NonceStoreUnavailable
from agent.custody import KeyEntry
from agent.schemes import (
    Environment,
    RawBody,
    RequestInvalid,
    SignedRequest,
    UnknownExchange,
    UnsignedRequest,
    UnsupportedKey,
    scheme_for,
)


@dataclass(frozen=True)
class TokenCredential:
    """A scheme's view of one key in the token (see agent.schemes.context.Credential)."""

    keyring: Keyring
    entry: KeyEntry
    nonces: NonceStore

    @property
    def api_key(self) -> str:
        return self.entry.info.api_key

    @property
    def key_type(self) -> str:
        return self.entry.info.key_type

    @property
    def passphrase(self) -> str | None:
        return self.entry.passphrase

    def option(self, name: str) -> str | None:
        return self.entry.info.options.get(name)

    def mac(self, message: bytes, hash_name: Any) -> bytes:
        return self.keyring.hmac(self.entry, message, hash_name)

    def sign(self, message: bytes) -> bytes:
        return self.keyring.sign(self.entry, message)

    def nonce(self, floor: int) -> int:
        try:
            return self.nonces.next(self.entry.info.exchange, self.entry.info.api_key, floor)
        except NonceStoreUnavailable as exc:
            raise TokenUnavailable(str(exc)) from None
        except NonceError as exc:
            raise CustodyError(str(exc)) from None


# How far ahead of the agent's clock a caller's timestamp_ms may be (clock skew between hosts).
MAX_FUTURE_MS = 60_000


def request_from_proto(msg: signer_pb2.SignRequest) -> UnsignedRequest:
    which = msg.WhichOneof("body")
    body: Any
    if which == "fields":
        body = tuple((p.name, p.value) for p in msg.fields.items)
    elif which == "raw":
        body = RawBody(msg.raw)
    else:
        body = None
    return UnsignedRequest(
        method=msg.method,
        path=msg.path,
        query=tuple((p.name, p.value) for p in msg.query),
        body=body,
    )


def signed_to_proto(signed: SignedRequest) -> signer_pb2.SignedRequest:
    return signer_pb2.SignedRequest(
        method=signed.method,
        path=signed.path,
        headers=[signer_pb2.Header(name=n, value=v) for n, v in signed.headers],
        body=signed.body,
    )


class SignerService(signer_pb2_grpc.SignerServicer):
    def __init__(
        self, keyring: Keyring, nonces: NonceStore, clock_ms=lambda: time.time_ns() // 1_000_000
    ) -> None:
        self._keyring = keyring
        self._nonces = nonces
        self._clock_ms = clock_ms
        self._log = get_logger()

    def sign(self, label: str, request: UnsignedRequest, timestamp_ms: int = 0) -> tuple[str, SignedRequest]:
        """Sign REQUEST with the key LABEL; returns (exchange, signed request).

        TIMESTAMP_MS: the caller's clock for this request; 0 means the agent's.
        """
        try:
            validate_label(label)
        except InvalidKeyMaterial as exc:
            raise RequestInvalid(f"key: {exc}") from None
        request = request.validated()  # the shape every exchange shares, before any token work
        for attempt in range(2):
            entry = self._keyring.lookup(label)
            if not entry.info.registered:
                raise CustodyError(
                    f"key {label!r} has no API key id yet: register its public key with {entry.info.exchange}, "
                    f"then run `signing-agent keys register --label {label} --api-key ...`"
                )
            try:
                scheme = scheme_for(entry.info.exchange)
            except UnknownExchange:
                raise CustodyError(
                    f"key {label!r} is for exchange {entry.info.exchange!r}, which this agent version cannot sign for"
                ) from None
            try:
                env = Environment(now_ms=timestamp_ms or self._clock_ms(), random_bytes=os.urandom)
                signed = scheme.sign(request, TokenCredential(self._keyring, entry, self._nonces), env)
                return entry.info.exchange, signed
            except KeyRevoked:
                # The handle died: the key was revoked, rotated under the same label, or the
                # session was reopened. Look it up once more; a revoked key is then NOT_FOUND.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def Sign(self, request: signer_pb2.SignRequest, context: grpc.ServicerContext) -> signer_pb2.SignedRequest:
        started = time.perf_counter()
        # Logged before validation, so cut to size and never with a query (it could carry a signature).
        fields = {"key": request.key[:64], "method": request.method[:16], "path": request.path.split("?")[0][:256]}
        try:
            if request.timestamp_ms < 0 or request.timestamp_ms > self._clock_ms() + MAX_FUTURE_MS:
                # A future instant would also move the key's nonces forward for good.
                raise RequestInvalid(
                    "timestamp_ms must be milliseconds since the epoch, at most "
                    f"{MAX_FUTURE_MS // 1000} s ahead of the agent's clock (0: the agent's clock)"
                )
            exchange, signed = self.sign(request.key, request_from_proto(request), request.timestamp_ms)
        except Exception as exc:
            code, message = _status_for(exc)
            self._log.info(
                "sign", decision="refused", status=code.name, reason=message, latency_ms=_ms_since(started), **fields
            )
            context.abort(code, message)
        self._log.info("sign", decision="signed", exchange=exchange, latency_ms=_ms_since(started), **fields)
        return signed_to_proto(signed)


def _status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message for an exception raised while signing."""
    if isinstance(exc, RequestInvalid):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, KeyNotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, TokenUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, (CustodyError, UnsupportedKey)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    # A bug. Its text is not echoed: nothing unreviewed leaves the agent.
    get_logger().error("sign.bug", error=type(exc).__name__, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the agent log"


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
