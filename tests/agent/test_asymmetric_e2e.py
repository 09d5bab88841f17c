"""Asymmetric keys end to end, through the CLI and the real agent process.

* Generated in the token (`keys generate`): for every exchange that registers self-generated
  keys, the public key the CLI prints verifies the signature the agent puts in the request.
* Imported: Coinbase CDP keys (EC P-256 PEM as found in Coinbase's JSON key file, and the
  base64 Ed25519 secret): the JWT in the agent's request verifies under the key's public half;
  Binance Ed25519 PEM: the ccxt bot through the agent sends what plain ccxt sends.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from urllib.parse import parse_qsl, unquote, urlsplit

import ccxt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from signing_agent_client.ccxt_bridge import agent_exchange
from signing_agent_client.client import SignerClient, SigningError
from agent.exchanges import exchange_for
from agent.schemes import Environment, UnsignedRequest
from support.deploy import Env, run_cli
from support.leaks import new_secret, register_secret
from support.agent_io import capture, sent
from support.signatures import verify

NOW_MS = int(time.time() * 1000) - 5_000  # timestamp_ms may not be in the future


class RecordingCredential:
    """Records the text a scheme asks to have signed (to verify the agent's signature over it)."""

    def __init__(self, api_key: str, key_type: str, passphrase: str | None, options: dict[str, str]):
        self.api_key, self.key_type, self.passphrase, self._options = api_key, key_type, passphrase, options
        self.messages: list[bytes] = []

    def option(self, name: str) -> str | None:
        return self._options.get(name)

    def mac(self, message: bytes, hash_name: str) -> bytes:
        raise AssertionError("not an HMAC key")

    def sign(self, message: bytes) -> bytes:
        self.messages.append(message)
        return bytes(256 if self.key_type == "rsa" else 64)

    def nonce(self, floor: int) -> int:
        return floor


def _query(path: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))


# Where each exchange puts an asymmetric signature (all base64).
SIGNATURE_OF = {
    "binance": lambda s: _query(s.path)["signature"],
    "bybit": lambda s: s.headers_dict()["X-BAPI-SIGN"],
    "htx": lambda s: _query(s.path)["Signature"],
    "bitget": lambda s: s.headers_dict()["ACCESS-SIGN"],
}
# exchange, key type, a private request to sign
GENERATED = [
    ("binance", "ed25519", UnsignedRequest("GET", "/api/v3/account", query=(("omitZeroBalances", "true"),))),
    ("binance", "rsa", UnsignedRequest("GET", "/api/v3/openOrders", query=(("symbol", "BTCUSDT"),))),
    ("bybit", "rsa", UnsignedRequest("GET", "/v5/account/wallet-balance", query=(("accountType", "UNIFIED"),))),
    ("htx", "ed25519", UnsignedRequest("GET", "/v1/order/openOrders", query=(("symbol", "btcusdt"),))),
    ("bitget", "rsa", UnsignedRequest("GET", "/api/v2/spot/account/assets", query=(("coin", "USDT"),))),
]


@pytest.mark.e2e
@pytest.mark.parametrize("exchange,key_type,request_", GENERATED, ids=[f"{g[0]}-{g[1]}" for g in GENERATED])
def test_generated_key_public_half_verifies_the_agents_signature(env: Env, agent, label: str, exchange: str,
                                                                 key_type: str, request_: UnsignedRequest):
    generated = run_cli(env, "keys", "generate", "--label", label, "--exchange", exchange, "--type", key_type,
                        check=True)
    public = serialization.load_pem_public_key(generated.stdout.encode())
    assert "keys register" in generated.stderr
    api_key = f"ak-{secrets.token_hex(6)}"
    with SignerClient(agent.target) as client:
        # Not registered yet: refused, with what to do.
        with pytest.raises(SigningError, match="register") as refused:
            client.sign(label, request_.method, request_.path, request_.query)
        assert refused.value.code == "FAILED_PRECONDITION"
        passphrase = register_secret("Pp-" + new_secret(10)) if exchange_for(exchange).passphrase else None
        run_cli(env, "keys", "register", "--label", label, "--api-key", api_key,
                stdin=(passphrase + "\n") if passphrase else "", check=True)
        # A running agent believes "unregistered" for up to 0.5 s (as it believes "not found").
        deadline = time.monotonic() + 2
        while True:
            try:
                signed = client.sign(label, request_.method, request_.path, request_.query, timestamp_ms=NOW_MS)
                break
            except SigningError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    assert api_key in repr(signed)
    # The text the exchange's scheme signs, computed here independently of the agent process.
    options = exchange_for(exchange).resolve_options({})
    recorder = RecordingCredential(api_key, key_type, passphrase, options)
    exchange_for(exchange).scheme.sign(request_, recorder, Environment(NOW_MS, lambda n: bytes(n)))
    signature = base64.b64decode(unquote(SIGNATURE_OF[exchange](signed)))
    verify(public, key_type, signature, recorder.messages[0])
    assert run_cli(env, "keys", "public", "--label", label, check=True).stdout == generated.stdout


