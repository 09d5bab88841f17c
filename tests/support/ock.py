"""opencryptoki deployments for tests: the second PKCS#11 implementation, chosen by configuration only.

opencryptoki 3.8 (Debian 12) has one software token per machine, in a fixed directory
(/var/lib/opencryptoki/swtok), served through one slot daemon (pkcsslotd, socket in /var/run).
Neither can be pointed at a temporary directory: the daemon's config and socket paths are
compiled in, and the library's PKCS_APP_STORE override is broken in 3.8 (it writes the token's
files into /). So a test session borrows that token:

* it holds an exclusive lock for the whole session (two sessions would wipe each other's token);
* it starts pkcsslotd if none runs (as root), and stops it at the end only if it started it;
* it takes the software token only when it is factory-fresh or labelled TEST_LABEL (left by an
  earlier session that died); a token someone set up for other work is never touched;
* it resets the token to the factory state (its files removed), initialises it with random PINs
  through `agent.tokeninit.init_opencryptoki`, and resets it again at the end.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from agent import tokeninit
from support.deploy import PERMISSIVE_POLICY, ROOT, TEST_BOT, TEST_BOT_TOKEN, Env, write_bots
from support.leaks import OUTPUT_DIRS, register_secret

OCK_MODULE = os.environ.get("OPENCRYPTOKI_MODULE", tokeninit.OCK_MODULE)
SLOTD = Path("/usr/sbin/pkcsslotd")
SLOTD_PID_FILE = Path("/var/run/pkcsslotd.pid")
OCK_CONF = Path("/etc/opencryptoki/opencryptoki.conf")
SWTOK_DIR = Path("/var/lib/opencryptoki/swtok")
# The software token's shared memory, named after its directory: it caches the token's state.
SWTOK_SHM = Path("/dev/shm/var.lib.opencryptoki.swtok")
OCK_LOCK_DIRS = (Path("/var/lock/opencryptoki"), Path("/var/lock/opencryptoki/swtok"))
SESSION_LOCK = Path("/run/lock/signing-agent-opencryptoki-tests.lock")
SESSION_LOCK_WAIT_SECONDS = 30
TEST_LABEL = "signing-agent-test"
INSTALL_HINT = "apt-get install opencryptoki (`make deps` does it)"


@dataclass
class OckDeployment:
    """An agent deployment on opencryptoki's software token (Env: root, config, logs)."""

    env: Env
    pin_dir: Path  # user.pin, so.pin, token.toml written by init_opencryptoki
    slot: int
    init_output: list[str]


def swtok_slot(conf: Path = OCK_CONF) -> int:
    """The slot number opencryptoki.conf gives the software token (libpkcs11_sw.so)."""
    text = re.sub(r"#.*", "", conf.read_text())
    for number, body in re.findall(r"slot\s+(\d+)\s*\{([^}]*)\}", text):
        if re.search(r"stdll\s*=\s*libpkcs11_sw\.so", body):
            return int(number)
    raise AssertionError(f"{conf} configures no software token (stdll = libpkcs11_sw.so)")


def _require_installed() -> None:
    missing = [str(p) for p in (Path(OCK_MODULE), SLOTD, OCK_CONF) if not p.exists()]
    if not missing:
        return
    message = f"opencryptoki is not installed ({', '.join(missing)} missing): {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI installs it; its absence there is a broken install step, not a skip
    pytest.skip(message)


@contextmanager
def session_lock() -> Iterator[None]:
    """Exclusive use of the software token by this test session (bounded wait)."""
    SESSION_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with SESSION_LOCK.open("w") as f:
        deadline = time.monotonic() + SESSION_LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session holds {SESSION_LOCK} (opencryptoki's one software "
                                f"token) for more than {SESSION_LOCK_WAIT_SECONDS} s")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def start_slotd() -> int | None:
    """Start pkcsslotd unless one answers already; returns its pid if this call started it.

    Never starts a second one: two daemons fight over the same socket and shared memory.
    """
    if tokeninit.slotd_running():
        return None
    if os.geteuid() != 0:
        pytest.fail("pkcsslotd is not running and only root can start it: run `sudo pkcsslotd` first")
    import grp

    gid = grp.getgrnam("pkcs11").gr_gid  # created by the package
    for d in OCK_LOCK_DIRS:  # /run/lock is a tmpfs: the package's dirs are gone after a reboot
        d.mkdir(mode=0o770, exist_ok=True)
        os.chown(d, 0, gid)
    subprocess.run([str(SLOTD)], check=True, timeout=10)  # forks into the background
    deadline = time.monotonic() + 10
    while not tokeninit.slotd_running():
        if time.monotonic() > deadline:
            pytest.fail("pkcsslotd started but its socket does not answer")
        time.sleep(0.05)
    # The daemon answers before it has written its pid file: wait for the file too.
    while not SLOTD_PID_FILE.exists() or not SLOTD_PID_FILE.read_text().strip():
        if time.monotonic() > deadline:
            pytest.fail(f"pkcsslotd started but wrote no pid to {SLOTD_PID_FILE}")
        time.sleep(0.05)
    pid = int(SLOTD_PID_FILE.read_text().strip())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "pkcsslotd", "pkcsslotd's pid file is stale"
    return pid


