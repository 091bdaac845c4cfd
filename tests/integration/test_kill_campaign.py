"""Crash safety: the tap is killed at random points while a workload changes the source.

A seeded random workload (inserts, updates, deletes, primary key changes, unchanged TOAST values,
REPLICA IDENTITY FULL, TRUNCATE, rolled-back work, small and large transactions, tables created
along the way, whose snapshots run among log reads) runs against the real server while the real `tap-pgcdc` command feeds a target. The tap
is killed (mostly SIGKILL, sometimes SIGTERM) at random points: while starting, mid-snapshot,
mid-transaction, between commits. The target stores what a real one would: since the tap flushes
stdout at each STATE, a killed tap's output after its last STATE may never arrive, so the target
applies messages only up to and including the last complete STATE, and hands that state to the
next run. After the last run the target must equal the source, row for row.

The fast campaign runs in the default suite; the long one is marked slow (`pytest -m slow`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TestDb
from tests.memory_target import META, MemoryTarget

REPO = Path(__file__).resolve().parents[2]

# Table -> key columns, for the comparison at the end (plus late1, late2, ... keyed by id).
TABLES: dict[str, tuple[str, ...]] = {
    "acct": ("id",),
    "doc": ("id",),
    "pair": ("a", "b"),
    "ledger": ("id",),
    "fullident": ("id",),
    "events": ("id",),
}

SCHEMA_SQL = """
CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL,
                   flag boolean, note text);
INSERT INTO acct SELECT g, 'owner ' || g, g * 1.25, g % 2 = 0, NULL FROM generate_series(1, 4000) g;
-- Bodies of ~9 kB of hex digits are stored out of line (TOAST): updates that leave them alone
-- do not carry them in the log.
CREATE TABLE doc (id bigint PRIMARY KEY, title text, body text);
INSERT INTO doc SELECT g, 'title ' || g,
    (SELECT string_agg(md5(g::text || '-' || i), '') FROM generate_series(1, 280) i)
    FROM generate_series(1, 150) g;
