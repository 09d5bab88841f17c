"""ccxt without secrets: a ccxt exchange whose private requests the agent signs.

    from signing_agent_client.ccxt_bridge import agent_exchange, agent_exchange_async

    exchange = agent_exchange("binance", key="binance-main")      # ccxt.binance: no apiKey, no secret
    exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 50000)

    exchange = agent_exchange_async("binance", key="binance-main")   # ccxt.async_support.binance
    await exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 50000)
    await exchange.close()

How: ccxt builds each request as usual. For a private call, its `sign()` runs
once with placeholder credentials (worthless strings, never a secret), which
gives the request exactly as ccxt would send it. The exchange's bridge
(signing_agent_client/ccxt_bridge/<family>.py, named in BRIDGES) strips what the
signature added (signature, auth headers, the nonce) and keeps the rest:
method, path, query, body, and the instant ccxt stamped. A bridge holds
PLACEHOLDER (the credentials ccxt is given) and `unsign(exchange, built, api)`,
which receives what ccxt's own sign() returned ({url, method, body, headers})
and returns an `Unsigned`, or None for a public request. The agent signs that
structured request with the key in its token and returns the complete
request, which replaces ccxt's.

So the bot holds no secret, and what is sent is what plain ccxt would send
with the secret in memory (tests check this byte for byte), except ccxt's
decorative headers that no signature covers (docs/exchange-signing.md 0.7).

ccxt.async_support: its sign() is synchronous, so the bridged sign() only
strips the authentication and leaves a marker; the bridged fetch() awaits the
agent (AsyncSignerClient) and sends the signed request instead.

Errors: the agent's refusals are raised as ccxt's own classes (ERRORS), so
ccxt's and the bot's retry logic works: RESOURCE_EXHAUSTED is
RateLimitExceeded (a NetworkError: back off and retry), UNAVAILABLE
ExchangeNotAvailable, DEADLINE_EXCEEDED RequestTimeout, UNAUTHENTICATED,
NOT_FOUND and FAILED_PRECONDITION AuthenticationError (ask the operator),
PERMISSION_DENIED PermissionDenied (policy: do not retry), INVALID_ARGUMENT
BadRequest, anything else ExchangeError. The SigningError is the __cause__.

Calls ccxt makes by itself: `load_markets` of some exchanges makes private
calls (binance `fetch_currencies`: GET /sapi/v1/capital/config/getall), and
bybit's create_order first asks whether the account is unified. The bridge
turns them off (AUTOMATIC_OFF: ccxt options, per exchange) so that the
template policy, which grants trading only, is enough; a bot that wants them
passes the option back in CONFIG and asks the operator to allow the endpoint.
Three have no option: coinbase GET /api/v3/brokerage/transaction_summary and
kucoin's GET /api/v3/margin/symbols and /api/v1/isolated/symbols, reads that
the exchanges' template policies allow.

Send mode: agent_exchange(..., send=True) (and agent_exchange_async) route every private call
through the agent's Send: the agent decides, signs and places the request itself and returns the
exchange's answer, which ccxt parses as usual (its own error handling included), so a bot keeps its
code. The bot never holds a signature. For keys whose policy says delivery = "send". A request that
went out and got no answer is ccxt's RequestTimeout, as with ccxt alone: the agent did not send it
again (where the exchange takes a client order id, it looked the order up by it first).

Dry run: agent_exchange(..., dry_run=True) signs each private request with the
agent as usual but never sends it: the call raises DryRun, whose .request is
{url, method, headers, body}, the request ccxt would have sent
(`signed_request(exchange.create_order, ...)` returns it). Public requests
(markets, tickers) still go to the exchange.
"""

from __future__ import annotations

import importlib
import itertools
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from signing_agent_client.client import (
    AgentUnavailableError,
    InvalidRequestError,
    KeyNotFoundError,
    NotAuthenticatedError,
    RateLimitedError,
    RefusedError,
    SignerClient,
    SigningError,
)
from signing_agent_client.request import Body, RawBody, UnsignedRequest

# ccxt's exchange id -> the module (in this package) that strips ccxt's authentication. The agent's
# exchange records name the same ccxt ids (a test checks that the two agree).
BRIDGES = {
    "binance": "binance", "binanceusdm": "binance", "binanceus": "binance",
    "bitfinex": "bitfinex", "bitget": "bitget", "bitstamp": "bitstamp", "bybit": "bybit",
    "coinbase": "coinbase", "cryptocom": "cryptocom", "deribit": "deribit", "gate": "gate",
    "gemini": "gemini", "htx": "htx", "kraken": "kraken", "kucoin": "kucoin", "kucoinfutures": "kucoin",
    "mexc": "mexc", "okx": "okx",
}

