"""The Python client a bot uses: it asks the agent to sign, and never holds a secret.

    from agent.client import SignerClient

    with SignerClient() as signer:                      # the agent of ./signing-agent.toml
        req = signer.sign("binance-main", "POST", "/api/v3/order",
                          body={"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                "timeInForce": "GTC", "quantity": "0.001", "price": "50000"})
        requests.request(req.method, "https://api.binance.com" + req.path,
                         headers=req.headers_dict(), data=req.body)

Errors are raised as SigningError subclasses carrying the gRPC status name:
KeyNotFoundError, InvalidRequestError, AgentUnavailableError.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Union

import grpc

from agent._proto import signer_pb2, signer_pb2_grpc
from agent.config import load_config
from agent.schemes.request import SignedRequest

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


_ERRORS = {
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
    return f"unix://{load_config(config_path).server.socket}"


class SignerClient:
    """A connection to the agent. TARGET is 'unix:///path/agent.sock' or 'host:port'."""

    def __init__(self, target: str | None = None, *, config_path: Path | None = None, timeout: float = 5.0):
        self.target = target or default_target(config_path)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.target)
        self._stub = signer_pb2_grpc.SignerStub(self._channel)

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
        msg = signer_pb2.SignRequest(
            key=key, method=method, path=path, query=to_params(query), timestamp_ms=timestamp_ms or 0
        )
        if isinstance(body, str):
            msg.raw = body
        elif body is not None:
            msg.fields.items.extend(to_params(body))
        try:
            reply = self._stub.Sign(msg, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            raise _ERRORS.get(code, SigningError)(code.name, exc.details() or "") from None
        return SignedRequest(
            method=reply.method,
            path=reply.path,
            headers=tuple((h.name, h.value) for h in reply.headers),
            body=reply.body,
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "SignerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
