"""Audit rotation: `rotate` closes the log into a dated file and continues the chain in a new one, the agent's
writers follow, and `verify_chain` (what `signing-agent audit verify` runs) checks every file back to the start
of the chain, naming a rotated file deleted, swapped, cut or altered. No token needed."""

from __future__ import annotations

import io
import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agent.audit as audit
from agent.audit import CONTINUE_EVENT, ROTATE_EVENT, ZERO_HASH, AuditLog, rotate, verify, verify_chain, verify_main

ROOT = Path(__file__).resolve().parents[2]


def sha(raw: bytes) -> str:
    import hashlib

    return hashlib.sha256(raw).hexdigest()


def append(path: Path, n: int, start: int = 0) -> None:
    with AuditLog(path) as log:
        for i in range(start, start + n):
            log.append("sign", label="binance-main", i=i)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def rotated_log(tmp_path: Path, files: int = 3, per_file: int = 4) -> tuple[Path, list[Path]]:
    """audit.jsonl rotated FILES - 1 times (distinct names: one clock second apart), PER_FILE sign records each."""
    path = tmp_path / "audit" / "audit.jsonl"
    rotated = []
    for k in range(files - 1):
        append(path, per_file, k * per_file)
        rotated.append(rotate(path, now=1_800_000_000 + k).rotated)
    append(path, per_file, (files - 1) * per_file)
    return path, rotated


def found(path: Path, **kw) -> list[tuple[str, int, str]]:
    report = verify_chain(path, **kw)
    assert report.ok == (not report.problems)
    return [(p.name, problem.line, problem.kind) for p, problem in report.problems]


# -- rotating --------------------------------------------------------------------------


def test_rotation_closes_the_file_and_the_new_one_continues_the_chain(tmp_path: Path):
    path = tmp_path / "audit" / "audit.jsonl"
    append(path, 3)
    done = rotate(path, now=1_800_000_000, operator="alice")
    assert done.rotated == path.with_name("audit.jsonl.20270115T080000Z")
    old, new = records(done.rotated), records(path)
    assert [r["seq"] for r in old] == [1, 2, 3, 4]
    assert old[-1]["event"] == ROTATE_EVENT and old[-1]["renamed_to"] == done.rotated.name
    assert old[-1]["operator"] == "alice" and list(old[-1])[-1] == "prev"
    assert new == [{"seq": 5, "ts": new[0]["ts"], "event": CONTINUE_EVENT, "from": done.rotated.name,
                    "prev": done.head}]
    assert done.head == sha(done.rotated.read_bytes().splitlines()[-1]) and done.lines == 4
    for p in (path, done.rotated):
        assert p.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["audit.jsonl", done.rotated.name]  # no temporary left

    append(path, 2)  # a new writer continues after the continuation record
    assert [r["seq"] for r in records(path)] == [5, 6, 7]
    assert verify(path).ok  # each file on its own, too
    assert verify(done.rotated).ok
    report = verify_chain(path)
    assert report.ok and report.lines == 7 and report.head == sha(path.read_bytes().splitlines()[-1])
    assert [p.name for p, _ in report.files] == [done.rotated.name, "audit.jsonl"]
    assert audit.read_head(path) == (report.head, 7)


