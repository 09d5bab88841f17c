"""A ccxt bot whose requests the agent signs: ccxt as usual, no apiKey, no secret.

    SIGNING_AGENT_TARGET=unix:///path/to/run/agent.sock SIGNING_AGENT_TOKEN_FILE=/home/mm-1/agent.token \
        python ccxt_bot.py [--key binance-main] [--exchange-url URL] [--dry-run]

Needs signing-agent-client[ccxt]. The agent's place and the bot's credential come from the environment,
as for client_bot.py. --exchange-url (or $EXCHANGE_URL) points every Binance API URL of ccxt at another
server. --dry-run: the order is signed by the agent and printed, not sent (markets are still loaded).
"""

import argparse
import json
import os
from urllib.parse import urlsplit

import ccxt

from signing_agent_client.ccxt_bridge import agent_exchange, signed_request

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--key", default=os.environ.get("SIGNING_AGENT_KEY", "binance-main"), help="the key's label")
parser.add_argument("--exchange-url", default=os.environ.get("EXCHANGE_URL"), help="instead of Binance's hosts")
parser.add_argument("--dry-run", action="store_true", help="print the signed order, send nothing")
args = parser.parse_args()

# Spot markets only: ccxt would also load USD-M and COIN-M futures markets, from other hosts.
config = {"options": {"fetchMarkets": {"types": ["spot"]}}}
# Plain ccxt would be ccxt.binance({"apiKey": "...", "secret": "..."}): here no apiKey, no secret.
exchange = agent_exchange("binance", key=args.key, config=config, dry_run=args.dry_run)
if args.exchange_url:  # every API URL of ccxt, whatever its host, to the one server given
    for name, url in exchange.urls["api"].items():
        exchange.urls["api"][name] = args.exchange_url + urlsplit(url).path

try:
    exchange.load_markets()
    if args.dry_run:
        print(json.dumps(signed_request(exchange.create_order, "BTC/USDT", "limit", "buy", 0.001, 50000)))
        raise SystemExit(0)
    order = exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 50000)
    balance = exchange.fetch_balance()
except ccxt.NetworkError as exc:  # the agent's rate, the exchange's 429, a timeout...: back off, retry
    raise SystemExit(f"try again later: {exc}")
except ccxt.PermissionDenied as exc:  # refused by the agent's policy: the message names the rule
    raise SystemExit(f"refused: {exc}")
print("order", order["id"], order["status"])
print("balances", balance["free"])
