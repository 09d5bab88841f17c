"""The audit log: chained lines from many threads and processes, and verify() naming each kind of tampering
at the right line. No token needed: the log knows nothing of secrets."""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.audit import ZERO_HASH, AuditLog, verify, verify_main

ROOT = Path(__file__).resolve().parents[2]
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def make_log(path: Path, n: int = 6) -> list[bytes]:
    log = AuditLog(path)
    for i in range(n):
        log.append("sign", label="binance-main", exchange="binance", path="/api/v3/order", i=i)
    log.close()
    return path.read_bytes().split(b"\n")[:-1]


def write(path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    path.write_bytes(b"\n".join(lines) + end)
    return path


def found(path: Path, **kw) -> list[tuple[int, str]]:
    report = verify(path, **kw)
    assert report.ok == (not report.problems)
    return [(p.line, p.kind) for p in report.problems]


def record(line: bytes, **changes) -> bytes:
    obj = json.loads(line)
    obj.update(changes)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# -- writing ---------------------------------------------------------------------------


def test_line_layout_and_chain(tmp_path: Path):
    path = tmp_path / "audit" / "audit.log"
    log = AuditLog(path)
    log.append("sign", label="kraken-1", symbol="BTC/EUR", latency_ms=1.5, ok=True, tags=["a", "é"])
    log.append("operator", action="revoke", note="two\nlines")
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2  # a newline in a value stays escaped
    first, second = raw.split(b"\n")[:2]
    a, b = json.loads(first), json.loads(second)
    assert list(a) == ["seq", "ts", "event", "label", "symbol", "latency_ms", "ok", "tags", "prev"]
    assert (a["seq"], a["prev"], b["seq"], b["prev"]) == (1, ZERO_HASH, 2, sha(first))
    assert TS.fullmatch(a["ts"]) and b["note"] == "two\nlines"
    for line, obj in ((first, a), (second, b)):  # canonical form, non-ASCII kept as UTF-8
        assert line == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    assert "é".encode() in first
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert verify(path).ok and verify(path).head == sha(second)


@pytest.mark.parametrize("fields", [
    {"seq": 5}, {"ts": "x"}, {"prev": ZERO_HASH}, {"hash": "x"},  # the log's own names
    {"obj": object()}, {"nan": float("nan")}, {"set": {1}}, {"bad": "\ud800"},  # not JSON (or not UTF-8)
    {"big": "x" * 70_000},
])
def test_bad_fields_are_refused_and_nothing_is_written(tmp_path: Path, fields):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    with pytest.raises(ValueError):
        log.append("sign", **fields)
    with pytest.raises(ValueError):
        log.append("", label="x")
    assert path.read_bytes() == b""


def test_threads_append_one_chain(tmp_path: Path):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    threads = [threading.Thread(target=lambda t=t: [log.append("t", thread=t, i=i) for i in range(200)])
               for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify(path)
    assert report.ok and report.lines == 1600
    seqs = [json.loads(line)["seq"] for line in path.read_bytes().splitlines()]
    assert seqs == list(range(1, 1601))


WRITER = """
import sys, time
from pathlib import Path
from agent.audit import AuditLog
path, name, count, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
log = AuditLog(path)
while not go.exists():
    time.sleep(0.001)
for i in range(count):
    log.append("proc", writer=name, i=i)
"""


def test_processes_and_threads_append_one_chain(tmp_path: Path):
    path, go = tmp_path / "audit.log", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"p{n}", "200", str(go)], cwd=ROOT)
             for n in range(4)]
    log = AuditLog(path)  # this process appends at the same time, from two threads
    threads = [threading.Thread(target=lambda t=t: [log.append("proc", writer=f"t{t}", i=i) for i in range(100)])
               for t in range(2)]
    time.sleep(0.5)  # let the interpreters start, then release them together
    go.touch()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    report = verify(path)
    assert report.ok, report.problems
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 1001))
    for writer, count in [*((f"p{n}", 200) for n in range(4)), ("t0", 100), ("t1", 100)]:
        assert [r["i"] for r in records if r["writer"] == writer] == list(range(count))  # each once, in order


def test_forked_children_do_not_share_the_parents_lock(tmp_path: Path):
    # A child inherits the parent's descriptor, whose flock the parent's would not exclude.
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.append("start")
    children = []
    for w in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                for i in range(300):
                    log.append("fork", writer=w, i=i)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    for i in range(300):
        log.append("fork", writer="parent", i=i)
    assert [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children] == [0, 0, 0]
    report = verify(path)
    assert report.ok, report.problems[:3]
    assert report.lines == 1201