# ccxt configuration that turns off the private calls ccxt makes by itself inside load_markets, per
# exchange (tests/agent/test_client_package.py runs load_markets of every bridged exchange offline and
# checks which private calls are left). Merged under the bot's own CONFIG: the bot's values win.
_NO_PRIVATE_CURRENCIES = {"has": {"fetchCurrencies": False}}
AUTOMATIC_OFF: dict[str, dict[str, Any]] = {
    "binance": {"options": {"fetchCurrencies": False, "fetchMargins": False}},
    "binanceusdm": {"options": {"fetchCurrencies": False, "fetchMargins": False}},
    "bitget": {"options": {"uta": False}},
    # create_order asks whether the account is unified (GET /v5/user/query-api, the API key's own
    # record, and GET /v5/account/info) unless these options say it: a unified trading account, Bybit's
    # account type for new users. A classic account passes {"enableUnifiedAccount": False}.
    "bybit": {**_NO_PRIVATE_CURRENCIES, "options": {"enableUnifiedAccount": True, "enableUnifiedMargin": False}},
    "coinbase": {"options": {"fetchMarkets": {"usePrivate": False}}},
    "cryptocom": _NO_PRIVATE_CURRENCIES,
    "gate": {"options": {"unifiedAccount": False}},
    "kucoin": {"options": {"uta": False, "hf": False}},
    "kucoinfutures": {"options": {"uta": False, "hf": False}},
    "mexc": _NO_PRIVATE_CURRENCIES,
    "okx": _NO_PRIVATE_CURRENCIES,
}

# Where ccxt.async_support's sign() leaves the request for the bridged fetch() to sign.
_PENDING = "X-Signing-Agent-Pending"


@dataclass(frozen=True)
class Unsigned:
    """A private request as ccxt built it, without its authentication."""

    base_url: str  # scheme and host (and any fixed prefix the agent does not sign)
    request: UnsignedRequest
    timestamp_ms: int | None = None  # the instant ccxt stamped; the agent signs for it
    # Headers ccxt sends that no signature covers and the agent does not produce (Bitget's
    # demo-trading PAPTRADING...): passed through as they are; the agent's headers win.
    extra_headers: tuple[tuple[str, str], ...] = ()


class DryRun(Exception):
    """dry_run=True: the signed request ccxt would have sent ({url, method, headers, body}); not sent."""

    def __init__(self, request: dict[str, Any]) -> None:
        super().__init__(f"dry run: {request['method']} {request['url']} (not sent)")
        self.request = request


def split_url(url: str, prefix: str = "") -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(base_url, path, query pairs) of URL; PREFIX (for example '/api') stays in base_url."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{prefix}"
    path = parts.path[len(prefix):] if prefix and parts.path.startswith(prefix) else parts.path
    return base, path, tuple(parse_qsl(parts.query, keep_blank_values=True))


def without(pairs: tuple[tuple[str, str], ...], *names: str) -> tuple[tuple[str, str], ...]:
    return tuple((n, v) for n, v in pairs if n not in names)


def bridge_module(exchange_id: str) -> ModuleType:
    """The bridge of ccxt's EXCHANGE_ID (signing_agent_client/ccxt_bridge/<family>.py)."""
    name = BRIDGES.get(exchange_id)
    if name is None:
        raise ValueError(f"no ccxt bridge for {exchange_id!r} (bridged: {', '.join(sorted(BRIDGES))})")
    return importlib.import_module(f"{__name__}.{name}")


def ccxt_error(exc: SigningError) -> type[Exception]:
    """The ccxt exception class for the agent's refusal EXC (see the module docstring)."""
    import ccxt

    if isinstance(exc, RateLimitedError):
        return ccxt.RateLimitExceeded
    if isinstance(exc, AgentUnavailableError):
        return ccxt.RequestTimeout if exc.code == "DEADLINE_EXCEEDED" else ccxt.ExchangeNotAvailable
    if isinstance(exc, (NotAuthenticatedError, KeyNotFoundError)) or exc.code == "FAILED_PRECONDITION":
        return ccxt.AuthenticationError
    if isinstance(exc, RefusedError):
        return ccxt.PermissionDenied
    if isinstance(exc, InvalidRequestError):
        return ccxt.BadRequest
    return ccxt.ExchangeError