def _jwt_parts(signed_headers: dict[str, str]) -> tuple[dict, dict, bytes, bytes]:
    token = signed_headers["Authorization"].removeprefix("Bearer ")
    head, payload, signature = token.split(".")

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    return json.loads(unb64(head)), json.loads(unb64(payload)), f"{head}.{payload}".encode(), unb64(signature)


@pytest.mark.e2e
@pytest.mark.parametrize("key_type", ["ec-p256", "ed25519"])
def test_coinbase_cdp_key_jwt_verifies(env: Env, agent, label: str, key_type: str):
    if key_type == "ec-p256":
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode()
        register_secret(pem.split("\n")[1])
        secret = pem.replace("\n", "\\n")  # as it appears in Coinbase's downloaded JSON key file
        stdin = secret + "\n"
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
        public_raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        stdin = register_secret(base64.b64encode(raw + public_raw).decode()) + "\n"
    api_key = f"organizations/{secrets.token_hex(4)}/apiKeys/{secrets.token_hex(4)}"
    run_cli(env, "keys", "import", "--label", label, "--exchange", "coinbase", "--api-key", api_key,
            "--type", key_type, stdin=stdin, check=True)
    with SignerClient(agent.target) as client:
        bot = capture(agent_exchange("coinbase", label, client=client, config={"enableRateLimit": False}), NOW_MS)
        request = sent(bot, ["v3", "private"], "brokerage/accounts", "GET", {"limit": "10"})
    header, claims, signing_input, signature = _jwt_parts(request["headers"])
    assert header["alg"] == ("ES256" if key_type == "ec-p256" else "EdDSA") and header["kid"] == api_key
    assert claims["sub"] == api_key and claims["nbf"] == NOW_MS // 1000
    assert "GET api.coinbase.com/api/v3/brokerage/accounts" in json.dumps(claims)
    verify(private.public_key(), key_type, signature, signing_input)


@pytest.mark.e2e
def test_binance_ed25519_pem_bot_equals_plain_ccxt(env: Env, agent, label: str):
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    register_secret(pem.split("\n")[1])
    api_key = f"ak-{secrets.token_hex(6)}"
    run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", api_key,
            "--type", "ed25519", stdin=pem, check=True)
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
              "price": "50000", "newClientOrderId": "ed-1"}
    config = {"enableRateLimit": False}
    with SignerClient(agent.target) as client:
        bot = capture(agent_exchange("binance", label, client=client, config=config), NOW_MS)
        through_agent = sent(bot, ["private"], "order", "POST", params)
    plain = capture(ccxt.binance({**config, "apiKey": api_key, "secret": pem}), NOW_MS)
    assert through_agent == sent(plain, ["private"], "order", "POST", params)


@pytest.mark.e2e
def test_pem_with_leading_lines_and_default_type(env: Env, label: str):
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    register_secret(pem.split("\n")[1])
    # openssl pkcs12 output starts with "Bag Attributes"; Coinbase keys default to ec-p256.
    stdin = "Bag Attributes\n    localKeyID: 01\n" + pem
    done = run_cli(env, "keys", "import", "--label", label, "--exchange", "coinbase", "--api-key", "k", stdin=stdin)
    assert done.returncode == 0 and "ec-p256" in done.stdout, done.stderr
    refused = run_cli(env, "keys", "import", "--label", label + "x", "--exchange", "coinbase", "--api-key", "k",
                      stdin=new_secret(32) + "\n")
    assert refused.returncode == 1 and "PEM block" in refused.stderr
