"""signing-agent-client: the bot side of signing-agent (distribution `signing-agent-client`).

A bot asks the agent to sign an exchange request and gets it back complete; it never holds the
exchange secret. Depends on grpcio and protobuf only; `signing-agent-client[ccxt]` adds ccxt for
`signing_agent_client.ccxt_bridge`.

    from signing_agent_client import SignerClient            # sync
    from signing_agent_client.aio import AsyncSignerClient   # asyncio (grpc.aio)
    from signing_agent_client.ccxt_bridge import agent_exchange, agent_exchange_async   # ccxt

The agent itself depends on this package for the generated gRPC code (`_proto`) and the request
shapes (`request`); nothing here imports the agent.
"""

from signing_agent_client.client import (
    AgentUnavailableError,
    ClientTls,
    InvalidRequestError,
    KeyNotFoundError,
    NoTargetError,
    NotAuthenticatedError,
    OutcomeUnknownError,
    RateLimitedError,
    RefusedError,
    SignerClient,
    SigningError,
    default_target,
    sign_request,
)
from signing_agent_client.request import ExchangeAnswer, SignedRequest

__all__ = [
    "AgentUnavailableError",
    "ClientTls",
    "ExchangeAnswer",
    "InvalidRequestError",
    "KeyNotFoundError",
    "NoTargetError",
    "NotAuthenticatedError",
    "OutcomeUnknownError",
    "RateLimitedError",
    "RefusedError",
    "SignedRequest",
    "SignerClient",
    "SigningError",
    "default_target",
    "sign_request",
]
