"""Nonces that never go backwards: per exchange key, across restarts, crashes and processes.

Kraken, Bitfinex, Gemini and Crypto.com reject a nonce that is not greater
than the last one they saw for the key. So the agent, not the bot, issues
them: `next(floor)` returns max(floor, last + 1), where FLOOR is the clock in
the exchange's unit.

One small file per key under the state directory holds three fields:
`last reserved boot-id`. Issuing takes an exclusive flock (so several agent
processes can share keys), reads the record, and writes it back in place:

* `last` is written on every issue. A crashed process loses nothing: the page
  cache keeps the write.
* `reserved` is a bound fsynced to disk before any nonce passes it, moved
  RESERVE ahead each time. After a reboot (a new boot id: a power loss looks
  the same) the last write may be gone, so issuing resumes above `reserved`:
  nonces jump forward by at most RESERVE, never back. RESERVE is 10 s of
  millisecond nonces: one fsync per key every 10 s under load, and a jump
  small enough for exchanges that also bound a nonce by their clock
  (Crypto.com: 60 s).

A record that does not parse stops issuing for that key (fail closed) with a
message naming the file, rather than guessing a value that might repeat.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import threading
from pathlib import Path

RESERVE = 10_000  # 10 s of millisecond nonces (see above)
_WIDTH = 20  # digits per number: fixed-width records are rewritten in place
_RECORD_LEN = _WIDTH * 2 + 2 + 36 + 1


class NonceError(Exception):
    """No nonce can be issued safely; the message names the file and what to do."""


class NonceStoreUnavailable(NonceError):
    """The state directory cannot be read or written right now (I/O error, disk full)."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:36].ljust(36, "-")
    except OSError:  # not Linux: an id of this process, so every start counts as a reboot (safe side)
        return secrets.token_hex(18)


class NonceStore:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._boot = _boot_id()
        self._lock = threading.Lock()  # threads of this process; flock covers other processes
        self._fds: dict[str, int] = {}

    def _fd(self, name: str) -> int:
        """The open state file NAME; reopened when the file on disk was replaced or removed,
        so that every process locks the same file."""
        path = self._dir / name
        fd = self._fds.get(name)
        if fd is not None:
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)
            del self._fds[name]
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if created:  # the new directory entry must survive a power loss too
            dir_fd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._fds[name] = fd
        return fd

    def check(self) -> None:
        """Fail at start-up, not at the first nonce, when the state directory is unusable."""
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self._dir / f".write-test-{os.getpid()}"  # one per process: workers check at once
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise NonceError(f"state directory {self._dir} is not writable: {exc.strerror}") from None

    @staticmethod
    def file_name(exchange: str, api_key: str) -> str:
        """Nonces belong to the exchange's API key (what the exchange counts), not to a label."""
        return f"{exchange}-{hashlib.sha256(api_key.encode()).hexdigest()[:24]}"

    def next(self, exchange: str, api_key: str, floor: int) -> int:
        """A nonce >= FLOOR and greater than any issued before for this key."""
        if floor < 0:
            raise NonceError("nonce floor must not be negative")
        name = self.file_name(exchange, api_key)
        with self._lock:
            try:
                return self._next_locked(name, floor)
            except OSError as exc:
                raise NonceStoreUnavailable(f"nonce state {self._dir / name}: {exc.strerror}") from None

    def _next_locked(self, name: str, floor: int) -> int:
        fd = self._fd(name)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            last, reserved, boot = self._read(fd, name)
            if boot != self._boot:
                last = max(last, reserved)  # after a reboot or power loss the last write may be lost
            nonce = max(floor, last + 1)
            if nonce >= 10 ** _WIDTH:
                raise NonceError(f"nonce for {name} would exceed {_WIDTH} digits")
            if nonce > reserved:
                reserved = nonce + RESERVE
                self._write(fd, nonce, reserved)
                os.fsync(fd)
            else:
                self._write(fd, nonce, reserved)
            return nonce
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _read(self, fd: int, name: str) -> tuple[int, int, str]:
        raw = os.pread(fd, _RECORD_LEN + 1, 0)
        if not raw:
            return 0, 0, self._boot
        try:
            last_text, reserved_text, boot = raw.decode("ascii").split()
            last, reserved = int(last_text), int(reserved_text)
        except ValueError:
            raise NonceError(
                f"nonce state {self._dir / name} is damaged; the agent will not guess a nonce. "
                "Restore it, or remove it only if the key will never be used with a nonce below the current time"
            ) from None
        if last > reserved:
            raise NonceError(f"nonce state {self._dir / name} is inconsistent (last above reserved)")
        return last, reserved, boot

    def _write(self, fd: int, last: int, reserved: int) -> None:
        record = f"{last:0{_WIDTH}d} {reserved:0{_WIDTH}d} {self._boot}\n".encode("ascii")
        assert len(record) == _RECORD_LEN
        os.pwrite(fd, record, 0)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
