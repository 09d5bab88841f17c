"""Operations of the wrapped-key store on real SoftHSM2 tokens: `store migrate`, `store init --postgres`, master keys.

Every test has a deployment (token, config, key store) of its own and drives it as an operator would, through
`signing-agent` processes; what the token then holds is read by short Python processes on that token (a PKCS#11
module loads once per process, so this process cannot open a second token).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from agent.cli import CRASH_AFTER_ROWS_ENV
from support.deploy import ROOT, Env, make_env, run_cli
from support.leaks import new_secret

STORE_TABLE = '[store]\nbackend = "sqlite"\nsqlite_file = "state/keys.db"\n'
MESSAGE = b"symbol=BTCUSDT&side=BUY&timestamp=1700000000000"

# Runs in a process of its own on the deployment's token: CONFIG is argv[1], secrets come on stdin.
TOKEN_SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from pkcs11 import Attribute
from agent.config import load_config
from agent.custody import Keyring
from agent.custody.objects import (account_template, encode_account, encode_metadata, hmac_key_material,
                                   hmac_key_template, new_info, fingerprint_of, FINGERPRINT_MESSAGE)
config = load_config(Path(sys.argv[1]))
with Keyring.open(config.token, store=config.store.open() if config.store else None) as keyring:
{body}
"""

# What another tool, or an import made to be moved later, leaves: one of our HMAC keys, sensitive but extractable.
MAKE_EXTRACTABLE = """
    import hmac, hashlib
    for line in sys.stdin.read().split():
        label, secret = line.split(":")
        key = secret.encode()
        fp = fingerprint_of(hmac.new(key, FINGERPRINT_MESSAGE, hashlib.sha256).digest())
        info = new_info(label, "binance", "AKID-" + label, "hmac", fp, {{}}, None)
        template = hmac_key_template(label, encode_metadata(info), hmac_key_material(key))
        template[Attribute.EXTRACTABLE] = True
        with keyring.session() as session:
            session.create_object(template)
            session.create_object(account_template(label, encode_account("AKID-" + label, None)))
"""

# For each label: where a fresh process finds it, whether the start's listing indexed its token object, its MAC.
INSPECT = """
    listed = keyring.list_keys(wrapped=False)
    out = {{}}
    for label in sys.argv[2:]:
        on_token = [k.label for k in listed].count(label)
        indexed = keyring.is_cached(label)
        try:
            entry = keyring.lookup(label)
        except Exception as exc:
            out[label] = {{"error": type(exc).__name__, "on_token": on_token}}
            continue
        mac = keyring.hmac(entry, {message!r}, "sha256").hex()
        out[label] = {{"storage": entry.info.storage, "on_token": on_token, "indexed": indexed, "mac": mac}}
    print(json.dumps(out))
"""


