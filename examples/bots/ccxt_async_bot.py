"""A ccxt.async_support bot whose requests the agent signs (asyncio: grpc.aio to the agent).

    SIGNING_AGENT_TARGET=unix:///path/to/run/agent.sock SIGNING_AGENT_TOKEN_FILE=/home/mm-1/agent.token \
        python ccxt_async_bot.py [--key binance-main] [--exchange-url URL] [--dry-run]

The same environment and options as ccxt_bot.py; orders for two symbols are placed concurrently.
"""

import argparse
import asyncio
import json
import os
from urllib.parse import urlsplit

from signing_agent_client.ccxt_bridge import agent_exchange_async, signed_request_async

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--key", default=os.environ.get("SIGNING_AGENT_KEY", "binance-main"), help="the key's label")
parser.add_argument("--exchange-url", default=os.environ.get("EXCHANGE_URL"), help="instead of Binance's hosts")
parser.add_argument("--dry-run", action="store_true", help="print the signed order, send nothing")
args = parser.parse_args()


async def main():
    # Created inside the event loop that uses it (so is its grpc.aio client); closed by close().
    exchange = agent_exchange_async("binance", key=args.key, dry_run=args.dry_run,
                                    config={"options": {"fetchMarkets": {"types": ["spot"]}}})
    if args.exchange_url:
        for name, url in exchange.urls["api"].items():
            exchange.urls["api"][name] = args.exchange_url + urlsplit(url).path
    try:
        await exchange.load_markets()
        if args.dry_run:
            print(json.dumps(await signed_request_async(exchange.create_order, "BTC/USDT", "limit", "buy",
                                                        0.001, 50000)))
            return
        orders = await asyncio.gather(*(exchange.create_order("BTC/USDT", "limit", side, 0.001, price)
                                        for side, price in (("buy", 50000), ("sell", 90000))))
        print("orders", [(o["id"], o["side"], o["status"]) for o in orders])
        print("balances", (await exchange.fetch_balance())["free"])
    finally:
        await exchange.close()


asyncio.run(main())
