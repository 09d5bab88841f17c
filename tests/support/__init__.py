"""Shared helpers for the test layers (tests/unit, tests/token, tests/agent, tests/adversarial).

Test files import helpers from here, never from conftest.py or from another test file: a helper
has one home, and moving a test file between layers does not break another file's imports.
Fixtures stay fixtures (tests/conftest.py); the helpers they are built on live here.

    leaks.py             the leak guard's registry: new_secret(), register_secret()
    deploy.py            a test deployment (Env, make_env), the CLI (run_cli), the agent process (start_agent)
    token_objects.py     looking at a SoftHSM2 token's objects from a test
    signatures.py        checking a token's signature with cryptography's own verification
    agent_io.py          what a ccxt bot sends, a free loopback port, a metrics scrape (agent layer)
    ock.py               opencryptoki deployments (the second PKCS#11 implementation)
    reference.py         a software Credential (Python's hmac, cryptography) for byte-for-byte comparisons
    vectors.py           the one loader of tests/vectors/<exchange>.json
    profiles.py          per exchange: how a vector is checked (key format, ccxt's pinned clock, headers)
    exchange_readers.py  each exchange's side of a signed request (what it verifies, how it parses)
    signed_bytes.py      the signed-bytes-read-back property for one request
    ccxt_calls.py        ccxt with one market and placeholder credentials: the requests its calls build
    strategies.py        hypothesis strategies the property tests share
"""