def token_python(env: Env, config, body: str, *args: str, stdin: str = "") -> str:
    script = TOKEN_SCRIPT.format(root=str(ROOT), body=body.format(message=MESSAGE))
    proc = subprocess.run([sys.executable, "-c", script, str(config), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=env.root)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def inspect(env: Env, config, *labels: str) -> dict:
    return json.loads(token_python(env, config, INSPECT, *labels))


def expected_mac(secret: str) -> str:
    return hmac.new(secret.encode(), MESSAGE, hashlib.sha256).hexdigest()


def outcomes(stdout: str) -> dict[str, str]:
    """label -> outcome, from `store migrate`'s lines (OUTCOME  LABEL  REASON)."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("migrated", "finished", "would", "stays", "re-import", "conflict"):
            if parts[0] == "would":
                found[parts[2]] = f"would {parts[1]}"
            else:
                found[parts[1]] = parts[0]
    return found


@pytest.fixture
def deployment(tmp_path_factory: pytest.TempPathFactory):
    """A token of its own with a master key, and a config naming a SQLite key store."""
    env = make_env(tmp_path_factory, "ops")
    config = env.write_config("ops", extra=STORE_TABLE)
    run_cli(env, "store", "init", config=config, check=True)
    return env, config


def rows(env: Env) -> dict[str, int]:
    with sqlite3.connect(env.root / "state" / "keys.db") as db:
        return dict(db.execute("SELECT label, master FROM wrapped_keys"))


def test_migrate_dry_run_lists_what_it_would_do_and_changes_nothing(deployment):
    env, config = deployment
    movable = new_secret()
    token_python(env, config, MAKE_EXTRACTABLE, stdin=f"movable:{movable}\n")
    run_cli(env, "keys", "import", "--label", "fixed", "--exchange", "binance", "--api-key", "AKID-fixed",
            stdin=new_secret() + "\n", config=config, check=True)
    run_cli(env, "keys", "generate", "--label", "ed", "--exchange", "binance", "--type", "ed25519",
            config=config, check=True)
    before = inspect(env, config, "movable", "fixed")

    dry = run_cli(env, "store", "migrate", "--dry-run", config=config)
    assert dry.returncode == 0, dry.stderr
    assert outcomes(dry.stdout) == {"movable": "would migrate", "fixed": "re-import", "ed": "stays"}
    assert "import the exchange's secret again with --wrapped" in dry.stdout
    assert "asymmetric private keys stay token objects" in dry.stdout
    assert "dry run, nothing changed" in dry.stdout
    assert rows(env) == {}
    assert inspect(env, config, "movable", "fixed") == before


def test_migrate_wraps_extractable_keys_in_the_token_and_leaves_the_others(deployment):
    env, config = deployment
    first, second, fixed = new_secret(), new_secret(24), new_secret()
    token_python(env, config, MAKE_EXTRACTABLE, stdin=f"k1:{first}\nk2:{second}\n")
    run_cli(env, "keys", "import", "--label", "fixed", "--exchange", "binance", "--api-key", "AKID-fixed",
            stdin=fixed + "\n", config=config, check=True)

    done = run_cli(env, "store", "migrate", config=config)
    # One key must be re-imported by a person: the command says so and fails.
    assert done.returncode == 1, done.stderr
    assert outcomes(done.stdout) == {"k1": "migrated", "k2": "migrated", "fixed": "re-import"}
    assert "1 key(s) were left as they are" in done.stderr
    assert rows(env) == {"k1": 1, "k2": 1}
    got = inspect(env, config, "k1", "k2", "fixed")
    assert got["k1"] == {"storage": "wrapped", "on_token": 0, "indexed": False, "mac": expected_mac(first)}
    assert got["k2"]["storage"] == "wrapped" and got["k2"]["mac"] == expected_mac(second)
    assert got["fixed"]["storage"] == "token" and got["fixed"]["mac"] == expected_mac(fixed)
    listing = json.loads(run_cli(env, "keys", "list", "--json", config=config, check=True).stdout)
    assert {k["label"]: k["storage"] for k in listing} == {"k1": "wrapped", "k2": "wrapped", "fixed": "token"}
    assert next(k for k in listing if k["label"] == "k1")["api_key"] == "AKID-k1"
    audit = (env.root / "state" / "audit.jsonl").read_text()
    assert audit.count('"store.migrate"') == 2

    again = run_cli(env, "store", "migrate", config=config)
    assert outcomes(again.stdout) == {"fixed": "re-import"}  # nothing else left to do


def test_a_kill_after_a_row_leaves_the_key_usable_from_the_store_and_the_rerun_finishes(deployment):
    env, config = deployment
    first, second = new_secret(), new_secret()
    token_python(env, config, MAKE_EXTRACTABLE, stdin=f"a1:{first}\na2:{second}\n")

    cut = subprocess.run([sys.executable, "-m", "agent", "--config", str(config), "store", "migrate"],
                         capture_output=True, text=True, timeout=60, cwd=env.root,
                         env={**os.environ, CRASH_AFTER_ROWS_ENV: "1"})
    assert cut.returncode == 137, cut.stderr
    # a1's row is written and its token object not yet destroyed; a2 is untouched.
    assert rows(env) == {"a1": 1}
    mid = inspect(env, config, "a1", "a2")
    # Held twice, a1 resolves to the row, also after the listing that fills the index of token handles.
    assert mid["a1"] == {"storage": "wrapped", "on_token": 1, "indexed": False, "mac": expected_mac(first)}
    assert mid["a2"]["storage"] == "token" and mid["a2"]["mac"] == expected_mac(second)

    rerun = run_cli(env, "store", "migrate", config=config)
    assert rerun.returncode == 0, rerun.stderr
    assert outcomes(rerun.stdout) == {"a1": "finished", "a2": "migrated"}
    after = inspect(env, config, "a1", "a2")
    assert after["a1"] == {"storage": "wrapped", "on_token": 0, "indexed": False, "mac": expected_mac(first)}
    assert after["a2"] == {"storage": "wrapped", "on_token": 0, "indexed": False, "mac": expected_mac(second)}


def test_a_label_held_as_two_different_keys_is_reported_and_both_are_kept(deployment):
    env, config = deployment
    stored, on_token = new_secret(), new_secret()
    run_cli(env, "keys", "import", "--wrapped", "--label", "twice", "--exchange", "binance", "--api-key", "AKID-x",
            stdin=stored + "\n", config=config, check=True)
    token_python(env, config, MAKE_EXTRACTABLE, stdin=f"twice:{on_token}\n")

    done = run_cli(env, "store", "migrate", config=config)
    assert done.returncode == 1
    assert outcomes(done.stdout) == {"twice": "conflict"}
    assert "different keys" in done.stdout and "revoke the wrong one" in done.stdout
    got = inspect(env, config, "twice")["twice"]
    assert got["on_token"] == 1 and got["storage"] == "wrapped" and got["mac"] == expected_mac(stored)


def test_migrate_without_a_store_says_what_to_add(tmp_path_factory: pytest.TempPathFactory):
    env = make_env(tmp_path_factory, "nostore")
    done = run_cli(env, "store", "migrate")
    assert done.returncode == 2
    assert "has no [store] table" in done.stderr and "Traceback" not in done.stderr


def test_store_init_names_a_sqlite_file_and_says_what_to_put_in_the_config(deployment):
    env, config = deployment
    other = env.root / "other" / "keys.db"
    init = run_cli(env, "store", "init", "--sqlite", str(other), config=config)
    assert init.returncode == 0, init.stderr
    assert init.stdout.endswith(f'[store]\nbackend = "sqlite"\nsqlite_file = "{other}"\n')
    with sqlite3.connect(other) as db:
        assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} >= {
            "wrapped_keys", "key_events"}
    assert other.stat().st_mode & 0o777 == 0o600
    blocked = env.root / "blocked"
    blocked.write_text("a file, not a directory")
    refused = run_cli(env, "store", "init", "--sqlite", str(blocked / "keys.db"), config=config)
    assert refused.returncode == 2 and "cannot create the key store" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


# -- master key rotation ----------------------------------------------------------------------------------------

MASTERS = """
    from agent.custody.master import MASTER_LABEL, MASTER_ID_PREFIX
    with keyring.session() as session:
        ids = [bytes(o[Attribute.ID]) for o in session.get_objects({{Attribute.LABEL: MASTER_LABEL}})]
    print(json.dumps(sorted(int(i[len(MASTER_ID_PREFIX):]) for i in ids)))
"""


def masters(env: Env, config) -> list[int]:
    return json.loads(token_python(env, config, MASTERS))


def signs_as(client, label: str, secret: str) -> bool:
    """Does the agent sign a Binance request for LABEL with SECRET's HMAC?"""
    got = client.sign(label, "GET", "/api/v3/openOrders", query={"symbol": "BTCUSDT"})
    signed, signature = got.path.split("?", 1)[1].rsplit("&signature=", 1)
    return hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest() == signature


def import_wrapped(env: Env, config, label: str, secret: str) -> None:
    run_cli(env, "keys", "import", "--wrapped", "--label", label, "--exchange", "binance", "--api-key",
            f"AKID-{label}", stdin=secret + "\n", config=config, check=True)


def test_rotation_keeps_every_key_signing_and_retires_only_generations_no_key_uses(deployment):
    from signing_agent_client.client import SignerClient

    from agent.custody.master import NO_IN_TOKEN_REWRAP
    from support.deploy import start_agent

    env, config = deployment
    old = new_secret()
    import_wrapped(env, config, "old", old)
    agent = start_agent(env, config)
    try:
        with SignerClient(agent.target) as client:
            assert signs_as(client, "old", old)

            rotated = run_cli(env, "store", "rotate-master", config=config)
            assert rotated.returncode == 0, rotated.stderr
            assert "created master key generation 2" in rotated.stdout
            assert "generation 1 still wraps 1 key(s): old" in rotated.stdout
            assert NO_IN_TOKEN_REWRAP in rotated.stdout and "revoke it and import" in rotated.stdout
            # Run again (as after a kill that followed the creation): no third generation.
            again = run_cli(env, "store", "rotate-master", config=config)
            assert again.returncode == 0 and "generation 2 wraps no key yet" in again.stdout, again.stderr
            assert masters(env, config) == [1, 2]

            new = new_secret()
            import_wrapped(env, config, "new", new)
            assert rows(env) == {"old": 1, "new": 2}
            # The running agent unwraps each row under the generation it names, the new one included.
            assert signs_as(client, "new", new) and signs_as(client, "old", old)

            kept = run_cli(env, "store", "rotate-master", "--retire-old", "--yes", config=config)
            assert kept.returncode == 1 and "generation(s) 1 still wrap keys and are kept" in kept.stderr
            assert masters(env, config) == [1, 2] and signs_as(client, "old", old)

            run_cli(env, "keys", "revoke", "--label", "old", "--yes", config=config, check=True)
            unconfirmed = run_cli(env, "store", "rotate-master", "--retire-old", config=config)
            assert unconfirmed.returncode == 2 and "confirm with --yes" in unconfirmed.stderr
            assert masters(env, config) == [1, 2]
            retired = run_cli(env, "store", "rotate-master", "--retire-old", "--yes", config=config)
            assert retired.returncode == 0 and "destroyed master key generation 1" in retired.stdout, retired.stderr
            assert masters(env, config) == [2]
            assert signs_as(client, "new", new)
    finally:
        assert agent.stop() == 0, agent.log.read_text()
    audit = (env.root / "state" / "audit.jsonl").read_text()
    assert audit.count('"store.rotate-master"') == 1 and audit.count('"store.retire-master"') == 1


# What the token allows a PIN holder (and the SO) around a blob: each step's CKR_ code, or OK. PyKCS11, in a process
# of its own, as master.py creates master keys (python-pkcs11 cannot set CKA_UNWRAP_TEMPLATE).
MEASURE = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import PyKCS11 as P
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from agent.config import load_config
from agent.custody.master import UNWRAPPED_FORCED, _masters
config = load_config(Path(sys.argv[1]))
os.environ.update(config.token.env)
lib = P.PyKCS11Lib(); lib.load(str(config.token.module))
slot = [s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == config.token.label][0]
out = {{}}
def step(name, fn):
    try:
        fn(); out[name] = "OK"
    except P.PyKCS11Error as exc:
        out[name] = P.CKR[exc.value]
wrap_pad = P.Mechanism(P.CKM_AES_KEY_WRAP_PAD, None)
def aes(*extra):
    return [(P.CKA_CLASS, P.CKO_SECRET_KEY), (P.CKA_KEY_TYPE, P.CKK_AES), (P.CKA_TOKEN, False),
            (P.CKA_WRAP, True), (P.CKA_UNWRAP, True), *extra]
secret = [(P.CKA_CLASS, P.CKO_SECRET_KEY), (P.CKA_KEY_TYPE, P.CKK_GENERIC_SECRET), (P.CKA_TOKEN, False),
          (P.CKA_SIGN, True)]
value = os.urandom(64)
sensitive_but_extractable = secret + [(P.CKA_SENSITIVE, True), (P.CKA_EXTRACTABLE, True), (P.CKA_VALUE, value)]
s = lib.openSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION)
s.login(config.token.read_pin())
master = _masters(P, s)[1]
blob = bytes(s.wrapKey(master, s.createObject(sensitive_but_extractable), wrap_pad))
forced = [(getattr(P, name), v) for name, v in UNWRAPPED_FORCED.items()]  # as the agent asks
unwrapped = s.unwrapKey(master, blob, secret + forced, wrap_pad)
mine = bytes(range(32))
own_key = s.createObject(aes((P.CKA_VALUE, mine), (P.CKA_SENSITIVE, False)))
step("unwrap as extractable", lambda: s.unwrapKey(
    master, blob, secret + [(a, True if a == P.CKA_EXTRACTABLE else v) for a, v in forced], wrap_pad))