def _config(exchange_id: str, module: ModuleType, config: dict[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    for credential in ("apiKey", "secret", "password", "uid", "privateKey"):
        if credential in config:
            raise ValueError(f"do not give ccxt a {credential!r}: the agent holds the key")
    off = AUTOMATIC_OFF.get(exchange_id, {})
    for section in ("has", "options"):
        if section in off or section in config:
            config[section] = {**off.get(section, {}), **(config.get(section) or {})}
    # Placeholders satisfy ccxt's credential checks and its sign(); they sign nothing that is sent.
    config.update(module.PLACEHOLDER)
    return config


def _sent(unsigned: Unsigned, signed) -> dict[str, Any]:
    return {
        "url": unsigned.base_url + signed.path,
        "method": signed.method,
        "body": signed.body or None,
        "headers": {**dict(unsigned.extra_headers), **signed.headers_dict()},
    }


def _sign_args(unsigned: Unsigned) -> tuple[tuple[Any, ...], dict[str, Any]]:
    req = unsigned.request
    return (req.method, req.path, req.query, _body_arg(req.body)), {"timestamp_ms": unsigned.timestamp_ms}


def _raise_as_ccxt(exchange, method: str, where: str, exc: SigningError):
    raise ccxt_error(exc)(f"{exchange.id} {method} {where}: signing agent: {exc}") from exc


def _placeholder(unsigned: Unsigned, ticket: str) -> dict[str, Any]:
    """What sign() returns for a request the bridged fetch() will have signed (or sent) by the agent.
    Sent by no one: fetch() sees the marker and replaces it before anything leaves."""
    return {"url": unsigned.base_url + unsigned.request.path, "method": unsigned.request.method,
            "headers": {_PENDING: ticket}, "body": None}


def _send_args(unsigned: Unsigned) -> tuple[Any, ...]:
    req = unsigned.request
    return (req.method, req.path, req.query, _body_arg(req.body))


def _ccxt_answer(exchange, answer, url: str, method: str) -> Any:
    """The exchange's ANSWER (from the agent's Send) as ccxt's own fetch() returns it: the response
    hooks, the exchange's error handling (handle_errors, then the HTTP status), then the parsed JSON."""
    from http import HTTPStatus

    import ccxt

    headers: dict[str, str] = {}
    for name, value in answer.headers:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    status = answer.status
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    text = answer.body.decode("utf-8", "replace")
    text = exchange.on_rest_response(status, reason, url, method, headers, text, {}, None)
    parsed = exchange.parse_json(text)
    if exchange.enableLastHttpResponse:
        exchange.last_http_response = text
    if exchange.enableLastJsonResponse:
        exchange.last_json_response = parsed
    if exchange.enableLastResponseHeaders:
        exchange.last_response_headers = headers
    if parsed and not isinstance(parsed, list) and exchange.returnResponseHeaders:
        parsed["responseHeaders"] = headers
    exchange.handle_errors(status, reason, url, method, headers, text, parsed, {}, None)
    exchange.handle_http_status_code(status, reason, url, method, text)
    if status >= 400:  # what ccxt's sync fetch() raises when no handler above did
        raise ccxt.ExchangeError(" ".join([exchange.id, method, url, str(status), text[:200]]))
    if parsed is not None:
        return parsed
    return text if exchange.is_text_response(headers) or not answer.body else answer.body


def agent_exchange(
    exchange_id: str,
    key: str,
    *,
    client: SignerClient | None = None,
    target: str | None = None,
    config: dict[str, Any] | None = None,
    dry_run: bool = False,
    send: bool = False,
) -> Any:
    """A ccxt exchange of class EXCHANGE_ID whose private calls the agent signs with key KEY.

    CLIENT (or TARGET) reaches the agent; by default SignerClient()'s (signing_agent_client.client.
    default_target). CONFIG is passed to ccxt as usual (options, timeouts...), without credentials.
    DRY_RUN: sign private requests but raise DryRun with each instead of sending it.
    SEND: the agent places each private request itself (Send) and ccxt parses its answer.
    """
    import ccxt  # optional dependency: pip install 'signing-agent-client[ccxt]'

    if send and dry_run:
        raise ValueError("dry_run shows a signed request, and in send mode the bot gets none: use one or the other")
    module = bridge_module(exchange_id)
    base_class = getattr(ccxt, exchange_id)
    signer = client or SignerClient(target)
    pending: dict[str, tuple[Unsigned, str, str]] = {}
    ids = itertools.count()

    class AgentSigned(base_class):  # type: ignore[misc, valid-type]
        def sign(self, path, api="public", method="GET", params={}):  # noqa: B006 (ccxt 4.5's signature)
            built = super().sign(path, api, method, params)
            unsigned = module.unsign(self, built, api)
            if unsigned is None:  # public: ccxt added no authentication
                return built
            if send:
                ticket = str(next(ids))
                pending[ticket] = (unsigned, method, path)
                return _placeholder(unsigned, ticket)
            args, kwargs = _sign_args(unsigned)
            try:
                signed = signer.sign(key, *args, **kwargs)
            except SigningError as exc:
                _raise_as_ccxt(self, method, path, exc)
            request = _sent(unsigned, signed)
            if dry_run:
                raise DryRun(request)
            return request

        def fetch(self, url, method="GET", headers=None, body=None):
            ticket = (headers or {}).get(_PENDING)
            if ticket is None:  # public, or signed above: ccxt sends it
                return super().fetch(url, method, headers, body)
            unsigned, ccxt_method, ccxt_path = pending.pop(ticket)
            try:
                answer = signer.send(key, *_send_args(unsigned))
            except SigningError as exc:
                _raise_as_ccxt(self, ccxt_method, ccxt_path, exc)
            return _ccxt_answer(self, answer, url, method)

    AgentSigned.__name__ = f"AgentSigned_{exchange_id}"
    exchange = AgentSigned(_config(exchange_id, module, config))
    if client is None:  # ours: closed with the exchange object
        weakref.finalize(exchange, signer.close)
    return exchange


def agent_exchange_async(
    exchange_id: str,
    key: str,
    *,
    client: Any = None,
    target: str | None = None,
    config: dict[str, Any] | None = None,
    dry_run: bool = False,
    send: bool = False,
) -> Any:
    """agent_exchange for ccxt.async_support: CLIENT is an AsyncSignerClient (by default one to the
    default target, closed by the exchange's `await exchange.close()`). Create it inside the event
    loop that uses it. SEND: as agent_exchange's."""
    import ccxt.async_support as ccxt_async

    from signing_agent_client.aio import AsyncSignerClient

    if send and dry_run:
        raise ValueError("dry_run shows a signed request, and in send mode the bot gets none: use one or the other")

    module = bridge_module(exchange_id)
    base_class = getattr(ccxt_async, exchange_id)
    signer = client or AsyncSignerClient(target)
    pending: dict[str, tuple[Unsigned, str, str]] = {}
    ids = itertools.count()

    class AgentSignedAsync(base_class):  # type: ignore[misc, valid-type]
        def sign(self, path, api="public", method="GET", params={}):  # noqa: B006
            built = super().sign(path, api, method, params)
            unsigned = module.unsign(self, built, api)
            if unsigned is None:
                return built
            ticket = str(next(ids))
            pending[ticket] = (unsigned, method, path)
            return _placeholder(unsigned, ticket)

        async def fetch(self, url, method="GET", headers=None, body=None):
            ticket = (headers or {}).get(_PENDING)
            if ticket is None:
                return await super().fetch(url, method, headers, body)
            unsigned, ccxt_method, ccxt_path = pending.pop(ticket)
            if send:
                try:
                    answer = await signer.send(key, *_send_args(unsigned))
                except SigningError as exc:
                    _raise_as_ccxt(self, ccxt_method, ccxt_path, exc)
                return _ccxt_answer(self, answer, url, method)
            args, kwargs = _sign_args(unsigned)
            try:
                signed = await signer.sign(key, *args, **kwargs)
            except SigningError as exc:
                _raise_as_ccxt(self, ccxt_method, ccxt_path, exc)
            request = _sent(unsigned, signed)
            if dry_run:
                raise DryRun(request)
            self.set_last_request(request)
            return await super().fetch(request["url"], request["method"], request["headers"], request["body"])

        async def close(self):
            try:
                await super().close()
            finally:
                if client is None:
                    await signer.close()

    AgentSignedAsync.__name__ = f"AgentSignedAsync_{exchange_id}"
    return AgentSignedAsync(_config(exchange_id, module, config))


def signed_request(call, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The signed request a dry-run exchange's CALL(*ARGS, **KWARGS) would send (its first private
    request): `signed_request(exchange.private_post_order, {...})`. For ccxt.async_support, await
    `signed_request_async` instead."""
    try:
        call(*args, **kwargs)
    except DryRun as dry:
        return dry.request
    raise ValueError("the call sent no private request (is the exchange built with dry_run=True?)")


async def signed_request_async(call, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """signed_request for ccxt.async_support exchanges."""
    try:
        await call(*args, **kwargs)
    except DryRun as dry:
        return dry.request
    raise ValueError("the call sent no private request (is the exchange built with dry_run=True?)")


def _body_arg(body: Body) -> Any:
    if isinstance(body, RawBody):
        return body.text
    return body
