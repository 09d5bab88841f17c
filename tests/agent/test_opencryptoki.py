"""The agent on a second PKCS#11 implementation: opencryptoki's software token, chosen by config only.

Same custody code, same CLI, same agent process as on SoftHSM2; only [token] module and label
differ (tests/support/ock.py sets the token up). What opencryptoki 3.8 (Debian 12) lacks, the agent
must say plainly: it has no Ed25519 (CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA), no ECDSA, and no
CKM_SHA256_RSA_PKCS (RSA signs through CKM_RSA_PKCS over the DigestInfo, which gives the same
signature), and it refuses the PKCS#11 v2.40 attributes CKA_COPYABLE and CKA_DESTROYABLE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pkcs11 import Attribute
from pkcs11 import exceptions as p11err

from agent import tokeninit
from signing_agent_client.client import KeyNotFoundError, SignerClient
from agent.config import load_config
from agent.custody import KeyNotFound, Keyring, MechanismUnsupported
from agent.exchanges import scheme_for
from agent.schemes import UnsignedRequest
from support.deploy import run_cli, start_agent
from support.leaks import new_secret, register_secret
from support.ock import OCK_MODULE, TEST_LABEL, OckDeployment, init_token, ock_deployment
from support.reference import asymmetric_credential, fixed_environment, hmac_credential

NOW_MS = int(time.time() * 1000) - 5_000  # the agent refuses timestamps in the future
BINANCE = scheme_for("binance")
ORDER = (("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
         ("quantity", "0.001"), ("price", "50000"))


@pytest.fixture(scope="module")
def ock(tmp_path_factory: pytest.TempPathFactory):
    with ock_deployment(tmp_path_factory) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def ock_keyring(ock: OckDeployment):
    import pkcs11

    with Keyring.open(load_config(ock.env.config).token) as kr:
        yield kr
    # The token's files are reset after the module: no session of this process may outlive it.
    pkcs11.lib(OCK_MODULE).finalize()


@pytest.fixture(scope="module")
def ock_agent(ock: OckDeployment):
    agent = start_agent(ock.env, ock.env.config)
    yield agent
    assert agent.stop() == 0, agent.log.read_text()


# -- initialisation (no token needed) -----------------------------------------------


def test_init_refuses_clearly_without_the_slot_daemon(tmp_path, monkeypatch):
    monkeypatch.setattr(tokeninit, "OCK_SLOTD_SOCKETS", (tmp_path / "no.socket",))
    with pytest.raises(tokeninit.TokenInitError, match=r"slot daemon is not running: start it as root \(`pkcsslotd`"):
        tokeninit.init_opencryptoki(tmp_path / "t", "x")
    assert not (tmp_path / "t").exists()  # nothing written before the check


def test_init_never_takes_a_token_someone_else_set_up():
    theirs = tokeninit.TokenSlot(slot=3, label="production", flags=tokeninit.CKF_TOKEN_INITIALIZED,
                                 max_pin_len=8, min_pin_len=4)
    with pytest.raises(tokeninit.TokenInitError, match=r"no free opencryptoki token \(slot 3: 'production'\)"):
        tokeninit._choose_slot([theirs], "mine", None)
    with pytest.raises(tokeninit.TokenInitError, match="slot 3 holds token 'production' already"):
        tokeninit._choose_slot([theirs], "mine", 3)
    with pytest.raises(tokeninit.TokenInitError, match="no token in slot 4"):
        tokeninit._choose_slot([theirs], "mine", 4)


@pytest.mark.parametrize("max_len,expected", [(8, 8), (255, 32), (0, 32)])
def test_random_pins_are_as_long_as_the_token_allows(max_len: int, expected: int):
    token = tokeninit.TokenSlot(slot=0, label="", flags=0, max_pin_len=max_len, min_pin_len=4)
    pins = {tokeninit.random_pin(token) for _ in range(20)}
    assert len(pins) == 20 and all(len(p) == expected and p.isalnum() and p.isascii() for p in pins)


# -- the token ----------------------------------------------------------------------


_SO_LOGIN = """
import sys, pkcs11
from pkcs11 import exceptions as e
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
for pin in ("87654321", open(sys.argv[3]).read().strip()):
    try:
        token.open(rw=True, so_pin=pin).close()
        print("ok")
    except e.PinIncorrect:
        print("incorrect")