def test_rotation_names_never_collide_and_min_size_skips(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    append(path, 2)
    assert rotate(path, min_size=10_000) is None and len(records(path)) == 2
    names = [rotate(path, now=1_800_000_000).rotated.name for _ in range(3)]
    assert names == ["audit.jsonl.20270115T080000Z", "audit.jsonl.20270115T080000Z-2", "audit.jsonl.20270115T080000Z-3"]
    assert verify_chain(path).ok and len(verify_chain(path).files) == 4
    with pytest.raises(FileNotFoundError):
        rotate(tmp_path / "none.jsonl")
    with pytest.raises(ValueError):
        rotate(path, prev="x")  # reserved field: nothing changes
    assert len(list(tmp_path.iterdir())) == 4


def test_a_torn_last_line_is_closed_over_and_stays_reported(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    append(path, 3)
    with open(path, "ab") as f:
        f.write(b'{"seq":4,"ts":"2026')
    done = rotate(path, now=1_800_000_000)
    assert done.rotated.read_bytes().count(b"\n") == 5  # the tear terminated, then the closing record
    assert found(path) == [(done.rotated.name, 4, "truncated")]


def test_a_failed_rotation_leaves_the_live_log_as_it_was(tmp_path: Path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    append(path, 3)
    before = path.read_bytes()
    real, calls = audit._write_all, []

    def full_disk(fd: int, data: bytes) -> None:
        calls.append(data)
        if len(calls) == 2:  # the closing record (the first write is the new file's line)
            raise OSError(28, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(audit, "_write_all", full_disk)
    with pytest.raises(OSError):
        rotate(path, now=1_800_000_000)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]
    append(path, 1)
    assert verify_chain(path).ok


WRITER = """
import sys
from agent.audit import AuditLog
log = AuditLog(sys.argv[1])
for i in range(int(sys.argv[2])):
    log.append("sign", writer=sys.argv[3], i=i)
"""


def test_writers_in_other_processes_follow_rotations_without_losing_a_line(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    append(path, 1)
    n = 400
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), f"w{k}"], cwd=ROOT) for k in range(2)]
    rotations = 0
    while any(w.poll() is None for w in writers) or rotations < 3:
        rotate(path, now=1_800_000_000 + rotations)
        rotations += 1
        time.sleep(0.02)  # a writer gives up after 5 rotations in a row between its open and its lock
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    report = verify_chain(path)
    assert report.ok, report.problems
    assert len(report.files) == rotations + 1
    lines = [r for p, _ in report.files for r in records(p)]
    assert [r["seq"] for r in lines] == list(range(1, len(lines) + 1))
    assert sum(r["event"] == "sign" for r in lines) == 1 + 2 * n
    for p, _ in report.files[:-1]:  # every closed file ends with its closing record: nobody wrote after it
        assert records(p)[-1]["event"] == ROTATE_EVENT


# -- tampering with rotated files --------------------------------------------------------


def test_a_deleted_middle_file_is_reported_missing(tmp_path: Path):
    path, (first, middle) = rotated_log(tmp_path)
    middle.unlink()
    assert found(path) == [(first.name, 0, "unlinked"), ("audit.jsonl", 1, "deleted")]
    out = io.StringIO()
    assert verify_main(path, out) == 1
    assert f"audit.jsonl: line 1: deleted: line 1 of audit.jsonl continues '{middle.name}', which is missing" in out.getvalue()


def test_a_deleted_oldest_file_is_reported_missing(tmp_path: Path):
    path, (first, middle) = rotated_log(tmp_path)
    first.unlink()
    assert found(path) == [(middle.name, 1, "deleted")]


def test_swapped_files_are_reordered(tmp_path: Path):
    path, (first, middle) = rotated_log(tmp_path)
    first.rename(tmp_path / "x")
    middle.rename(first)
    (tmp_path / "x").rename(middle)
    problems = found(path)
    assert (middle.name, 0, "reordered") in problems
    assert {kind for _, _, kind in problems} <= {"reordered", "unlinked", "deleted", "modified"}


def test_a_renamed_file_is_missing_and_unlinked(tmp_path: Path):
    path, (first, middle) = rotated_log(tmp_path)
    middle.rename(middle.with_name("audit.jsonl.20300101T000000Z"))
    assert found(path) == [(first.name, 0, "unlinked"), ("audit.jsonl.20300101T000000Z", 0, "unlinked"),
                           ("audit.jsonl", 1, "deleted")]


def test_a_rotated_file_cut_at_the_end_is_truncated(tmp_path: Path):
    path, (first, middle) = rotated_log(tmp_path)
    lines = middle.read_bytes().splitlines(keepends=True)
    middle.write_bytes(b"".join(lines[:-2]))  # whole lines cut: on its own the file looks fine
    assert verify(middle).ok
    assert found(path) == [(middle.name, len(lines) - 2, "truncated")]
    middle.write_bytes(b"".join(lines[:-1]) + lines[-1][:30])  # cut mid-line
    assert sorted(found(path)) == sorted([(middle.name, len(lines), "truncated")] * 2)


