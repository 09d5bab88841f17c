"""Rate buckets shared by every agent process on the host (workers, or agents sharing a state dir).

`serve --workers N` spreads one bot's calls over N processes; buckets kept in each process's
memory would let it through at N times its rate. So the buckets live in one small file in the
state dir, mapped into every process and updated under an exclusive flock (a few microseconds).
CLOCK_MONOTONIC is the same for every process of the host, so the refill arithmetic holds.

Layout: SLOTS records of (16-byte BLAKE2b of the bucket's name, tokens: float64, stamp: float64),
open addressing. A full table (more than SLOTS distinct keys and bots) fails closed: RateTableFull.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from pathlib import Path

SLOTS = 8192
_RECORD = struct.Struct("<16sdd")
_EMPTY = b"\0" * 16


class RateTableFull(Exception):
    pass


class SharedBuckets:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = SLOTS * _RECORD.size
        if os.fstat(self._fd).st_size != size:
            with self._locked():
                if os.fstat(self._fd).st_size != size:
                    os.ftruncate(self._fd, size)  # a new (or foreign-sized) table starts empty
        self._map = mmap.mmap(self._fd, size)
        self._thread_lock = threading.Lock()  # flock is per open file, not per thread
        self._slots: dict[bytes, int] = {}

    def _locked(self):
        fd = self._fd

        class _Lock:
            def __enter__(self_inner) -> None:
                fcntl.flock(fd, fcntl.LOCK_EX)

            def __exit__(self_inner, *exc: object) -> None:
                fcntl.flock(fd, fcntl.LOCK_UN)

        return _Lock()

    def take(self, name: str, rate: float, burst: int) -> bool:
        """Take one token from bucket NAME (RATE per second, up to BURST); False when it is empty."""
        return self.take_all([(name, rate, burst, 1)]) is None

    def take_all(self, takes: list[tuple[str, float, int, int]]) -> int | None:
        """Take COST tokens from each bucket (NAME, RATE per second, up to BURST, COST), all or none, in one
        lock: the index of the first bucket holding fewer (nothing taken), or None once all are taken."""
        now = time.monotonic()
        with self._thread_lock, self._locked():
            found = []
            for name, rate, burst, cost in takes:
                digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                index = self._find(digest)
                key, tokens, stamp = _RECORD.unpack_from(self._map, index * _RECORD.size)
                if key == _EMPTY:
                    tokens, stamp = float(burst), now
                tokens = min(float(burst), tokens + max(0.0, now - stamp) * rate)
                found.append((index, digest, tokens, cost))
            short = next((i for i, (_, _, tokens, cost) in enumerate(found) if tokens < cost), None)
            for index, digest, tokens, cost in found:
                _RECORD.pack_into(self._map, index * _RECORD.size, digest, tokens - (cost if short is None else 0), now)
        return short

    def _find(self, digest: bytes) -> int:
        cached = self._slots.get(digest)
        if cached is not None:
            return cached
        start = int.from_bytes(digest[:4], "little") % SLOTS
        for step in range(SLOTS):
            index = (start + step) % SLOTS
            key = self._map[index * _RECORD.size:index * _RECORD.size + 16]
            if key == digest or key == _EMPTY:
                self._slots[digest] = index
                return index
        raise RateTableFull(f"the rate table holds {SLOTS} buckets; too many keys and bots")

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
