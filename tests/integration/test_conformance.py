"""The tap's output is what Singer tools nobody on the project wrote accept, from both paths.

A table with every supported type and its edge values (tests/type_cases.py: NaN and the
infinities of real, double and numeric, dates and timestamps at and beyond the ends of RFC 3339's
range, BC, `24:00:00`, timetz offsets, negative and mixed intervals, arrays of them), snapshotted
and then changed in the log (insert, update, delete), through the fast paths and through the
SDK's record path. Each output goes to `singer-check-tap` (singer-tools 0.4.1) and to a JSON
Schema validation of every RECORD against its stream's SCHEMA with format checking
(tests/conformance.py).
"""

from __future__ import annotations

import pytest

from tests.conformance import schema_violations, singer_check_tap, strict_messages
from tests.tap_runner import TapRun, run_tap
from tests.type_cases import create_types_table, insert_types_row

SDK_PATH = {"TAP_PGCDC_FAST_OUTPUT": "0"}

# Numeric infinities exist from PostgreSQL 14 on (tests/type_cases.py runs on 12 too).
NUMERIC_EDGES = """
CREATE TABLE numeric_edges (id int PRIMARY KEY, n numeric, n_scaled numeric(10, 2), f real);
INSERT INTO numeric_edges VALUES
    (1, 'Infinity', 'NaN', 'Infinity'), (2, '-Infinity', 'NaN', '-Infinity'),
    (3, 'NaN', 'NaN', 'NaN'), (4, '1E-7', 0.5, '1e-45'), (5, NULL, NULL, NULL);
"""


def _both_checks(run: TapRun) -> str:
    run.check()
    assert schema_violations(run.raw_lines) == []
    return singer_check_tap(run.raw_lines)


@pytest.mark.parametrize("env", [{}, SDK_PATH], ids=["fast", "sdk"])
def test_snapshot_and_log_output_pass_singer_check_tap_and_validation(db, env) -> None:
    create_types_table(db.execute)
    db.execute(NUMERIC_EDGES)
    snapshot = run_tap(db.config(), env=env)
    report = _both_checks(snapshot)
    assert "record messages" in report
    assert len(snapshot.records("public-all_types")) == 2
    assert len(snapshot.records("public-numeric_edges")) == 5

    insert_types_row(db.execute, "all_types", 3)
    db.execute("INSERT INTO all_types (id) VALUES (4)")
    db.execute("UPDATE all_types SET c_int = 7, c_date = 'infinity' WHERE id = 1")
    db.execute("DELETE FROM all_types WHERE id = 2")
    db.execute("INSERT INTO numeric_edges SELECT id + 10, n, n_scaled, f FROM numeric_edges")
    db.execute("DELETE FROM numeric_edges WHERE id = 1")
    log = run_tap(db.config(), state=snapshot.final_state, env=env)
    _both_checks(log)
    records = log.records("public-all_types")
    assert [r["id"] for r in records] == [3, 4, 1, 2]
    assert records[2]["c_date"] == "9999-12-31" and records[3]["_sdc_deleted_at"] is not None
    edges = {r["id"]: r for r in log.records("public-numeric_edges")}
    assert edges[11] == {**edges[11], "n": "Infinity", "n_scaled": "NaN", "f": "Infinity"}
    assert edges[12] == {**edges[12], "n": "-Infinity", "n_scaled": "NaN", "f": "-Infinity"}
    assert edges[13] == {**edges[13], "n": "NaN", "n_scaled": "NaN", "f": "NaN"}


def test_the_checks_catch_what_they_are_for(db) -> None:
    """A bare NaN, a value against its format, a string outside the pattern: each caught."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, f float8, d date)")
    db.execute("INSERT INTO t VALUES (1, 1.5, '2024-01-01')")
    run = run_tap(db.config()).check()
    lines = run.raw_lines
    line = next(i for i, text in enumerate(lines) if '"type":"RECORD"' in text)

    def broken(old: str, new: str) -> list[str]:
        assert old in lines[line]
        return [*lines[:line], lines[line].replace(old, new), *lines[line + 1 :]]

    for old, new in [('"f":1.5', '"f":NaN'), ('"d":"2024-01-01"', '"d":"-infinity"')]:
        with pytest.raises(AssertionError, match="rejected"):
            singer_check_tap(broken(old, new))
    with pytest.raises(ValueError, match="not JSON"):
        strict_messages(broken('"f":1.5', '"f":Infinity'))
    assert schema_violations(broken('"d":"2024-01-01"', '"d":"0000-01-01"'))
    assert schema_violations(broken('"d":"2024-01-01"', '"d":"2024-01-01T00:00:00"'))
    assert schema_violations(broken('"f":1.5', '"f":"1.5"'))
    assert schema_violations(lines) == []
