"""Agent-issued nonces never go backwards: in a process, across restarts, a SIGKILL, a power loss
(simulated by another boot id), and between processes sharing the state directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.nonces import RESERVE, NonceError, NonceStore

ROOT = Path(__file__).resolve().parents[2]


def test_nonce_is_at_least_the_floor_and_above_the_last(tmp_path: Path):
    store = NonceStore(tmp_path)
    assert store.next("kraken", "K1", 1000) == 1000
    assert store.next("kraken", "K1", 1000) == 1001  # same millisecond: one more
    assert store.next("kraken", "K1", 900) == 1002  # the clock went back: still forward
    assert store.next("kraken", "K1", 5000) == 5000
    assert store.next("kraken", "K2", 10) == 10  # per API key
    assert store.next("bitfinex", "K1", 10) == 10  # per exchange


def test_restart_continues_above_the_last_nonce(tmp_path: Path):
    store = NonceStore(tmp_path)
    issued = [store.next("gemini", "K", 1000) for _ in range(5)]
    store.close()
    assert NonceStore(tmp_path).next("gemini", "K", 0) == issued[-1] + 1


def test_power_loss_resumes_above_the_durable_reservation(tmp_path: Path):
    store = NonceStore(tmp_path)
    store.next("kraken", "K", 1000)
    path = tmp_path / NonceStore.file_name("kraken", "K")
    record = path.read_text().split()
    assert int(record[1]) == 1000 + RESERVE  # fsynced before 1000 was handed out
    # After a power loss the page cache is gone: the file may show an older `last`, and the boot id differs.
    path.write_text(f"{0:020d} {int(record[1]):020d} {'x' * 36}\n")
    assert NonceStore(tmp_path).next("kraken", "K", 0) == 1000 + RESERVE + 1


def test_damaged_state_fails_closed(tmp_path: Path):
    store = NonceStore(tmp_path)
    store.next("kraken", "K", 1)
    (tmp_path / NonceStore.file_name("kraken", "K")).write_text("garbage\n")
    with pytest.raises(NonceError, match="damaged"):
        NonceStore(tmp_path).next("kraken", "K", 1)


def test_state_directory_is_private(tmp_path: Path):
    store = NonceStore(tmp_path / "state")
    store.check()
    store.next("kraken", "K", 1)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / NonceStore.file_name("kraken", "K")).stat().st_mode & 0o777 == 0o600


ISSUER = """
import sys, time
from pathlib import Path
from agent.nonces import NonceStore
store = NonceStore(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    print(store.next("kraken", "shared", time.time_ns() // 1_000_000), flush=True)
"""


def _issuer(state: Path, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ISSUER, str(state), str(count)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)


def test_processes_sharing_a_key_never_issue_the_same_nonce(tmp_path: Path):
    procs = [_issuer(tmp_path, 400) for _ in range(4)]
    outputs = [[int(line) for line in p.communicate(timeout=60)[0].split()] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    every = [n for out in outputs for n in out]
    assert len(every) == 1600 and len(set(every)) == 1600
    for out in outputs:
        assert out == sorted(out) and len(set(out)) == len(out)


def test_sigkill_then_restart_never_goes_back(tmp_path: Path):
    proc = _issuer(tmp_path, 10**9)
    seen = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while len(seen) < 2000 and time.monotonic() < deadline:
        seen.append(int(proc.stdout.readline()))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert len(seen) == 2000
    # The killed process may have issued a few more than we read: restart must be above all of them.
    after = NonceStore(tmp_path).next("kraken", "shared", 0)
    assert after > max(seen)


def test_a_replaced_state_file_is_reopened(tmp_path: Path):
    """An operator restoring a state file under a running agent: the agent follows the new file,
    so every process locks and reads the same one."""
    store = NonceStore(tmp_path)
    store.next("kraken", "K", 1000)
    path = tmp_path / NonceStore.file_name("kraken", "K")
    replacement = tmp_path / "restored"
    replacement.write_text(f"{5000:020d} {6000:020d} {path.read_text().split()[2]}\n")
    replacement.replace(path)
    assert store.next("kraken", "K", 0) == 5001


def test_unwritable_state_is_reported_not_crashed(tmp_path: Path):
    from agent.nonces import NonceStoreUnavailable

    store = NonceStore(tmp_path / "state")
    (tmp_path / "state").write_text("a file where the directory should be")
    with pytest.raises(NonceStoreUnavailable):
        store.next("kraken", "K", 1)


def test_workers_checking_a_new_state_directory_at_once_all_pass(tmp_path: Path):
    """`serve --workers N` starts N processes that each check the state directory at the same
    moment; one's write probe must not be another's (found in CI: worker 1 failed with ENOENT)."""
    state = tmp_path / "state"
    code = ("import sys\nfrom pathlib import Path\nfrom agent.nonces import NonceStore\n"
            "store = NonceStore(Path(sys.argv[1]))\n"
            "for _ in range(300):\n    store.check()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(state)], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    assert list(state.iterdir()) == []  # no probe left behind