def test_an_altered_line_in_a_rotated_file_is_modified_there(tmp_path: Path):
    path, (first, middle) = rotated_log(tmp_path)
    data = first.read_bytes()
    first.write_bytes(data.replace(b'"i":1,', b'"i":9,'))
    assert found(path) == [(first.name, 2, "modified")]


def test_an_altered_closing_record_breaks_the_link_to_the_next_file(tmp_path: Path):
    path, (first, middle) = rotated_log(tmp_path)
    lines = middle.read_bytes().splitlines()
    lines[-1] = re.sub(rb'"ts":"[^"]*"', b'"ts":"2020-01-01T00:00:00.000Z"', lines[-1])
    middle.write_bytes(b"\n".join(lines) + b"\n")
    assert verify(middle).ok  # the documented limit of one file: nothing in it vouches for its last line
    assert found(path) == [(middle.name, len(lines), "modified")]


def test_a_forged_continuation_is_caught(tmp_path: Path):
    for case, (which, name, kind) in enumerate([("live", "../../etc/passwd", "modified"), ("live", "audit.jsonl", "modified"),
                                                ("middle", "self", "reordered")]):  # a file continuing itself: a loop
        path, (first, middle) = rotated_log(tmp_path / str(case))
        target = path if which == "live" else middle
        name = middle.name if name == "self" else name
        lines = target.read_bytes().splitlines()
        cont = json.loads(lines[0])
        cont["from"] = name
        target.write_bytes(b"\n".join([json.dumps(cont, separators=(",", ":")).encode(), *lines[1:]]) + b"\n")
        assert (target.name, 1, kind) in found(path)


def test_the_recorded_head_may_be_in_a_rotated_file(tmp_path: Path):
    path, (first, middle) = rotated_log(tmp_path)
    head = sha(first.read_bytes().splitlines()[2])
    assert found(path, expect_head=head) == []
    assert found(path, expect_head="ab" * 32) == [("audit.jsonl", 5, "truncated")]
    out = io.StringIO()
    assert verify_main(path, out, expect_head=head) == 0
    text = out.getvalue()
    assert text.startswith("audit log OK: 16 lines in 3 files, head ")
    assert f"  {first.name}: 5 lines\n  {middle.name}: 6 lines\n  audit.jsonl: 5 lines\n" in text
    assert f"recorded head {head} is in the chain" in text


def test_an_unrotated_log_reports_as_before(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    append(path, 2)
    out = io.StringIO()
    assert verify_main(path, out) == 0
    assert out.getvalue() == f"audit log OK: 2 lines, head {verify(path).head}\n"
    assert verify_chain(path).files[0][1].lines == 2 and verify(tmp_path / "audit.jsonl").head != ZERO_HASH


# -- the CLI -----------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_cli_rotate_then_verify_follows_the_files(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    append(path, 3)
    small = cli("audit", "rotate", "--file", str(path), "--min-size", "1K")
    assert small.returncode == 0 and "not rotated" in small.stdout
    done = cli("audit", "rotate", "--file", str(path), "--min-size", "100")
    assert done.returncode == 0 and "audit log rotated: " in done.stdout, done.stderr
    (rotated,) = [p for p in tmp_path.iterdir() if p.name != "audit.jsonl"]
    assert records(rotated)[-1]["operator"]  # who rotated, in the chain
    append(path, 2)
    ok = cli("audit", "verify", "--file", str(path))
    assert ok.returncode == 0 and "audit log OK: 7 lines in 2 files" in ok.stdout
    rotated.unlink()
    bad = cli("audit", "verify", "--file", str(path))
    assert bad.returncode == 1 and "deleted" in bad.stdout
    assert cli("audit", "rotate", "--file", str(tmp_path / "none")).returncode == 2
    assert cli("audit", "rotate", "--file", str(path), "--min-size", "lots").returncode == 2