step("make the unwrapped key extractable", lambda: s.setAttributeValue(unwrapped, [(P.CKA_EXTRACTABLE, True)]))
step("wrap the unwrapped key", lambda: s.wrapKey(own_key, unwrapped, wrap_pad))
step("user marks a key trusted", lambda: s.generateKey(aes((P.CKA_VALUE_LEN, 32), (P.CKA_TRUSTED, True)),
                                                        P.Mechanism(P.CKM_AES_KEY_GEN, None)))
# An extractable key (sensitive or not) goes out under a key of the PIN holder's making, and is read.
extractable = s.createObject(sensitive_but_extractable)
out["extractable key read by a PIN holder"] = aes_key_unwrap_with_padding(
    mine, bytes(s.wrapKey(own_key, extractable, wrap_pad))) == value
s.logout(); s.closeSession()
so = lib.openSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION)
so.login(Path("softhsm/so.pin").read_text().strip(), user_type=P.CKU_SO)
trusted = aes((P.CKA_VALUE_LEN, 32), (P.CKA_TRUSTED, True), (P.CKA_SENSITIVE, True), (P.CKA_EXTRACTABLE, False))
step("SO makes a private trusted key", lambda: so.generateKey(trusted + [(P.CKA_PRIVATE, True)],
                                                              P.Mechanism(P.CKM_AES_KEY_GEN, None)))
