"""ccxt binanceusdm signs as binance."""

from agent.ccxt_bridge.exchanges.binance import PLACEHOLDER, unsign

__all__ = ["PLACEHOLDER", "unsign"]
