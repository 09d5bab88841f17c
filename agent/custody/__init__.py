"""Token custody: exchange secrets as non-extractable PKCS#11 objects, MACs and signatures computed inside.

The only code that talks to the token. Everything it hands out is a MAC, a signature or a
description of a key (KeyInfo), never key material.

  errors     what custody raises (the service and the CLI map them to statuses and exit codes)
  objects    our objects on the token: metadata and account encodings, creation templates,
             fingerprints, public keys
  session    module loading, login, the one lock, reconnecting, module differences (TokenSession)
  keyring    Keyring: lookup and its handle cache, MACs and signatures, listing; TokenCredential,
             the Credential a scheme signs with
  tokencall  the signing call: C_SignInit + C_Sign through ctypes on python-pkcs11's handles
  provision  the writes: import, generation in the token, registration, revocation
  master     the master key of wrapped keys and its unwrap template (created with PyKCS11)
  wrapped    wrapped keys: wrap at import, unwrap on first use, the bounded cache of unwrapped objects
  store      the key store of wrapped keys: SQLite or PostgreSQL, rows and revocation events

Tools and tests use Keyring's public seam (`session()`, `locked()`, `forget_cached_handles()`,
`is_cached()`, `recording_searches()`, `lean_token_calls`, `python_pkcs11_signing()`), never its private names
(tests/token/test_seams.py).
Names (key labels, API key ids) are checked in agent.names, which the signing path uses
without loading this package's token code for it.
"""

from agent.custody.errors import (
    CustodyError,
    InvalidKeyMaterial,
    KeyExists,
    KeyNotFound,
    KeyRevoked,
    MechanismUnsupported,
    TokenLoginError,
    TokenUnavailable,
)
from agent.custody.keyring import (
    HMAC_MECHANISMS,
    MISSING_CACHE_SIZE,
    MISSING_TTL_SECONDS,
    HashName,
    KeyEntry,
    Keyring,
    NonceSource,
    TokenCredential,
)
from agent.custody.objects import (
    ACCOUNT_APP,
    FINGERPRINT_MESSAGE,
    HMAC_KEY_PAD_TO,
    METADATA_APP,
    METADATA_VERSION,
    PRIVATE_KEY_TYPES,
    RSA_BITS,
    KeyInfo,
    fingerprint_of,
    hmac_key_material,
    public_der,
    public_fingerprint,
    verify_signature,
)
from agent.custody.provision import (
    PASSPHRASE_MAX_LEN,
    SECRET_MAX_LEN,
    SECRET_MIN_LEN,
    validate_passphrase,
    validate_secret,
)
from agent.custody.session import TokenSettings, load_module

__all__ = [
    "ACCOUNT_APP",
    "FINGERPRINT_MESSAGE",
    "HMAC_KEY_PAD_TO",
    "HMAC_MECHANISMS",
    "METADATA_APP",
    "METADATA_VERSION",
    "MISSING_CACHE_SIZE",
    "MISSING_TTL_SECONDS",
    "PASSPHRASE_MAX_LEN",
    "PRIVATE_KEY_TYPES",
    "RSA_BITS",
    "SECRET_MAX_LEN",
    "SECRET_MIN_LEN",
    "CustodyError",
    "HashName",
    "InvalidKeyMaterial",
    "KeyEntry",
    "KeyExists",
    "KeyInfo",
    "KeyNotFound",
    "KeyRevoked",
    "Keyring",
    "MechanismUnsupported",
    "NonceSource",
    "TokenCredential",
    "TokenLoginError",
    "TokenSettings",
    "TokenUnavailable",
    "fingerprint_of",
    "hmac_key_material",
    "load_module",
    "public_der",
    "public_fingerprint",
    "validate_passphrase",
    "validate_secret",
    "verify_signature",
]
