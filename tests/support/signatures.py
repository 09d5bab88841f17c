"""Checking a signature the token made, with cryptography's own verification (not our code)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def verify(public, key_type: str, signature: bytes, message: bytes) -> None:
    """Raises InvalidSignature unless SIGNATURE is right (cryptography's own verification)."""
    if key_type == "ed25519":
        public.verify(signature, message)
    elif key_type == "rsa":
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert len(signature) == 64  # raw r||s, as JWT ES256 wants
        sig = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        public.verify(sig, message, ec.ECDSA(hashes.SHA256()))
