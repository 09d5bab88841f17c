"""The asyncio client (grpc.aio): the same calls as SignerClient, awaited.

    from signing_agent_client.aio import AsyncSignerClient

    async with AsyncSignerClient() as signer:     # where the agent is: as SignerClient (default_target)
        req = await signer.sign("binance-main", "GET", "/api/v3/account")
        async with signer.stream() as stream:        # one stream kept open (see SignerClient.stream)
            req = await stream.sign("binance-main", "GET", "/api/v3/account")

Errors are the same SigningError subclasses as the sync client's. A channel belongs to the event
loop it was created in: create the client inside the loop that uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import grpc
import grpc.aio

from signing_agent_client._proto import signer_pb2, signer_pb2_grpc
from signing_agent_client.client import (
    SEND_TIMEOUT,
    ParamsLike,
    SigningError,
    _answer,
    _batch_results,
    _Connection,
    _error,
    _send_error,
    _signed,
    _stream_answer,
    sign_request,
)
from signing_agent_client.request import ExchangeAnswer, SignedRequest


class AsyncSignerClient(_Connection):
    """A grpc.aio connection to the agent; the same arguments as SignerClient."""

    _channels = grpc.aio

    async def sign(
        self,
        key: str,
        method: str,
        path: str,
        query: ParamsLike | None = None,
        body: ParamsLike | str | None = None,
        *,
        timestamp_ms: int | None = None,
    ) -> SignedRequest:
        """Return the signed request for the key labelled KEY (see SignerClient.sign)."""
        msg = sign_request(key, method, path, query, body, timestamp_ms=timestamp_ms)
        try:
            reply = await self._stub.Sign(msg, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return _signed(reply)

    async def send(
        self,
        key: str,
        method: str,
        path: str,
        query: ParamsLike | None = None,
        body: ParamsLike | str | None = None,
        *,
        timeout: float = SEND_TIMEOUT,
    ) -> ExchangeAnswer:
        """Have the agent place the request and return the exchange's answer (see SignerClient.send)."""
        msg = sign_request(key, method, path, query, body)
        try:
            reply = await self._stub.Send(msg, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _send_error(exc) from None
        return _answer(reply)

    async def sign_batch(self, requests: Iterable[signer_pb2.SignRequest]) -> list[SignedRequest | SigningError]:
        """Sign many requests in one RPC (see SignerClient.sign_batch)."""
        batch = signer_pb2.SignBatchRequest(requests=list(requests))
        try:
            reply = await self._stub.SignBatch(batch, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return _batch_results(reply)

    def stream(self) -> "AsyncSignStream":
        """An AsyncSignStream: request after request on one open stream (see SignerClient.stream)."""
        return AsyncSignStream(self._stub, self._metadata)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncSignerClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncSignStream:
    """One SignStream kept open, awaited (see signing_agent_client.client.SignStream). Concurrent
    `sign` calls on one stream take turns: each answer follows its own request."""

    def __init__(self, stub: signer_pb2_grpc.SignerStub, metadata: Any) -> None:
        self._call = stub.SignStream(metadata=metadata)
        self._turn = asyncio.Lock()

    async def sign(self, *args: Any, **kwargs: Any) -> SignedRequest:
        """As AsyncSignerClient.sign (the same arguments, those of `sign_request`), on this stream."""
        msg = sign_request(*args, **kwargs)
        async with self._turn:
            try:
                await self._call.write(msg)
                result = await self._call.read()
            except grpc.RpcError as exc:
                raise _error(exc) from None
        return _stream_answer(None if result is grpc.aio.EOF else result)

    async def close(self) -> None:
        """End the stream (the agent sees the end of its requests)."""
        try:
            await self._call.done_writing()
        except grpc.RpcError:
            pass
        self._call.cancel()

    async def __aenter__(self) -> "AsyncSignStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