def test_verify_while_appending_sees_a_consistent_prefix(tmp_path: Path):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            log.append("sign", label="k", path="/api/v3/order")

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_until = time.monotonic() + 10
        while path.stat().st_size == 0 and time.monotonic() < wait_until:
            time.sleep(0.001)
        reports, end = [], time.monotonic() + 0.5
        while time.monotonic() < end:
            reports.append(verify(path))
    finally:
        stop.set()
        t.join()
    assert all(r.ok for r in reports), [r.problems[:1] for r in reports if not r.ok]
    assert len(reports) > 5 and reports[-1].lines > reports[0].lines > 0


def test_sigkill_loses_nothing_written(tmp_path: Path):
    path = tmp_path / "audit.log"
    script = "import sys\nfrom agent.audit import AuditLog\nlog = AuditLog(sys.argv[1])\nwhile True: log.append('x', i=1)\n"
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=ROOT)
    deadline = time.monotonic() + 30
    while (not path.exists() or path.stat().st_size < 50_000) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    report = verify(path)
    assert report.ok and report.lines > 100, report.problems
    AuditLog(path).append("after")
    assert verify(path).ok and verify(path).lines == report.lines + 1


def test_torn_tail_is_terminated_chained_and_stays_visible(tmp_path: Path):
    path = tmp_path / "audit.log"
    lines = make_log(path, 4)
    torn = record(lines[3], seq=5, prev=sha(lines[3]))[:40]  # a write cut short
    with path.open("ab") as f:
        f.write(torn)
    assert found(path) == [(5, "truncated")]
    log = AuditLog(path)
    log.append("after", n=1)
    log.append("after", n=2)
    raw = path.read_bytes().split(b"\n")
    assert raw[4] == torn
    new = json.loads(raw[5])
    assert (new["seq"], new["prev"]) == (6, sha(torn))  # the torn line counts once, its bytes are chained
    report = verify(path)
    assert [(p.line, p.kind) for p in report.problems] == [(5, "truncated")]
    assert "interrupted" in report.problems[0].detail and report.lines == 7


def test_a_damaged_last_line_is_chained_over_and_stays_reported(tmp_path: Path):
    path = tmp_path / "audit.log"
    lines = make_log(path, 3)
    write(path, lines[:2] + [b"garbage"])
    AuditLog(path).append("after")
    new = json.loads(path.read_bytes().split(b"\n")[3])
    assert (new["seq"], new["prev"]) == (4, sha(b"garbage"))  # the damaged line counts as one
    assert found(path) == [(3, "malformed")]