def stop_slotd(pid: int) -> None:
    """Stop the pkcsslotd this session started (by its pid), waiting until it is gone."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "pkcsslotd":
            return
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        return
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _run_tokeninit(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run tokeninit in a fresh process: it calls C_Initialize/C_Finalize through ctypes, which must not
    happen in a process where python-pkcs11 holds the module initialised."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


_PROBE = """
import json, sys
from agent import tokeninit
lib = tokeninit._loaded(sys.argv[1])
try:
    print(json.dumps([t.__dict__ for t in tokeninit._token_slots(lib)]))
finally:
    lib.C_Finalize(None)
"""

_INIT = """
import sys
from pathlib import Path
from agent.tokeninit import TokenInitError, init_opencryptoki
try:
    for line in init_opencryptoki(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])):
        print(line)
except TokenInitError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


def token_in_slot(slot: int) -> dict | None:
    proc = _run_tokeninit(_PROBE, OCK_MODULE)
    assert proc.returncode == 0, f"listing opencryptoki's tokens failed: {proc.stderr}"
    return next((t for t in json.loads(proc.stdout) if t["slot"] == slot), None)


def init_token(pin_dir: Path, slot: int, label: str = TEST_LABEL) -> subprocess.CompletedProcess:
    return _run_tokeninit(_INIT, str(pin_dir), label, OCK_MODULE, str(slot))


def reset_software_token() -> None:
    """Back to the factory state: no label, SO PIN 87654321, no objects. No process may have it loaded."""
    for name in ("NVTOK.DAT", "MK_SO", "MK_USER"):
        (SWTOK_DIR / name).unlink(missing_ok=True)
    objects = SWTOK_DIR / "TOK_OBJ"
    if objects.is_dir():
        for path in objects.iterdir():
            path.unlink()
    SWTOK_SHM.unlink(missing_ok=True)


def claim_software_token(slot: int) -> None:
    """Reset the software token if it is free or ours; refuse (fail) if someone else set it up."""
    token = token_in_slot(slot)
    if token is None:
        pytest.fail(f"opencryptoki shows no token in slot {slot} (the software token); see `pkcsconf -t`")
    initialized = token["flags"] & tokeninit.CKF_TOKEN_INITIALIZED
    if initialized and token["label"] != TEST_LABEL:
        pytest.fail(
            f"opencryptoki's software token (slot {slot}) holds token {token['label']!r}: these tests reinitialise "
            f"that token and so refuse to touch it. To run them, move its files (NVTOK.DAT, MK_SO, MK_USER, "
            f"TOK_OBJ/) out of {SWTOK_DIR} while no program uses it, and put them back afterwards."
        )
    reset_software_token()


def write_ock_config(root: Path, name: str, *, label: str, pin_file: Path, extra: str = "") -> Path:
    """An agent config whose [token] is the opencryptoki token: module, label, PIN file; nothing else."""
    path = root / f"{name}.toml"
    path.write_text(
        f'[token]\nmodule = "{OCK_MODULE}"\nlabel = "{label}"\npin_file = "{pin_file}"\n'
        f'[server]\nsocket = "run/{name}.sock"\n{extra}'
    )
    return path


@contextmanager
def ock_deployment(tmp_path_factory: pytest.TempPathFactory, name: str = "ock") -> Iterator[OckDeployment]:
    """Session-long: the software token initialised for the tests, and an agent config on it."""
    _require_installed()
    slot = swtok_slot()
    with session_lock():
        started = start_slotd()
        try:
            claim_software_token(slot)
            root = tmp_path_factory.mktemp(name)
            logs = root / "logs"
            logs.mkdir()
            OUTPUT_DIRS.append(logs)
            pin_dir = root / "token"
            proc = init_token(pin_dir, slot)
            assert proc.returncode == 0, f"init_opencryptoki failed: {proc.stderr}"
            for pin_file in ("user.pin", "so.pin"):  # the leak guard looks for the PINs too
                register_secret((pin_dir / pin_file).read_text().strip())
            config = write_ock_config(root, "agent", label=TEST_LABEL, pin_file=pin_dir / "user.pin")
            write_bots(root / "bots.toml", {TEST_BOT: TEST_BOT_TOKEN})
            (root / "policy.toml").write_text(PERMISSIVE_POLICY)
            env = Env(root=root, config=config, logs=logs)
            try:
                yield OckDeployment(env=env, pin_dir=pin_dir, slot=slot, init_output=proc.stdout.splitlines())
            finally:
                # Whoever loaded the module in this process must have finalised it by now (see test module).
                reset_software_token()
                shutil.rmtree(pin_dir, ignore_errors=True)
        finally:
            if started is not None:
                stop_slotd(started)