CREATE TABLE pair (a int, b int, v text, PRIMARY KEY (a, b));
INSERT INTO pair SELECT g / 10, g % 10, 'v' || g FROM generate_series(0, 1999) g;
CREATE TABLE ledger (id bigint PRIMARY KEY, acct int, amount numeric(12,2));
INSERT INTO ledger SELECT g, g % 4000, g / 7.0 FROM generate_series(1, 3000) g;
CREATE TABLE fullident (id int PRIMARY KEY, v text, n int);
ALTER TABLE fullident REPLICA IDENTITY FULL;
INSERT INTO fullident SELECT g, 'f' || g, g FROM generate_series(1, 800) g;
CREATE TABLE events (id int PRIMARY KEY, kind text);
INSERT INTO events SELECT g, 'boot' FROM generate_series(1, 300) g;
"""

LATE_SQL = """
CREATE TABLE {name} (id int PRIMARY KEY, v text);
INSERT INTO {name} SELECT g, 'late ' || g FROM generate_series(1, 8000) g;
"""


# --- the workload ---------------------------------------------------------------------------------


class Workload(threading.Thread):
    """Random transactions from a seeded generator, until stopped; the only writer of the data."""

    def __init__(self, db: TestDb, seed: int) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.late_wanted = 0  # tables late1..lateN to create (set by the campaign)
        self.late: list[str] = []  # created so far
        self.counts: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.next_id = 1_000_000  # new keys: never collide with the seeded rows

    def run(self) -> None:
        conn = self.db.connect(autocommit=False)
        try:
            while not self.stop_event.is_set():
                if len(self.late) < self.late_wanted:
                    name = f"late{len(self.late) + 1}"
                    self._transaction(conn, "create table", [(LATE_SQL.format(name=name), None)])
                    self.late.append(name)
                self._one(conn)
                time.sleep(self.rng.uniform(0, 0.02))
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            conn.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=60)
        if self.error is not None:
            raise self.error

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _transaction(
        self, conn: Any, kind: str, statements: Sequence[tuple[str, Any]], *, rollback: bool = False
    ) -> None:
        with conn.cursor() as cur:
            for sql, params in statements:
                cur.execute(sql, params)
        if rollback:
            conn.rollback()
        else:
            conn.commit()
        self.counts[kind] += 1

    def _one(self, conn: Any) -> None:
        rng = self.rng
        pivot = rng.randint(1, 4000)
        choice = rng.random()
        if choice < 0.16:
            rows = [
                (self._new_id(), f"new {rng.random():.6f}", Decimal(rng.randint(0, 10**6)) / 100)
            ]
            rows += [
                (self._new_id(), "batch", Decimal(rng.randint(0, 999)))
                for _ in range(rng.randint(0, 4))
            ]
            self._transaction(
                conn,
                "insert",
                [
                    ("INSERT INTO acct (id, owner, balance, flag) VALUES (%s, %s, %s, true)", row)
                    for row in rows
                ],
            )
        elif choice < 0.30:
            self._transaction(
                conn,
                "update",
                [
                    (
                        "UPDATE acct SET balance = balance + %s, note = %s WHERE id BETWEEN %s AND %s",
                        (
                            Decimal(rng.randint(-500, 500)) / 100,
                            f"n{rng.randint(0, 99)}",
                            pivot,
                            pivot + rng.randint(0, 30),
                        ),
                    )
                ],
            )
        elif choice < 0.38:
            self._transaction(
                conn,
                "delete",
                [
                    (
                        "DELETE FROM acct WHERE id BETWEEN %s AND %s",
                        (pivot, pivot + rng.randint(0, 3)),
                    )
                ],
            )
        elif choice < 0.46:
            # Primary key changes: the old key must disappear from the target.
            self._transaction(
                conn,
                "key change",
                [
                    (
                        "UPDATE acct SET id = %s WHERE id = (SELECT min(id) FROM acct WHERE id >= %s)",
                        (self._new_id(), pivot),
                    ),
                    (
                        "UPDATE pair SET b = b + 10 WHERE a = %s AND b = (SELECT max(b) FROM pair WHERE a = %s)",
                        (pivot % 200, pivot % 200),
                    ),
                ],
            )
        elif choice < 0.52:
            # Large transactions: thousands of changes between one BEGIN and COMMIT.
            if rng.random() < 0.5:
                start = self._new_id()
                self.next_id += 1499
                self._transaction(
                    conn,
                    "large insert",
                    [
                        (
                            "INSERT INTO ledger SELECT g, g %% 4000, g / 3.0 FROM generate_series(%s, %s) g",
                            (start, start + 1499),
                        )
                    ],
                )
            else:
                self._transaction(
                    conn,
                    "large update",
                    [
                        (
                            "UPDATE acct SET balance = balance + 1, flag = NOT flag WHERE id %% 3 = %s",
                            (pivot % 3,),
                        )
                    ],
                )
        elif choice < 0.64:
            doc_id = rng.randint(1, 170)
            kind = rng.random()
            statements: list[tuple[str, Any]]
            if kind < 0.6:  # the TOASTed body is unchanged: not in the log, read back by key
                statements = [
                    ("UPDATE doc SET title = %s WHERE id = %s", (f"t{rng.random():.5f}", doc_id))
                ]
            elif kind < 0.8:
                statements = [
                    (
                        "INSERT INTO doc VALUES (%s, 'fresh', (SELECT string_agg(md5(%s || i::text), '') "
                        "FROM generate_series(1, 280) i)) ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
                        (doc_id, str(rng.random())),
                    )
                ]
            else:
                statements = [("DELETE FROM doc WHERE id = %s", (doc_id,))]
            self._transaction(conn, "toast", statements)
        elif choice < 0.74:
            fid = rng.randint(1, 900)
            self._transaction(
                conn,
                "replica identity full",
                [
                    (
                        "UPDATE fullident SET n = n + 1, v = %s WHERE id = %s",
                        (f"f{rng.random():.4f}", fid),
                    ),
                    ("DELETE FROM fullident WHERE id = %s", (fid + 7,)),
                    (
                        "INSERT INTO fullident VALUES (%s, 'again', 0) ON CONFLICT DO NOTHING",
                        (fid + 7,),
                    ),
                ],
            )
        elif choice < 0.80:
            # Work that never commits, in whole or in part: none of it may reach the target.
            self._transaction(
                conn,
                "rolled back",
                [
                    (
                        "UPDATE acct SET owner = 'never' WHERE id BETWEEN %s AND %s",
                        (pivot, pivot + 50),
                    ),
                    ("DELETE FROM pair WHERE a = %s", (pivot % 200,)),
                ],
                rollback=True,
            )
            self._transaction(
                conn,
                "savepoint",
                [
                    ("INSERT INTO events VALUES (%s, 'kept')", (self._new_id(),)),
                    ("SAVEPOINT s", None),
                    ("DELETE FROM acct WHERE id BETWEEN %s AND %s", (pivot, pivot + 100)),
                    ("ROLLBACK TO SAVEPOINT s", None),
                ],
            )
        elif choice < 0.83:
            # TRUNCATE empties the table in the target (ACTIVATE_VERSION), then life goes on.
            self._transaction(
                conn,
                "truncate",
                [
                    ("INSERT INTO events VALUES (%s, 'doomed')", (self._new_id(),)),
                    ("TRUNCATE events", None),
                    ("INSERT INTO events VALUES (%s, 'after truncate')", (self._new_id(),)),
                ],
            )
        elif choice < 0.93:
            self._transaction(
                conn,
                "mixed",
                [
                    (
                        "INSERT INTO events VALUES (%s, %s)",
                        (self._new_id(), f"k{rng.randint(0, 9)}"),
                    ),
                    ("UPDATE pair SET v = %s WHERE a = %s", (f"m{rng.random():.4f}", pivot % 200)),
                    ("DELETE FROM ledger WHERE id = %s", (pivot,)),
                    (
                        "UPDATE acct SET owner = %s WHERE id = %s",
                        (f"o{rng.randint(0, 999)}", pivot),
                    ),
                ],
            )
        elif self.late:
            late = rng.choice(self.late)
            self._transaction(
                conn,
                "late tables",
                [
                    (
                        f"UPDATE {late} SET v = %s WHERE id = %s",
                        (f"l{rng.random():.4f}", pivot * 2),
                    ),
                    (f"INSERT INTO {late} VALUES (%s, 'new')", (self._new_id(),)),
                    (f"DELETE FROM {late} WHERE id = %s", (pivot * 2 + 1,)),
                ],
            )


# --- a tap run that can be killed -------------------------------------------------------------------


@dataclass
class KillableRun:
    """The real `tap-pgcdc` command in a subprocess, its stdout and stderr read as they come."""

    config: dict[str, Any]
    state: dict[str, Any] | None = None
    proc: subprocess.Popen[bytes] = field(init=False)
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    partial: str = ""  # an incomplete last line of stdout, if the tap died mid-write

    def __post_init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="tap-pgcdc-kill-")
        tmp = Path(self._dir.name)
        cmd = [sys.executable, "-m", "tap_pgcdc", "--config", str(tmp / "config.json")]
        (tmp / "config.json").write_text(json.dumps(self.config))
        if self.state is not None:
            (tmp / "state.json").write_text(json.dumps(self.state))
            cmd += ["--state", str(tmp / "state.json")]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy()
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        pending = b""
        while chunk := self.proc.stdout.read1(65536):  # type: ignore[attr-defined]
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self.stdout.extend(line.decode() for line in lines if line.strip())
        self.partial = pending.decode(errors="replace")

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.stderr))

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until `predicate()` holds or the process has exited; whether it holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.proc.poll() is not None:
                return bool(predicate())
            time.sleep(0.002)
        return bool(predicate())

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=30)
        self._dir.cleanup()
        return code

    def kill(self, sig: int = signal.SIGKILL) -> bool:
        """Send `sig` unless the process has already exited; whether it was sent."""
        if self.proc.poll() is not None:
            return False
        self.proc.send_signal(sig)
        return True

    def stored_state(self) -> dict[str, Any] | None:
        """The last complete STATE's value: what the target stores as the next run's state."""
        states = [m for m in self.stored_messages() if m["type"] == "STATE"]
        return states[-1]["value"] if states else None

    def stored_messages(self) -> list[dict[str, Any]]:
        """What the target stores: every message up to and including the last complete STATE."""
        messages = [json.loads(line, parse_float=Decimal) for line in self.stdout]
        last_state = max((i for i, m in enumerate(messages) if m["type"] == "STATE"), default=-1)
        return messages[: last_state + 1]

    def discarded(self) -> list[dict[str, Any]]:
        """Complete messages after the last STATE: lost with the process."""
        messages = [json.loads(line, parse_float=Decimal) for line in self.stdout]
        last_state = max((i for i, m in enumerate(messages) if m["type"] == "STATE"), default=-1)
        return messages[last_state + 1 :]

    def phase(self) -> str:
        """How far the run had got, from its log lines."""
        marks = [
            ("Log read complete", "finishing"),
            ("Reading slot", "reading the log"),
            ("Beginning sync of", "snapshot"),
            ("Snapshot of", "snapshot"),
        ]
        for text, phase in marks:
            if self.saw(text):
                return phase
        return "starting"


# --- the campaign -----------------------------------------------------------------------------------


@dataclass
class CampaignResult:
    kills: int = 0
    completed_runs: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    signals: Counter[str] = field(default_factory=Counter)
    mid_transaction: int = 0  # killed in the log phase with records after the last STATE
    discarded_records: int = 0
    rows_compared: int = 0
    rows_lost: int = 0
    rows_extra: int = 0
    rows_different: int = 0
    workload: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.kills} kill points ({dict(self.signals)}; phases {dict(self.phases)}; "
            f"{self.mid_transaction} mid-transaction with {self.discarded_records} records "
            f"discarded), {self.completed_runs} runs completed, {self.rows_compared} rows compared, "
            f"{self.rows_lost} lost, {self.rows_extra} extra, {self.rows_different} different; "
            f"workload {sum(self.workload.values())} transactions {dict(self.workload)}; "
            f"{self.seconds:.0f} s"
        )


def choose_trigger(rng: random.Random) -> tuple[str, float]:
    """Where the next run is killed: after a log line, an output line, or a delay; or not at all."""
    roll = rng.random()
    if roll < 0.12:
        return ("none", 0)
    if roll < 0.35:
        return ("snapshot", rng.randint(1, 4000))
    if roll < 0.65:
        return ("log", rng.uniform(0, 1.2))
    if roll < 0.85:
        return ("lines", rng.randint(1, 600))
    return ("seconds", rng.uniform(0.5, 3.5))


def wait_for_trigger(run: KillableRun, kind: str, amount: float) -> None:
    """Return when the run has reached the chosen kill point (or has exited)."""
    if kind == "snapshot":  # `amount` output lines (25 records and a STATE a chunk) into it
        run.wait_for(lambda: run.saw("Beginning sync of"), 60)
        start = len(run.stdout)
        run.wait_for(lambda: len(run.stdout) >= start + amount, 60)
    elif kind == "log":
        run.wait_for(lambda: run.saw("Reading slot"), 60)
        time.sleep(amount)
    elif kind == "lines":
        run.wait_for(lambda: len(run.stdout) >= amount, 60)
    elif kind == "seconds":
        run.wait_for(lambda: False, amount)


def run_campaign(db: TestDb, *, seed: int, kill_points: int) -> CampaignResult:
    result = CampaignResult()
    started = time.monotonic()
    rng = random.Random(seed)
    db.execute(SCHEMA_SQL)
    # Small chunks: many STATEs to resume from, and snapshots long enough to be killed in.
    config = db.config(snapshot_chunk_size=25, state_interval_seconds=0)
    target = MemoryTarget()
    stored_bookmarks: dict[str, int] = {}
    workload = Workload(db, seed)
    workload.start()
    try:
        cycles = 0
        while result.kills < kill_points:
            cycles += 1
            assert cycles < kill_points * 4 + 20, f"no progress: {result.summary()}"
            # Every few kill points a new table: its snapshot runs while the others read the log.
            workload.late_wanted = 1 + result.kills // 6
            kind, amount = choose_trigger(rng)
            if snapshot_pending(target.state, workload):
                if rng.random() < 0.6:  # snapshots are short: aim at them when there is one
                    kind, amount = "snapshot", rng.randint(1, 4000)
            elif kind == "snapshot":
                kind, amount = "log", rng.uniform(0, 1.2)
            run = KillableRun(config, target.state)
            wait_for_trigger(run, kind, amount)
            sig = signal.SIGTERM if rng.random() < 0.15 else signal.SIGKILL
            phase = run.phase()
            killed = kind != "none" and run.kill(sig)
            code = run.finish()
            if killed and code in (-signal.SIGKILL, -signal.SIGTERM, 128 + signal.SIGTERM, 0):
                # SIGTERM lets the tap stop cleanly (exit 143; -15 before its handler is set up);
                # either way it did not finish its work. 0: the run was ending on its own.
                result.kills += 1
                result.phases[phase] += 1
                result.signals[signal.Signals(sig).name] += 1
                lost = [m for m in run.discarded() if m["type"] == "RECORD"]
                if phase == "reading the log" and lost:
                    result.mid_transaction += 1
                result.discarded_records += len(lost)
            else:
                assert code == 0, (
                    f"tap exited {code} ({kind} trigger):\n{''.join(run.stderr[-30:])}"
                )
                result.completed_runs += 1
            target.apply(run.stored_messages())
            check_bookmarks_move_forward(target.state, stored_bookmarks)
        workload.stop()
        result.workload = workload.counts
        # The workload has stopped: runs without kills catch up with everything it did.
        for _ in range(3):
            final = KillableRun(config, target.state)
            assert final.finish() == 0, "".join(final.stderr[-30:])
            target.apply(final.stored_messages())
            if not [m for m in final.stdout if '"RECORD"' in m]:
                break
        compare(db, target, result)
        check_slot_confirms_only_stored_positions(db, target)
    finally:
        workload.stop_event.set()
    result.seconds = time.monotonic() - started
    return result


def snapshot_pending(state: dict[str, Any] | None, workload: Workload) -> bool:
    """Whether the next run starts or resumes a snapshot."""
    bookmarks = (state or {}).get("bookmarks") or {}
    tables = [*TABLES, *workload.late]
    return any(
        "snapshot" in bookmarks.get(f"public-{t}", {})
        or "lsn" not in bookmarks.get(f"public-{t}", {})
        for t in tables
    )


def check_bookmarks_move_forward(state: dict[str, Any] | None, seen: dict[str, int]) -> None:
    """A stored state never moves a stream's position backwards (that would replay or skip)."""
    from tap_pgcdc.pg.lsn import parse_lsn

    for stream, bookmark in ((state or {}).get("bookmarks") or {}).items():
        if bookmark.get("lsn") is None:
            continue
        lsn = parse_lsn(bookmark["lsn"])
        assert lsn >= seen.get(stream, 0), f"{stream} went back from {seen[stream]} to {lsn}"
        seen[stream] = lsn


