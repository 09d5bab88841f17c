"""Transport-level authentication: mTLS for TCP, plain TCP only on loopback by explicit opt-in,
and the Unix socket opened to one group."""

from __future__ import annotations

import datetime as dt
import grp
import ipaddress
import os
import socket
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signing_agent_client.client import ClientTls, NotAuthenticatedError, SignerClient
from support.deploy import Env, PERMISSIVE_POLICY, run_cli, start_agent
from support.leaks import new_secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = directory / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def issue(directory: Path, ca: tuple, cn: str, *, server: bool) -> tuple[Path, Path]:
    ca_cert, ca_key, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                        critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = directory / f"{cn}.pem", directory / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def import_binance(env: Env, label: str, config: Path) -> None:
    run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", "id", "--type", "hmac",
            stdin=new_secret(64) + "\n", config=config, check=True)


def test_mtls_identifies_bots_by_certificate(env: Env, label: str, tmp_path: Path):
    tls = tmp_path / "tls"
    tls.mkdir()
    agent_ca = make_ca(tls, "agent-ca")
    bots_ca = make_ca(tls, "bots-ca")
    rogue_ca = make_ca(tls, "rogue-ca")
    server_cert, server_key = issue(tls, agent_ca, "agent", server=True)
    hedger_cert, hedger_key = issue(tls, bots_ca, "hedger", server=False)
    stranger_cert, stranger_key = issue(tls, bots_ca, "stranger", server=False)  # right CA, not registered
    rogue_cert, rogue_key = issue(tls, rogue_ca, "hedger-rogue", server=False)
    port = free_port()
    config = env.write_config("mtls", extra=(
        f'tcp = "127.0.0.1:{port}"\n[server.tls]\ncert_file = "{server_cert}"\nkey_file = "{server_key}"\n'
        f'client_ca_file = "{bots_ca[2]}"\n[policy]\nfile = "mtls-policy.toml"\n'))
    (env.root / "mtls-policy.toml").write_text(PERMISSIVE_POLICY + '\n[bots.hedger]\nkeys = ["*"]\n'
                                               '[bots.stranger]\nkeys = ["*"]\n')
    added = run_cli(env, "bots", "add", "hedger", "--cert", str(hedger_cert), config=config)
    assert added.returncode == 0, added.stderr
    import_binance(env, label, config)
    agent = start_agent(env, config)
    try:
        with SignerClient(f"127.0.0.1:{port}", tls=ClientTls(agent_ca[2], hedger_cert, hedger_key),
                          token_file=False) as client:
            assert "signature=" in client.sign(label, "GET", "/api/v3/account").path
        with SignerClient(f"127.0.0.1:{port}", tls=ClientTls(agent_ca[2], stranger_cert, stranger_key),
                          token_file=False) as client:
            with pytest.raises(NotAuthenticatedError, match="certificate"):
                client.sign(label, "GET", "/api/v3/account")
        with SignerClient(f"127.0.0.1:{port}", tls=ClientTls(agent_ca[2], rogue_cert, rogue_key),
                          timeout=3, token_file=False) as client:
            with pytest.raises(Exception) as caught:  # the handshake fails: no certificate from the bots' CA
                client.sign(label, "GET", "/api/v3/account")
            assert getattr(caught.value, "code", "") == "UNAVAILABLE"
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")  # plain text to a TLS port
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=1)
        channel.close()
    finally:
        assert agent.stop() == 0
        run_cli(env, "bots", "revoke", "hedger", config=config)


def test_plain_tcp_needs_loopback_and_an_explicit_opt_in(env: Env):
    config = env.write_config("plaintcp")
    port = free_port()
    no_opt_in = run_cli(env, "serve", "--tcp", f"127.0.0.1:{port}", config=config)
    assert no_opt_in.returncode == 2 and "tcp_plaintext" in no_opt_in.stderr
    wide = run_cli(env, "serve", "--tcp", f"0.0.0.0:{port}", "--tcp-plaintext", config=config)
    assert wide.returncode == 2 and "loopback" in wide.stderr


def test_the_socket_can_be_opened_to_one_group(env: Env):
    group = grp.getgrgid(os.getgid()).gr_name
    config = env.write_config("group", extra=f'socket_group = "{group}"\n')
    agent = start_agent(env, config)
    try:
        st = os.stat(agent.socket)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()
        assert stat.S_IMODE(os.stat(agent.socket.parent).st_mode) == 0o750
    finally:
        assert agent.stop() == 0
    missing = env.write_config("nogroup", extra='socket_group = "no-such-group-here"\n')
    refused = run_cli(env, "serve", config=missing)
    assert refused.returncode == 2 and "does not exist" in refused.stderr


def test_a_client_without_a_token_gets_an_actionable_error(agent):
    with SignerClient(agent.target, token_file=False) as client:
        with pytest.raises(NotAuthenticatedError, match="bots add"):
            client.sign("any", "GET", "/api/v3/account")