step("SO makes a public trusted key", lambda: so.generateKey(trusted + [(P.CKA_PRIVATE, False)],
                                                             P.Mechanism(P.CKM_AES_KEY_GEN, None)))
so.logout(); so.closeSession()
print(json.dumps(out))
"""


def test_the_token_offers_no_way_to_rewrap_a_blob_that_keeps_its_secret_unreadable(deployment):
    """The measurements behind NO_IN_TOKEN_REWRAP and behind `store migrate` refusing non-extractable keys."""
    env, config = deployment
    proc = subprocess.run([sys.executable, "-c", MEASURE.format(root=str(ROOT)), str(config)], capture_output=True,
                          text=True, timeout=60, cwd=env.root)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "unwrap as extractable": "CKR_TEMPLATE_INCONSISTENT",  # the master key's unwrap template
        "make the unwrapped key extractable": "CKR_ATTRIBUTE_READ_ONLY",
        "wrap the unwrapped key": "CKR_KEY_UNEXTRACTABLE",
        "user marks a key trusted": "CKR_ATTRIBUTE_READ_ONLY",  # only the SO may set CKA_TRUSTED...
        "SO makes a private trusted key": "CKR_USER_NOT_LOGGED_IN",  # ...and the SO makes no private objects,
        "SO makes a public trusted key": "OK",  # only public ones, usable without a PIN
        "extractable key read by a PIN holder": True,
    }


# -- backup and restore -----------------------------------------------------------------------------------------


def test_backup_and_restore_bring_back_keys_that_sign_as_before(deployment):
    from agent.custody.backup import USELESS_WITHOUT_THE_HSM

    env, config = deployment
    secrets = {"b1": new_secret(), "b2": new_secret(20)}
    for label, secret in secrets.items():
        import_wrapped(env, config, label, secret)
    out = env.root / "backup.json"
    backup = run_cli(env, "store", "backup", "--out", str(out), config=config)
    assert backup.returncode == 0, backup.stderr
    assert "wrote 2 wrapped key(s)" in backup.stdout and "generations: 1 (2 keys)" in backup.stdout
    assert USELESS_WITHOUT_THE_HSM in backup.stdout
    assert out.stat().st_mode & 0o777 == 0o600
    assert [r["label"] for r in json.loads(out.read_text())["rows"]] == ["b1", "b2"]
    again = run_cli(env, "store", "backup", "--out", str(out), config=config)
    assert again.returncode == 1 and "exists; give another --out" in again.stderr
    assert not list(env.root.glob(".backup.json.partial-*"))

    # Into an empty store on the same HSM: every key signs as before.
    fresh = env.write_config("fresh", extra='[store]\nbackend = "sqlite"\nsqlite_file = "state/fresh.db"\n')
    restored = run_cli(env, "store", "restore", str(out), config=fresh)
    assert restored.returncode == 0, restored.stderr
    assert "restored 2 of 2 wrapped key(s)" in restored.stdout
    got = inspect(env, fresh, "b1", "b2")
    assert {label: (g["storage"], g["mac"]) for label, g in got.items()} == {
        label: ("wrapped", expected_mac(secret)) for label, secret in secrets.items()}

    # Labels present already: refused, nothing written, unless --replace.
    run_cli(env, "keys", "revoke", "--label", "b1", "--yes", config=fresh, check=True)
    other = new_secret()
    import_wrapped(env, fresh, "b1", other)
    refused = run_cli(env, "store", "restore", str(out), config=fresh)
    assert refused.returncode == 1 and "2 label(s) of the backup exist in the key store: b1, b2" in refused.stderr
    assert inspect(env, fresh, "b1")["b1"]["mac"] == expected_mac(other)
    replaced = run_cli(env, "store", "restore", "--replace", str(out), config=fresh)
    assert replaced.returncode == 0 and "(2 replaced)" in replaced.stdout, replaced.stderr
    assert inspect(env, fresh, "b1")["b1"]["mac"] == expected_mac(secrets["b1"])


def test_restore_refuses_blobs_this_token_cannot_unwrap_and_restores_the_rest(deployment, tmp_path_factory):
    env, config = deployment
    mine = new_secret()
    import_wrapped(env, config, "mine", mine)
    # Another HSM's store: its blob names master key generation 1 too, but of a key this token does not hold.
    elsewhere = make_env(tmp_path_factory, "elsewhere")
    other_config = elsewhere.write_config("ops", extra=STORE_TABLE)
    run_cli(elsewhere, "store", "init", config=other_config, check=True)
    import_wrapped(elsewhere, other_config, "foreign", new_secret())
    theirs = elsewhere.root / "theirs.json"
    run_cli(elsewhere, "store", "backup", "--out", str(theirs), config=other_config, check=True)
    ours = env.root / "ours.json"
    run_cli(env, "store", "backup", "--out", str(ours), config=config, check=True)
    combined = json.loads(ours.read_text())
    combined["rows"] += json.loads(theirs.read_text())["rows"]
    future = dict(combined["rows"][0], label="future", master=7)  # a generation this token never had
    combined["rows"].append(future)
    mixed = env.root / "mixed.json"
    mixed.write_text(json.dumps(combined))

    fresh = env.write_config("fresh2", extra='[store]\nbackend = "sqlite"\nsqlite_file = "state/fresh2.db"\n')
    done = run_cli(env, "store", "restore", str(mixed), config=fresh)
    assert done.returncode == 1
    assert "not restored  foreign  a wrapped key's blob does not unwrap under this token's master key" in done.stdout
    assert "not restored  future  the key is wrapped under master key generation 7" in done.stdout
    assert "restored 1 of 3" in done.stdout and "useless without the HSM holding its master key" in done.stderr
    assert inspect(env, fresh, "mine")["mine"]["mac"] == expected_mac(mine)
    with sqlite3.connect(env.root / "state" / "fresh2.db") as db:
        assert [r[0] for r in db.execute("SELECT label FROM wrapped_keys")] == ["mine"]


@pytest.mark.parametrize("content, message", [
    ("not json", "is not a key store backup (not JSON)"),
    ('{"format": "something else"}', "is not a key store backup"),
    ('{"format": "signing-agent key store backup", "version": 9, "rows": []}', "backup of version 9"),
    ('{"format": "signing-agent key store backup", "version": 1, "rows": [{"label": "x"}]}', "row 1 is malformed"),
])
def test_restore_refuses_a_file_that_is_not_a_backup_and_writes_nothing(deployment, content: str, message: str):
    env, config = deployment
    bad = env.root / "bad.json"
    bad.write_text(content)
    done = run_cli(env, "store", "restore", str(bad), config=config)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and rows(env) == {}
