"""ccxt kucoinfutures signs as kucoin."""

from agent.ccxt_bridge.exchanges.kucoin import PLACEHOLDER, unsign

__all__ = ["PLACEHOLDER", "unsign"]