"""


def test_init_wrote_private_random_pins_and_a_config_fragment(ock: OckDeployment):
    user_pin, so_pin = ock.pin_dir / "user.pin", ock.pin_dir / "so.pin"
    for path in (user_pin, so_pin):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_text().strip()) == 8  # the software token's longest PIN
    assert user_pin.read_text() != so_pin.read_text()
    assert f"initialised token {TEST_LABEL!r} in opencryptoki slot {ock.slot}" in ock.init_output
    fragment = load_config(ock.pin_dir / "token.toml").token
    assert (str(fragment.module), fragment.label, fragment.pin_file) == (OCK_MODULE, TEST_LABEL, user_pin)
    # The SO PIN is ours now, not opencryptoki's factory PIN (run apart: a process logs in once).
    proc = subprocess.run([sys.executable, "-c", _SO_LOGIN, OCK_MODULE, TEST_LABEL, str(so_pin)],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["incorrect", "ok"], proc.stderr


def test_init_again_keeps_the_token_and_its_pins(ock: OckDeployment):
    before = (ock.pin_dir / "user.pin").read_text()
    proc = init_token(ock.pin_dir, ock.slot)
    assert proc.returncode == 0, proc.stderr
    assert f"token {TEST_LABEL!r} exists already in slot {ock.slot}; kept" in proc.stdout
    assert (ock.pin_dir / "user.pin").read_text() == before


@pytest.mark.parametrize("length", [8, 32, 64, 65, 100])
def test_hmac_in_the_token_equals_software_hmac(ock_keyring: Keyring, label: str, length: int):
    secret = new_secret(length).encode()
    info = ock_keyring.import_hmac_key(label=label, exchange="binance", api_key="AK-ock", key=secret)
    assert info.key_type == "hmac"
    entry = ock_keyring.lookup(label)
    message = b"symbol=BTCUSDT&side=BUY&timestamp=1700000000000"
    for hash_name in ("sha256", "sha384", "sha512"):
        expected = hmac.new(secret, message, getattr(hashlib, hash_name)).digest()
        assert ock_keyring.hmac(entry, message, hash_name) == expected, hash_name


def test_hmac_key_never_leaves_the_token(ock_keyring: Keyring, label: str):
    ock_keyring.import_hmac_key(label=label, exchange="binance", api_key="AK-ock", key=new_secret(64).encode())
    handle = ock_keyring.lookup(label).handle
    with pytest.raises(p11err.AttributeSensitive):
        handle[Attribute.VALUE]
    assert (handle[Attribute.SENSITIVE], handle[Attribute.EXTRACTABLE], handle[Attribute.NEVER_EXTRACTABLE],
            handle[Attribute.PRIVATE], handle[Attribute.MODIFIABLE]) == (True, False, True, True, False)


def test_kucoin_passphrase_is_signed_in_the_token(ock_keyring: Keyring, label: str):
    secret, passphrase = new_secret(36).encode(), new_secret(12)
    ock_keyring.import_hmac_key(label=label, exchange="kucoin", api_key="AK-kc", key=secret,
                                passphrase=passphrase, sign_passphrase=True)
    entry = ock_keyring.lookup(label)
    expected = base64.b64encode(hmac.new(secret, passphrase.encode(), hashlib.sha256).digest()).decode()
    assert entry.passphrase == expected and entry.info.has_passphrase


def test_list_and_revoke(ock_keyring: Keyring, label: str):
    ock_keyring.import_hmac_key(label=label, exchange="okx", api_key="AK-list", key=new_secret(32).encode(),
                                passphrase=new_secret(10))
    (listed,) = [k for k in ock_keyring.list_keys() if k.label == label]
    assert (listed.exchange, listed.api_key, listed.has_passphrase, len(listed.fingerprint)) == ("okx", "AK-list",
                                                                                                True, 32)
    entry = ock_keyring.lookup(label)
    ock_keyring.revoke(label)
    with pytest.raises(KeyNotFound):
        ock_keyring.hmac(entry, b"m", "sha256")  # the cached handle is dead at once
    with pytest.raises(KeyNotFound):
        ock_keyring.lookup(label)
    assert label not in {k.label for k in ock_keyring.list_keys()}


def test_rsa_generated_in_the_token_signs_pkcs1_sha256(ock_keyring: Keyring, label: str):
    info, public = ock_keyring.generate_key(label=label, exchange="binance", key_type="rsa")
    assert info.key_type == "rsa" and public.key_size == 2048
    ock_keyring.register(label, api_key="AK-rsa")
    entry = ock_keyring.lookup(label)
    assert (entry.handle[Attribute.LOCAL], entry.handle[Attribute.NEVER_EXTRACTABLE],
            entry.handle[Attribute.ALWAYS_SENSITIVE], entry.handle[Attribute.SIGN_RECOVER]) == (True, True, True, False)
    message = b"GET /api/v3/account?timestamp=1700000000000"
    public.verify(ock_keyring.sign(entry, message), message, padding.PKCS1v15(), hashes.SHA256())


def test_imported_rsa_signature_equals_software(ock_keyring: Keyring, label: str):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ock_keyring.import_private_key(label=label, exchange="binance", api_key="AK-rsa-i", private_key=key)
    message = b"symbol=BTCUSDT&timestamp=1700000000000"
    # PKCS#1 v1.5 is deterministic: the token's signature must be these very bytes.
    assert ock_keyring.sign(ock_keyring.lookup(label), message) == key.sign(message, padding.PKCS1v15(),
                                                                             hashes.SHA256())


REFUSED = {
    "generate-ed25519": ("CKM_EC_EDWARDS_KEY_PAIR_GEN", lambda kr, label: kr.generate_key(
        label=label, exchange="binance", key_type="ed25519")),
    "import-ed25519": ("CKM_EDDSA", lambda kr, label: kr.import_private_key(
        label=label, exchange="binance", api_key="AK", private_key=ed25519.Ed25519PrivateKey.generate())),
    "import-ec-p256": ("CKM_ECDSA", lambda kr, label: kr.import_private_key(
        label=label, exchange="coinbase", api_key="AK", private_key=ec.generate_private_key(ec.SECP256R1()))),
}


@pytest.mark.parametrize("case", REFUSED)
def test_missing_mechanisms_are_named_and_nothing_is_written(ock_keyring: Keyring, label: str, case: str):
    mechanism, attempt = REFUSED[case]
    with pytest.raises(MechanismUnsupported) as refused:
        attempt(ock_keyring, label)
    assert f"token {TEST_LABEL!r} does not support" in str(refused.value)
    assert f"({mechanism})" in str(refused.value)
    # Nothing was left under the label: it takes a key at once.
    ock_keyring.import_hmac_key(label=label, exchange="binance", api_key="AK", key=new_secret(32).encode())


def test_cli_says_what_the_token_lacks(ock: OckDeployment, label: str):
    proc = run_cli(ock.env, "keys", "generate", "--label", label, "--exchange", "binance", "--type", "ed25519")
    assert proc.returncode == 1
    assert f"token {TEST_LABEL!r} does not support Ed25519 key generation (CKM_EC_EDWARDS_KEY_PAIR_GEN): use an RSA " \
           "key where the exchange takes one" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the agent process -------------------------------------------------------------


@pytest.mark.e2e
def test_agent_signs_binance_hmac_like_software_and_revocation_is_immediate(ock: OckDeployment, ock_agent,
                                                                           label: str):
    secret, api_key = new_secret(64), "AK-ock-e2e"
    imported = run_cli(ock.env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", api_key,
                       stdin=secret + "\n")
    assert imported.returncode == 0, imported.stderr
    reference = BINANCE.sign(UnsignedRequest("POST", "/api/v3/order", body=ORDER),
                             hmac_credential("binance", api_key, secret), fixed_environment(NOW_MS))
    with SignerClient(ock_agent.target) as client:
        signed = client.sign(label, "POST", "/api/v3/order", body=list(ORDER), timestamp_ms=NOW_MS)
        assert (signed.path, signed.headers_dict(), signed.body) == (
            reference.path, reference.headers_dict(), reference.body)
        assert run_cli(ock.env, "keys", "revoke", "--label", label).returncode == 0
        with pytest.raises(KeyNotFoundError):
            client.sign(label, "POST", "/api/v3/order", body=list(ORDER), timestamp_ms=NOW_MS)


@pytest.mark.e2e
def test_agent_signs_binance_rsa_like_software(ock: OckDeployment, ock_agent, label: str):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    register_secret(pem)
    imported = run_cli(ock.env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", "AK-rsa",
                       "--type", "rsa", stdin=pem)
    assert imported.returncode == 0, imported.stderr
    request = UnsignedRequest("GET", "/api/v3/openOrders", query=(("symbol", "BTCUSDT"),))
    reference = BINANCE.sign(request, asymmetric_credential("AK-rsa", pem), fixed_environment(NOW_MS))
    with SignerClient(ock_agent.target) as client:
        signed = client.sign(label, request.method, request.path, query=list(request.query), timestamp_ms=NOW_MS)
    assert (signed.path, signed.headers_dict()) == (reference.path, reference.headers_dict())
