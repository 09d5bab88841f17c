"""ccxt without secrets: a ccxt exchange whose private requests the agent signs.

    from agent.ccxt_bridge import agent_exchange

    exchange = agent_exchange("binance", key="binance-main")      # no apiKey, no secret
    exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 50000)

How: ccxt builds each request as usual. For a private call, its `sign()` runs
once with placeholder credentials (worthless strings, never a secret), which
gives the request exactly as ccxt would send it. The exchange's bridge
(agent/exchanges/<family>/bridge.py, named by its record) strips what the
signature added (signature, auth headers, the nonce) and keeps the rest:
method, path, query, body, and the instant ccxt stamped. A bridge holds
PLACEHOLDER (the credentials ccxt is given) and `unsign(exchange, built, api)`,
which receives what ccxt's own sign() returned ({url, method, body, headers})
and returns an `Unsigned`, or None for a public request. The agent signs that
structured request with the key in its token and returns the complete
request, which replaces ccxt's.

So the bot holds no secret, and what is sent is what plain ccxt would send
with the secret in memory (tests check this byte for byte), except ccxt's
decorative headers that no signature covers (exchange-signing.md 0.7).
"""

from __future__ import annotations

import importlib
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from agent.client import AgentUnavailableError, InvalidRequestError, KeyNotFoundError, SignerClient, SigningError
from agent.schemes import Body, UnsignedRequest


@dataclass(frozen=True)
class Unsigned:
    """A private request as ccxt built it, without its authentication."""

    base_url: str  # scheme and host (and any fixed prefix the agent does not sign)
    request: UnsignedRequest
    timestamp_ms: int | None = None  # the instant ccxt stamped; the agent signs for it
    # Headers ccxt sends that no signature covers and the agent does not produce (Bitget's
    # demo-trading PAPTRADING...): passed through as they are; the agent's headers win.
    extra_headers: tuple[tuple[str, str], ...] = ()


def split_url(url: str, prefix: str = "") -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(base_url, path, query pairs) of URL; PREFIX (for example '/api') stays in base_url."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{prefix}"
    path = parts.path[len(prefix):] if prefix and parts.path.startswith(prefix) else parts.path
    return base, path, tuple(parse_qsl(parts.query, keep_blank_values=True))


def without(pairs: tuple[tuple[str, str], ...], *names: str) -> tuple[tuple[str, str], ...]:
    return tuple((n, v) for n, v in pairs if n not in names)


def bridge_module(exchange_id: str) -> ModuleType:
    """The bridge of EXCHANGE_ID, named by its record (agent/exchanges/<family>/bridge.py)."""
    from agent.exchanges import exchange_for
    from agent.schemes import UnknownExchange

    try:
        bridge = exchange_for(exchange_id).bridge
    except UnknownExchange:
        bridge = None  # an unknown id, like an exchange ccxt does not have, has no bridge
    if bridge is None:
        raise ValueError(f"no ccxt bridge for {exchange_id!r}")
    return importlib.import_module(bridge)


def agent_exchange(
    exchange_id: str,
    key: str,
    *,
    client: SignerClient | None = None,
    target: str | None = None,
    config: dict[str, Any] | None = None,
) -> Any:
    """A ccxt exchange of class EXCHANGE_ID whose private calls the agent signs with key KEY.

    CLIENT (or TARGET) reaches the agent; by default the agent of ./signing-agent.toml.
    CONFIG is passed to ccxt as usual (options, timeouts...), without credentials.
    """
    import ccxt  # optional dependency: only bots that use ccxt need it

    module = bridge_module(exchange_id)
    base_class = getattr(ccxt, exchange_id)
    signer = client or SignerClient(target)
    # The agent's refusals as the ccxt exceptions bots already handle (retry on NetworkError...).
    errors = {
        AgentUnavailableError: ccxt.NetworkError,
        KeyNotFoundError: ccxt.AuthenticationError,
        InvalidRequestError: ccxt.BadRequest,
    }
    config = dict(config or {})
    for credential in ("apiKey", "secret", "password", "uid", "privateKey"):
        if credential in config:
            raise ValueError(f"do not give ccxt a {credential!r}: the agent holds the key")
    # Placeholders satisfy ccxt's credential checks and its sign(); they sign nothing that is sent.
    config.update(module.PLACEHOLDER)

    class AgentSigned(base_class):  # type: ignore[misc, valid-type]
        def sign(self, path, api="public", method="GET", params={}):  # noqa: B006 (ccxt 4.5's signature)
            built = super().sign(path, api, method, params)
            unsigned = module.unsign(self, built, api)
            if unsigned is None:  # public: ccxt added no authentication
                return built
            req = unsigned.request
            try:
                signed = signer.sign(
                    key, req.method, req.path, req.query, _body_arg(req.body), timestamp_ms=unsigned.timestamp_ms
                )
            except SigningError as exc:
                ccxt_error = next((e for cls, e in errors.items() if isinstance(exc, cls)), ccxt.PermissionDenied)
                raise ccxt_error(f"{self.id} {method} {path}: signing agent: {exc}") from exc
            return {
                "url": unsigned.base_url + signed.path,
                "method": signed.method,
                "body": signed.body or None,
                "headers": {**dict(unsigned.extra_headers), **signed.headers_dict()},
            }

    AgentSigned.__name__ = f"AgentSigned_{exchange_id}"
    exchange = AgentSigned(config)
    if client is None:  # ours: closed with the exchange object
        weakref.finalize(exchange, signer.close)
    return exchange


def _body_arg(body: Body) -> Any:
    from agent.schemes import RawBody

    if isinstance(body, RawBody):
        return body.text
    return body
