"""The asyncio client (grpc.aio): the same calls as SignerClient, awaited.

    from signing_agent_client.aio import AsyncSignerClient

    async with AsyncSignerClient() as signer:     # where the agent is: as SignerClient (default_target)
        req = await signer.sign("binance-main", "GET", "/api/v3/account")

Errors are the same SigningError subclasses as the sync client's. A channel belongs to the event
loop it was created in: create the client inside the loop that uses it.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
import grpc.aio

from signing_agent_client._proto import signer_pb2
from signing_agent_client.client import (
    ParamsLike,
    SigningError,
    _batch_results,
    _Connection,
    _error,
    _signed,
    sign_request,
)
from signing_agent_client.request import SignedRequest


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

    async def sign_batch(self, requests: Iterable[signer_pb2.SignRequest]) -> list[SignedRequest | SigningError]:
        """Sign many requests in one RPC (see SignerClient.sign_batch)."""
        batch = signer_pb2.SignBatchRequest(requests=list(requests))
        try:
            reply = await self._stub.SignBatch(batch, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return _batch_results(reply)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncSignerClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
