"""Shared helpers for the test layers (tests/unit, tests/token, tests/agent, tests/adversarial).

Test files import helpers from here, never from conftest.py or from another test file: a helper
has one home, and moving a test file between layers does not break another file's imports.
Fixtures stay fixtures (tests/conftest.py); the helpers they are built on live here.

    leaks.py             the leak guard's registry: new_secret(), register_secret()
    deploy.py            a test deployment (Env, make_env), the CLI (run_cli), the agent process (start_agent)
    token_objects.py     looking at a SoftHSM2 token's objects from a test
    reference.py         a software Credential (Python's hmac, cryptography) for byte-for-byte comparisons
    ock.py               opencryptoki deployments (the second PKCS#11 implementation)
    exchange_readers.py  each exchange's side of a signed request (what it verifies, how it parses)
    signed_bytes.py      the signed-bytes-read-back property, run by the adversarial and conformance suites
    ccxt_calls.py        ccxt with one market and placeholder credentials: the requests its calls build
    vectors.py           the one loader of tests/vectors/<exchange>.json
    profiles/            per-exchange adapters from a vector case to a request, a ccxt call and a credential
    grpc_capture.py      what a ccxt bot sends, and a free port / metrics scrape for agent-layer tests
"""