def compare(db: TestDb, target: MemoryTarget, result: CampaignResult) -> None:
    """Every row of every table, source against target."""
    conn = db.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'late%%'")
        late = {name: ("id",) for (name,) in cur.fetchall()}
    try:
        for table, key in {**TABLES, **late}.items():
            with conn.cursor() as cur:
                cur.execute(f"SELECT * FROM {table} ORDER BY {', '.join(key)}")
                names = [d.name for d in cur.description]
                source = {
                    tuple(row[names.index(k)] for k in key): dict(zip(names, row, strict=True))
                    for row in cur.fetchall()
                }
            stored = {
                k: {c: v for c, v in row.items() if c not in META}
                for k, row in target.tables[f"public-{table}"].rows.items()
            }
            result.rows_compared += len(source)
            result.rows_lost += len(source.keys() - stored.keys())
            result.rows_extra += len(stored.keys() - source.keys())
            result.rows_different += sum(
                1 for k in source.keys() & stored.keys() if source[k] != stored[k]
            )
    finally:
        conn.close()
    assert (result.rows_lost, result.rows_extra, result.rows_different) == (0, 0, 0), (
        result.summary()
    )


def check_slot_confirms_only_stored_positions(db: TestDb, target: MemoryTarget) -> None:
    from tap_pgcdc.pg.lsn import parse_lsn

    [(confirmed,)] = db.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (db.config()["slot_name"],),
    )
    assert target.state is not None
    lowest = min(parse_lsn(b["lsn"]) for b in target.state["bookmarks"].values())
    assert parse_lsn(confirmed) <= lowest


def test_killed_at_random_points_the_target_converges(db: TestDb) -> None:
    result = run_campaign(db, seed=20240611, kill_points=8)
    print("kill campaign (fast):", result.summary())


@pytest.mark.slow
@pytest.mark.timeout(1500)  # minutes of work; more beside another test worker on 2 cores
def test_killed_at_many_random_points_the_target_converges(db: TestDb) -> None:
    result = run_campaign(db, seed=7, kill_points=60)
    print("kill campaign (slow):", result.summary())
    assert result.phases["snapshot"] >= 5
    assert result.phases["reading the log"] >= 15
    assert result.mid_transaction >= 3