def test_full_disk_short_write_leaves_a_torn_line_the_next_append_repairs(tmp_path: Path):
    path = tmp_path / "audit.log"
    make_log(path, 3)
    limit = path.stat().st_size + 60  # room for part of the next line only
    script = (
        "import resource, signal, sys\nfrom agent.audit import AuditLog\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))\n"
        "log = AuditLog(sys.argv[1])\n"
        "try:\n    log.append('sign', label='x' * 100)\nexcept OSError as e:\n    print(type(e).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "OSError", out.stderr  # EFBIG after the short write
    assert path.stat().st_size == limit and found(path) == [(4, "truncated")]
    AuditLog(path).append("after")
    assert found(path) == [(4, "truncated")]
    assert json.loads(path.read_bytes().split(b"\n")[4])["seq"] == 5


def test_moved_or_deleted_log_is_followed_to_a_new_file(tmp_path: Path):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.append("a")
    path.rename(tmp_path / "audit.log.1")  # rotation: noticed within PATH_RECHECK
    time.sleep(AuditLog.PATH_RECHECK + 0.05)
    log.append("b")
    assert json.loads(path.read_bytes())["seq"] == 1  # a new chain in the new file
    assert verify(path).ok and verify(tmp_path / "audit.log.1").lines == 1
    path.unlink()  # deletion: noticed at once
    log.append("c")
    assert json.loads(path.read_bytes())["event"] == "c"


def test_append_cost_is_a_small_multiple_of_a_plain_write(tmp_path: Path):
    log = AuditLog(tmp_path / "audit.log")
    fields = dict(label="binance-main", exchange="binance", method="POST", path="/api/v3/order",
                  symbol="BTCUSDT", decision="allow", rule="default", latency_ms=0.41, bot="bot-1")
    log.append("sign", **fields)
    line = (tmp_path / "audit.log").read_bytes()
    fd = os.open(tmp_path / "plain.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    n, best_log, best_write = 2000, float("inf"), float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            log.append("sign", **fields)
        t1 = time.perf_counter()
        for _ in range(n):
            os.write(fd, line)
        t2 = time.perf_counter()
        best_log, best_write = min(best_log, (t1 - t0) / n), min(best_write, (t2 - t1) / n)
    os.close(fd)
    print(f"append {best_log * 1e6:.1f} us, os.write {best_write * 1e6:.1f} us, ratio {best_log / best_write:.1f}")
    assert best_log / best_write < 25  # generous: measured about 5x on a shared 2-core machine
    assert verify(tmp_path / "audit.log").ok


# -- verification: each kind of tampering at the right line -----------------------------


@pytest.fixture
def lines(tmp_path: Path) -> list[bytes]:
    return make_log(tmp_path / "orig.log", 6)


def test_edited_field_in_a_middle_line_is_that_line_modified(tmp_path: Path, lines):
    lines[2] = lines[2].replace(b'"i":2', b'"i":7')
    assert found(write(tmp_path / "x.log", lines)) == [(3, "modified")]


def test_edited_seq_or_prev_is_that_line_modified(tmp_path: Path, lines):
    seq = lines[:2] + [lines[2].replace(b'"seq":3', b'"seq":9')] + lines[3:]
    assert found(write(tmp_path / "a.log", seq)) == [(3, "modified")]
    prev = lines[:3] + [record(lines[3], prev="ab" * 32)] + lines[4:]
    assert found(write(tmp_path / "b.log", prev)) == [(4, "modified")]


def test_deleted_lines_are_reported_where_they_were(tmp_path: Path, lines):
    assert found(write(tmp_path / "a.log", lines[:2] + lines[3:])) == [(3, "deleted")]
    report = verify(write(tmp_path / "b.log", lines[:1] + lines[4:]))
    assert [(p.line, p.kind) for p in report.problems] == [(2, "deleted")]
    assert "3 line(s) missing between line 1 and line 2 (seq 2-4)" in report.problems[0].detail
    assert found(write(tmp_path / "c.log", lines[1:])) == [(1, "deleted")]


def test_inserted_lines_are_detected_even_with_a_correct_prev(tmp_path: Path, lines):
    forged = record(lines[3], i=99, prev=sha(lines[2]))  # chains to line 3, claims seq 4
    assert found(write(tmp_path / "a.log", lines[:3] + [forged] + lines[3:])) == [(4, "inserted")]
    bogus = record(lines[3], i=99, prev="cd" * 32)
    assert found(write(tmp_path / "b.log", lines[:3] + [bogus] + lines[3:])) == [(4, "inserted")]
    first = record(lines[0], i=99)  # seq 1, prev zero: a forged start
    assert found(write(tmp_path / "c.log", [first] + lines)) == [(1, "inserted")]
    assert found(write(tmp_path / "d.log", lines[:3] + [lines[2]] + lines[3:])) == [(4, "inserted")]  # a copy


def test_swapped_lines_are_reordered(tmp_path: Path, lines):
    swapped = lines[:2] + [lines[3], lines[2]] + lines[4:]
    assert found(write(tmp_path / "a.log", swapped)) == [(3, "reordered")]
    assert found(write(tmp_path / "b.log", [lines[1], lines[0]] + lines[2:])) == [(1, "reordered")]


def test_malformed_lines(tmp_path: Path, lines):
    assert found(write(tmp_path / "a.log", lines[:2] + [b"not json"] + lines[3:])) == [(3, "malformed")]
    merged = lines[:2] + [lines[2] + lines[3]] + lines[4:]  # a newline removed
    assert found(write(tmp_path / "b.log", merged)) == [(3, "malformed")]


def test_several_edits_report_each_break(tmp_path: Path, lines):
    lines[1] = lines[1].replace(b'"i":1', b'"i":8')
    lines[4] = lines[4].replace(b'"i":4', b'"i":9')
    assert found(write(tmp_path / "a.log", lines)) == [(2, "modified"), (5, "modified")]


def test_truncation_at_the_end_needs_the_recorded_head(tmp_path: Path, lines):
    head = sha(lines[-1])
    cut = write(tmp_path / "a.log", lines[:4])
    assert verify(cut).ok  # the limit: a shorter log is still a valid chain ...
    report = verify(cut, expect_head=head)  # ... unless checked against a recorded head
    assert [(p.line, p.kind) for p in report.problems] == [(4, "truncated")]
    assert report.problems[0].detail.startswith(f"truncated: head {head} not found")
    assert verify(tmp_path / "orig.log", expect_head=sha(lines[3])).ok  # the log grew after the record


def test_last_line_edit_needs_the_recorded_head(tmp_path: Path, lines):
    head = sha(lines[-1])
    edited = write(tmp_path / "a.log", lines[:5] + [lines[5].replace(b'"i":5', b'"i":6')])
    assert verify(edited).ok  # the documented limit: nothing after it vouches for the last line
    assert found(edited, expect_head=head) == [(6, "truncated")]


def test_verify_main_reports_for_an_operator(tmp_path: Path, lines):
    out = io.StringIO()
    assert verify_main(tmp_path / "orig.log", out) == 0
    assert out.getvalue() == f"audit log OK: 6 lines, head {sha(lines[-1])}\n"

    lines[2] = lines[2].replace(b'"i":2', b'"i":7')
    out = io.StringIO()
    assert verify_main(write(tmp_path / "bad.log", lines), out) == 1
    assert "1 problem(s) in 6 lines" in out.getvalue()
    assert "  line 3: modified: line 3 (seq 3) was altered" in out.getvalue()

    out = io.StringIO()
    assert verify_main(tmp_path / "orig.log", out, expect_head="ef" * 32) == 1
    assert f"line 6: truncated: truncated: head {'ef' * 32} not found" in out.getvalue()

    for path, expect_head, message in [
        (tmp_path / "missing.log", None, "audit log not found"),
        (tmp_path, None, "cannot read audit log"),
        (tmp_path / "orig.log", "not-a-hash", "64 hex characters"),
    ]:
        out = io.StringIO()
        assert verify_main(path, out, expect_head=expect_head) == 2
        assert message in out.getvalue()


def test_empty_log_is_ok(tmp_path: Path):
    path = tmp_path / "audit.log"
    AuditLog(path)
    report = verify(path)
    assert (report.ok, report.lines, report.head) == (True, 0, ZERO_HASH)


# -- property: any single-byte change is detected -----------------------------------------

_DIR = Path(tempfile.mkdtemp(prefix="audit-prop-"))  # hypothesis examples share it, not a fixture
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
_LINES = make_log(_DIR / "orig.log", 5)
_DATA = b"\n".join(_LINES) + b"\n"
_LAST_START = len(_DATA) - len(_LINES[-1]) - 1  # first byte of the last line


def _mutate(position: int, byte: int) -> Path:
    data = bytearray(_DATA)
    data[position] = byte if byte != data[position] else (byte + 1) % 256
    path = _DIR / "mutated.log"
    path.write_bytes(bytes(data))
    return path


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, len(_DATA) - 1).filter(lambda p: not _LAST_START <= p < len(_DATA) - 1),
       byte=st.integers(0, 255))
