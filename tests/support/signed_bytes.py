"""Signed bytes read back as the checked request: the property, for one request.

A bot with a valid credential asks the agent to sign a request of its choosing, then sends the
exchange whatever HTTP request verifies with that signature (support/exchange_readers.py). For one
request, `assert_signed_bytes_read_as_checked` checks that the agent refuses it, or that the request
as sent reads as exactly the parameters the policy checked and every reshape that verifies reads the
same way (or is refused by the exchange). tests/adversarial/test_signed_bytes.py generates requests
for it; the conformance suite (tests/unit/test_conformance.py) runs it on every vector.
"""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.delivery import relabelled_problem
from agent.exchanges import EXCHANGES, scheme_for
from agent.policy import Refusal, check_names, check_shape
from agent.rules.view import view
from agent.schemes import RequestInvalid, UnsignedRequest, UnsupportedKey
from support.exchange_readers import READERS, Http, Reading, Refused
from support.reference import SoftwareCredential, fixed_environment, hmac_credential

NOW_MS = 1_700_000_000_000


def credential(exchange_id: str, key_type: str = "hmac") -> SoftwareCredential:
    if key_type == "ed25519":
        return SoftwareCredential(api_key="organizations/o/apiKeys/k", key_type="ed25519",
                                  private_key=ed25519.Ed25519PrivateKey.generate())
    secret = base64.b64encode(bytes(range(64))).decode() if exchange_id == "kraken" else "s3cr3t" * 8
    passphrase = "pass-phrase" if EXCHANGES[exchange_id].passphrase else None
    return hmac_credential(exchange_id, "api-key-id", secret, passphrase)


def checked_params(exchange_id: str, request: UnsignedRequest) -> list[tuple[str, object]] | None:
    """The parameters the policy reads (query, then form pairs or JSON members); None if the agent
    refuses the request before any key's policy: its parse, a path that is not canonical, or a name
    given twice (agent.guard.Guard.check runs these on every request)."""
    try:
        check_shape(request)
        read = view(EXCHANGES[exchange_id], request)
        check_names(read.params, len(request.query))
    except (RequestInvalid, Refusal):
        return None
    body = read.body
    members = list(body.items()) if isinstance(body, dict) else [("[]", body)] if isinstance(body, list) else []
    return list(request.query) + members


def assert_signed_bytes_read_as_checked(exchange_id: str, request: UnsignedRequest, key_type: str = "hmac") -> str:
    """'refused', 'send only' or 'signed'; fails when a reshape of the signed bytes reads as another request.

    'send only': a request whose signature the agent never hands to a bot (agent.delivery.RELABELLED: Sign
    refuses it by rule `delivery`), because its signed bytes do verify as another request; Send places
    it exactly as checked. tests/adversarial/test_signed_bytes.py proves each such relabelling real."""
    reader = READERS[exchange_id]
    try:
        signed = scheme_for(exchange_id).sign(request, credential(exchange_id, key_type), fixed_environment(NOW_MS))
    except (RequestInvalid, UnsupportedKey) as refusal:
        assert str(refusal), "a refusal names what to change"
        return "refused"
    if relabelled_problem(exchange_id, request.method, "key") is not None:
        return "send only"
    checked = checked_params(exchange_id, request)
    if checked is None:
        return "refused"
    sent = Http.of(signed)
    base = reader.read(sent)
    assert isinstance(base, Reading), f"the exchange would refuse what the agent signed: {base}"
    added = reader.auth_names | {"signature", "foo"}  # foo: Bitstamp's dummy field on an empty POST
    as_read = sorted((n, json.dumps(v, default=str)) for n, v in base.params if n not in added or
                     any(n == c for c, _ in checked))
    assert as_read == sorted((n, json.dumps(v, default=str)) for n, v in checked), (
        f"{exchange_id}: the request sent reads {base.params}, the policy checked {checked}")
    message = reader.verified(sent)
    assert message is not None
    for reshaped in reader.reshapes(sent):
        if reader.verified(reshaped) != message:
            continue  # not a reshape: the signature would not verify
        reading = reader.read(reshaped)
        if isinstance(reading, Refused):
            continue
        assert reading.key() == base.key(), (
            f"{exchange_id}: {request} signed; the bot sends {reshaped} and the exchange reads "
            f"{reading} instead of {base}"
        )
    return "signed"
