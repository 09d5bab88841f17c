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
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from signing_agent_client._proto import signer_pb2, signer_pb2_grpc
from signing_agent_client.client import (
    ClientTls,
    ParamsLike,
    SigningError,
    _batch_results,
    _connection,
    _error,
    _signed,
    _stream_answer,
    sign_request,
)
from signing_agent_client.request import SignedRequest


class AsyncSignerClient:
    """A grpc.aio connection to the agent. TARGET is 'unix:///path/agent.sock' or 'host:port'."""

    def __init__(
        self,
        target: str | None = None,
        *,
        config_path: Path | None = None,
        timeout: float = 5.0,
        token_file: Path | str | None | bool = None,
        tls: ClientTls | None = None,
    ):
        self.target, self.timeout, self._metadata, options = _connection(
            target, config_path, timeout, token_file, tls)
        self._channel = (grpc.aio.secure_channel(self.target, tls.credentials(), options=options) if tls
                         else grpc.aio.insecure_channel(self.target, options=options))
        self._stub = signer_pb2_grpc.SignerStub(self._channel)

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