def test_any_byte_change_outside_the_head_line_is_detected(position: int, byte: int):
    assert not verify(_mutate(position, byte)).ok


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, len(_DATA) - 1), byte=st.integers(0, 255))
def test_any_byte_change_is_detected_against_the_recorded_head(position: int, byte: int):
    assert not verify(_mutate(position, byte), expect_head=sha(_LINES[-1])).ok


def test_a_group_append_writes_each_record_as_its_own_chained_line_in_one_write(tmp_path, monkeypatch):
    import agent.audit

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append("agent.start", version="x")
    writes: list[bytes] = []
    real = agent.audit._write_all
    monkeypatch.setattr(agent.audit, "_write_all", lambda fd, data: (writes.append(data), real(fd, data))[1])
    log.append_many([("sign", {"key": f"k{i}", "decision": "signed"}) for i in range(5)])
    log.append("sign", key="after")  # the cache of the group's head is what the next line chains to
    log.close()
    assert len(writes) == 2 and writes[0].count(b"\n") == 5
    lines = path.read_bytes().split(b"\n")[:-1]
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(range(1, 8))
    assert [r.get("key") for r in records[1:]] == ["k0", "k1", "k2", "k3", "k4", "after"]
    for before, record in zip(lines, records[1:]):
        assert record["prev"] == sha(before)
    report = verify(path)
    assert report.ok and report.lines == 7 and report.head == sha(lines[-1])


def test_a_group_with_one_record_that_cannot_be_encoded_writes_nothing(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    with pytest.raises(ValueError):
        log.append_many([("sign", {"key": "ok"}), ("sign", {"seq": 1})])  # a reserved name
    log.close()
    assert path.read_bytes() == b""
