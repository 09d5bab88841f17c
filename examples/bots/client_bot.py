"""A bot with the plain client: the agent signs, the bot sends. No secret anywhere in this process.

    SIGNING_AGENT_TARGET=unix:///path/to/run/agent.sock SIGNING_AGENT_TOKEN_FILE=/home/mm-1/agent.token \
        python client_bot.py [--key binance-main] [--exchange-url URL] [--dry-run]

Where the agent is comes from the environment (SIGNING_AGENT_TARGET, else SIGNING_AGENT_CONFIG, else
./signing-agent.toml); the bot's credential from SIGNING_AGENT_TOKEN_FILE. --exchange-url (or
$EXCHANGE_URL) sends to another server than Binance's, such as a local test exchange. --dry-run prints
the signed order and sends nothing. Needs only signing-agent-client (the standard library sends HTTP).
"""

import argparse
import json
import os
import urllib.error
import urllib.request

from signing_agent_client import SignerClient

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--key", default=os.environ.get("SIGNING_AGENT_KEY", "binance-main"), help="the key's label")
parser.add_argument("--exchange-url", default=os.environ.get("EXCHANGE_URL", "https://api.binance.com"))
parser.add_argument("--dry-run", action="store_true", help="print the signed order, send nothing")
args = parser.parse_args()


def send(req, base_url):
    """Send a signed request as it is: its path already carries the query (and the signature, if there)."""
    http = urllib.request.Request(base_url + req.path, method=req.method, headers=req.headers_dict(),
                                  data=req.body.encode() if req.body else None)
    with urllib.request.urlopen(http, timeout=10) as answer:
        return json.load(answer)


with SignerClient() as signer:
    req = signer.sign(
        args.key, "POST", "/api/v3/order",
        body={"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
              "timeInForce": "GTC", "quantity": "0.001", "price": "50000"},
    )
    # req.path already carries the query; req.body carries timestamp and signature
    if args.dry_run:
        print(json.dumps({"method": req.method, "path": req.path, "headers": req.headers_dict(), "body": req.body}))
        raise SystemExit(0)
    try:
        order = send(req, args.exchange_url)
        balances = send(signer.sign(args.key, "GET", "/api/v3/account"), args.exchange_url)["balances"]
    except urllib.error.HTTPError as exc:  # the exchange's own error: its status and its JSON body
        raise SystemExit(f"exchange answered {exc.code}: {exc.read().decode()[:200]}")
print("order", order["orderId"], order["status"])
print("balances", {b["asset"]: b["free"] for b in balances})
