"""Backups of the wrapped-key store (`store backup`, `store restore`): its rows, blobs included, in one JSON file.

One format for both backends, so a SQLite store's backup restores into PostgreSQL and back. The rows are read
by one SELECT, which both databases answer from one snapshot: the backup is consistent while agents and imports
go on. The file holds what the store holds (labels, API key ids, options, blobs, KuCoin passphrase MACs) and is
created mode 0600, never over an existing file.

A blob is AES key wrap under a master key that exists only in the HSM: the backup is useless without the HSM
holding that master key generation. It is no backup of the keys by itself; the HSM is backed up its vendor's way.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.custody.errors import CustodyError
from agent.custody.store import KeyStore, WrappedRecord
from agent.names import InvalidName, validate_api_key, validate_label

BACKUP_FORMAT = "signing-agent key store backup"
BACKUP_VERSION = 1
MAX_BACKUP_BYTES = 1 << 30
USELESS_WITHOUT_THE_HSM = (
    "a blob backup is useless without the HSM holding its master key: back up the HSM (its token and keys) the "
    "vendor's way, and keep that backup with this one"
)


class BackupError(CustodyError):
    """A backup file cannot be written or read as one; the message says which and why (never its contents)."""


def write_backup(store: KeyStore, path: Path) -> dict[int, int]:
    """Write every row of STORE to PATH (mode 0600; refused when PATH exists); returns generation -> rows."""
    records = store.records()
    by_master: dict[int, int] = {}
    for record in records:
        by_master[record.master] = by_master.get(record.master, 0) + 1
    doc = {
        "format": BACKUP_FORMAT,
        "version": BACKUP_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "note": USELESS_WITHOUT_THE_HSM,
        "rows": [_row(r) for r in records],
    }
    # Written beside PATH, then linked in: a reader never sees half a backup, and an existing file is kept.
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise BackupError(f"cannot create {partial}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out, indent=1, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(partial, path)
        except FileExistsError:
            raise BackupError(f"{path} exists; give another --out (a backup never overwrites a file)") from None
        except OSError as exc:
            raise BackupError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    return by_master


def read_backup(path: Path) -> list[WrappedRecord]:
    """The rows of backup file PATH; BackupError naming the first problem (a row by its number, not its data)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BACKUP_BYTES + 1)
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_BACKUP_BYTES:
        raise BackupError(f"{path} is larger than 1 GiB; not a backup of this store")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BackupError(f"{path} is not a key store backup (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != BACKUP_FORMAT:
        raise BackupError(f"{path} is not a key store backup (written by `signing-agent store backup`)")
    if doc.get("version") != BACKUP_VERSION:
        raise BackupError(f"{path} is a backup of version {doc.get('version')!r}; this agent reads version "
                          f"{BACKUP_VERSION}")
    rows = doc.get("rows")
    if not isinstance(rows, list):
        raise BackupError(f"{path} has no list of rows")
    records, seen = [], set()
    for number, row in enumerate(rows, 1):
        record = _record(row)
        if record is None:
            raise BackupError(f"{path}: row {number} is malformed; nothing was restored")
        if record.label in seen:
            raise BackupError(f"{path}: label {record.label!r} appears twice; nothing was restored")
        seen.add(record.label)
        records.append(record)
    return records


def _row(r: WrappedRecord) -> dict[str, Any]:
    return {"label": r.label, "exchange": r.exchange, "api_key": r.api_key, "key_type": r.key_type,
            "created": r.created, "fingerprint": r.fingerprint, "master": r.master,
            "blob": base64.b64encode(r.blob).decode(), "options": r.options, "header": r.header}


def _record(row: Any) -> WrappedRecord | None:
    text = ("label", "exchange", "api_key", "key_type", "created", "fingerprint", "blob")
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in text):
        return None
    options, header, master = row.get("options"), row.get("header"), row.get("master")
    if not isinstance(options, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
        return None
    if header is not None and not isinstance(header, str):
        return None
    if not isinstance(master, int) or isinstance(master, bool) or master < 1:
        return None
    try:
        validate_label(row["label"])
        validate_api_key(row["api_key"])
        blob = base64.b64decode(row["blob"], validate=True)
    except (InvalidName, binascii.Error, ValueError):
        return None
    return WrappedRecord(label=row["label"], exchange=row["exchange"], api_key=row["api_key"],
                         key_type=row["key_type"], created=row["created"], fingerprint=row["fingerprint"],
                         master=master, blob=blob, options=dict(options), header=header)
