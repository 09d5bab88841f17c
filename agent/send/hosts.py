"""Where Send places a request: the exchange's own host, from this registry, never the bot's choice.

A key's `send_to` (policy) is "production", "testnet" or an operator's https:// base URL (a local
exchange emulator in tests, a relay). The registry gives each exchange's production host and,
where the exchange runs one with the same API and signatures, its testnet host. Some exchanges serve
several APIs on several hosts: the host follows the request path (Binance USD-M on fapi., HTX spot
and derivatives, whose host is signed: the key's spot_host / contract_host options choose it, as the
scheme does). A bot names a path; it can never make the agent connect anywhere else.

Every exchange of the registry (agent.exchanges) has an entry here, or this module fails at import:
no exchange is added without saying where its requests go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.delivery import PRODUCTION, TESTNET


class BaseUrlError(ValueError):
    """A base URL that is not https://host[:port]; the message says what is wrong."""


class NoHost(Exception):
    """The exchange has no host of the kind asked for; the message says what to configure."""


def parse_base_url(value: str) -> str:
    """VALUE as 'https://host[:port]' (lower-case scheme and host), or BaseUrlError."""
    parts = urlsplit(value)
    if parts.scheme != "https":
        raise BaseUrlError("the scheme must be https (the agent sends secrets-bearing requests over TLS only)")
    if not parts.hostname or parts.username or parts.password:
        raise BaseUrlError("it needs a host and no user or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BaseUrlError("it is scheme, host and port only: no path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise BaseUrlError("its port is not a number from 1 to 65535") from None
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}" + (f":{port}" if port else "")


# A host by path prefix: the first prefix the path starts with wins; "" matches every path.
ByPath = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Hosts:
    production: ByPath | Callable[[str, Mapping[str, str]], str]
    testnet: ByPath | None  # None: the exchange runs no testnet with this API

    def host(self, kind: str, path: str, options: Mapping[str, str]) -> str:
        table = self.production if kind == PRODUCTION else self.testnet
        if table is None:
            raise NoHost("has no testnet in the agent's registry")
        if callable(table):
            return table(path, options)
        for prefix, host in table:
            if path.startswith(prefix):
                return host
        raise NoHost(f"has no host for path {path[:80]!r} in the agent's registry")


def _htx(path: str, options: Mapping[str, str]) -> str:
    # The host is signed: the scheme's choice, so what is sent is what was signed.
    from agent.exchanges.htx.scheme import _FAMILY_HOSTS  # noqa: PLC2701 - one table, the scheme's
    from signing_agent_client.ccxt_bridge.htx import family

    option, allowed = _FAMILY_HOSTS[family(path)]
    return options.get(option) or allowed[0]


def _unverified(path: str, options: Mapping[str, str]) -> str:
    raise NoHost("has no verified production host in the agent's registry (its scheme comes from third-party "
                 "clients only)")


def _one(host: str) -> ByPath:
    return (("", host),)


_BINANCE_TESTNET = (("/fapi/", "testnet.binancefuture.com"), ("/dapi/", "testnet.binancefuture.com"),
                    ("/api/", "testnet.binance.vision"))
REGISTRY: Mapping[str, Hosts] = {
    "binance": Hosts((("/fapi/", "fapi.binance.com"), ("/dapi/", "dapi.binance.com"), ("/eapi/", "eapi.binance.com"),
                      ("/papi/", "papi.binance.com"), ("", "api.binance.com")), _BINANCE_TESTNET),
    "binanceusdm": Hosts((("/sapi/", "api.binance.com"), ("/api/", "api.binance.com"), ("", "fapi.binance.com")),
                         _BINANCE_TESTNET),
    "binanceus": Hosts(_one("api.binance.us"), None),
    "binancetr": Hosts(_unverified, None),
    "bitfinex": Hosts(_one("api.bitfinex.com"), None),
    "bitget": Hosts(_one("api.bitget.com"), None),
    "bitstamp": Hosts(_one("www.bitstamp.net"), None),
    "bybit": Hosts(_one("api.bybit.com"), _one("api-testnet.bybit.com")),
    "coinbase": Hosts(_one("api.coinbase.com"), None),
    "cryptocom": Hosts(_one("api.crypto.com"), _one("uat-api.3ona.co")),
    "deribit": Hosts(_one("www.deribit.com"), _one("test.deribit.com")),
    "gate": Hosts(_one("api.gateio.ws"), _one("api-testnet.gateapi.io")),
    "gemini": Hosts(_one("api.gemini.com"), _one("api.sandbox.gemini.com")),
    "htx": Hosts(_htx, None),
    "kraken": Hosts(_one("api.kraken.com"), None),
    "kucoin": Hosts(_one("api.kucoin.com"), None),
    "kucoinfutures": Hosts(_one("api-futures.kucoin.com"), None),
    "mexc": Hosts(_one("api.mexc.com"), None),
    "okx": Hosts(_one("www.okx.com"), None),
}


def base_url(exchange_id: str, send_to: str, path: str, options: Mapping[str, str]) -> str:
    """The https:// base URL a request of EXCHANGE_ID to PATH goes to, for a key whose policy says SEND_TO."""
    if send_to not in (PRODUCTION, TESTNET):
        return send_to  # the operator's, checked when the policy was read (parse_base_url)
    try:
        return "https://" + REGISTRY[exchange_id].host(send_to, path, options)
    except NoHost as exc:
        raise NoHost(f"{exchange_id} {exc}: set the key's send_to to another of production, testnet, or an "
                     "https:// base URL") from None


def _check_registry() -> None:
    from agent.exchanges import EXCHANGES

    missing = sorted(set(EXCHANGES) - set(REGISTRY))
    if missing:
        raise RuntimeError(f"agent/send/hosts.py: no hosts for exchange(s) {missing}")


_check_registry()
