"""The read loop driven by a fake transport, sink and clock: whole outcomes, byte fixtures.

The fakes are in `fake_log`. Each test asserts the exact sequence of status updates and sink
calls the loop makes for a scripted log.
"""

from __future__ import annotations

import logging
import typing as t

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_pgcdc.errors import ProtocolError
from tap_pgcdc.replication.protocol import XLOGDATA_HEADER_SIZE, keepalive
from tap_pgcdc.replication.reader import (
    CAUGHT_UP,
    OUT_OF_TIME,
    ReaderSettings,
    ReadLoop,
    ReadSummary,
    StreamChanges,
)
from tests.unit import pgoutput_build as pg
from tests.unit.fake_log import (
    ASK,
    CONFIRM,
    REL_A,
    REL_B,
    REL_X,
    SERVER_LSN,
    A,
    B,
    FakeClock,
    FakeSink,
    NotingTransport,
    Script,
    Sleep,
    begin,
    commit,
    insert,
    relation,
    run,
    transaction,
    w,
)

# --- transaction boundaries and what reaches the sink ---------------------------------------


def test_a_transaction_reaches_the_sink_and_its_state_follows_the_commit() -> None:
    result = run(
        transaction(
            0x200,
            0x208,
            relation(REL_A, "a"),
            insert(REL_A, "1", "one"),
            w(pg.update(REL_A, None, None, ["1", "uno"])),
            w(pg.update(REL_A, ["1", None], "K", ["2", "uno"])),
            w(pg.delete(REL_A, ["2", None], "K")),
            w(pg.truncate(0, [REL_A]), 0x1F0),
        ),
        stop_lsn=0x208,
    )
    assert result.events == [
        CONFIRM,
        ("relation", "public", "a"),
        ("insert", A, ("1", "one"), 0x200),
        ("update", A, None, ("1", "uno"), 0x200),
        ("update", A, ("1", None), ("2", "uno"), 0x200),
        ("delete", A, ("2", None), 0x200),
        ("truncate", A, 0x200, 0x1F0),  # the TRUNCATE's own position, from the frame
        ("state", {A: 0x208, B: 0x208}),
    ]
    assert str(result.summary) == ("1 transactions, 5 records, position 0/208, stopped: caught up")
    # Per stream, for the run report: the key change's old row is a deletion too.
    assert result.summary.streams == {
        A: StreamChanges(changes=5, deletes=2, truncates=1),
        B: StreamChanges(),
    }


def test_two_truncates_in_one_transaction_reach_the_sink_with_their_own_positions() -> None:
    """Each TRUNCATE's version must differ: the second drops the row inserted between them."""
    result = run(
        transaction(
            0x300,
            0x308,
            relation(REL_A, "a"),
            w(pg.truncate(0, [REL_A]), 0x2A0),
            insert(REL_A, "1", "between"),
            w(pg.truncate(0, [REL_A]), 0x2C0),
            insert(REL_A, "2", "after"),
        ),
        stop_lsn=0x308,
    )
    assert result.events == [
        CONFIRM,
        ("relation", "public", "a"),
        ("truncate", A, 0x300, 0x2A0),
        ("insert", A, ("1", "between"), 0x300),
        ("truncate", A, 0x300, 0x2C0),
        ("insert", A, ("2", "after"), 0x300),
        ("state", {A: 0x308, B: 0x308}),
    ]


def test_the_fast_path_takes_whole_rows_and_old_keys_the_general_path_the_rest() -> None:
    result = run(
        transaction(
            0x200,
            0x208,
            relation(REL_A, "a"),
            insert(REL_A, "1", "one"),
            w(pg.update(REL_A, None, None, ["1", "uno"])),
            w(pg.update(REL_A, ["1", "uno"], "O", ["2", "uno"])),  # an old row: general path
            w(pg.delete(REL_A, ["2", None], "K")),
            w(pg.delete(REL_A, ["3", "tres"], "O")),
        ),
        stop_lsn=0x208,
        fast=[A],
    )
    assert result.events == [
        CONFIRM,
        ("relation", "public", "a"),
        ("fast", A, "I", False, False, 0x200),
        ("fast", A, "U", False, False, 0x200),
        ("update", A, ("1", "uno"), ("2", "uno"), 0x200),
        ("fast", A, "D", True, True, 0x200),
        ("fast", A, "D", True, False, 0x200),
        ("state", {A: 0x208, B: 0x208}),
    ]
    assert result.summary.records == 6
    assert result.summary.streams[A] == StreamChanges(changes=6, deletes=3)


def test_changes_of_relations_nothing_follows_are_dropped_but_still_decoded() -> None:
    ignored = run(
        transaction(
            0x200,
            0x208,
            relation(REL_X, "x"),
            insert(REL_X, "1", "one"),
            insert(REL_B, "1", "one"),  # no Relation message seen for it in this session
        ),
        stop_lsn=0x208,
        fast=[A, B],
    )
    assert ignored.events == [
        CONFIRM,
        ("relation", "public", "x"),
        ("state", {A: 0x208, B: 0x208}),
    ]
    assert ignored.summary.records == 0
    with pytest.raises(ProtocolError, match="Insert message truncated"):
        run(
            transaction(0x200, 0x208, relation(REL_X, "x"), insert(REL_X, "1")[:-2]),
            stop_lsn=0x208,
        )


def test_a_change_outside_a_transaction_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="Insert message outside a transaction"):
        run([relation(REL_A, "a"), insert(REL_A, "1", "one")], stop_lsn=0x208)


# --- skipping what a stream already has ------------------------------------------------------


def test_a_stream_skips_transactions_that_committed_before_its_bookmark() -> None:
    result = run(
        [
            *transaction(
                0x200,  # before A's bookmark: only B's changes are new
                0x210,
                relation(REL_A, "a"),
                relation(REL_B, "b"),
                insert(REL_A, "1", "one"),
                insert(REL_B, "1", "one"),
                w(pg.truncate(0, [REL_A, REL_B]), 0x1F8),
            ),
            *transaction(0x300, 0x310, insert(REL_A, "2", "two"), insert(REL_B, "2", "two")),
        ],
        stop_lsn=0x310,
        positions={A: 0x300, B: 0x100},
        fast=[A, B],
        state_interval_seconds=0,
    )
    assert result.events == [
        CONFIRM,
        ("relation", "public", "a"),  # relations always reach the sink: later changes need them
        ("relation", "public", "b"),
        ("fast", B, "I", False, False, 0x200),
        ("truncate", B, 0x200, 0x1F8),
        ("state", {B: 0x210}),  # A's bookmark is later than this boundary: left as it is
        ("fast", A, "I", False, False, 0x300),  # committed at A's bookmark: not skipped
        ("fast", B, "I", False, False, 0x300),
        ("state", {A: 0x310, B: 0x310}),
    ]
    assert str(result.summary) == ("2 transactions, 3 records, position 0/310, stopped: caught up")


# --- STATE only at boundaries, at most every state_interval_seconds -------------------------


def test_state_waits_for_the_commit_however_long_the_transaction_takes() -> None:
    result = run(
        [
            *transaction(0x200, 0x208, relation(REL_A, "a"), insert(REL_A, "1", "one")),
            Sleep(1),  # not yet state_interval_seconds after the start: no STATE
            *transaction(0x300, 0x308, insert(REL_A, "2", "two")),
            begin(0x400),
            Sleep(20),  # due long ago, but inside a transaction
            insert(REL_A, "3", "three"),
            None,  # idle inside a transaction: no reply request, no deadline
            keepalive(0x5000),  # inside a transaction: not a boundary, even past stop_lsn
            insert(REL_A, "4", "four"),
            commit(0x400, 0x408),  # a boundary 21 s after the last STATE
            *transaction(0x500, 0x508, insert(REL_A, "5", "five")),
            keepalive(0x600),
        ],
        stop_lsn=0x600,
        positions={A: 0x100},
    )
    assert result.events == [
        CONFIRM,
        ("relation", "public", "a"),
        ("insert", A, ("1", "one"), 0x200),
        ("insert", A, ("2", "two"), 0x300),
        CONFIRM,  # the status interval passed: a status update, confirming the same position
        ("insert", A, ("3", "three"), 0x400),
        ("insert", A, ("4", "four"), 0x400),
        ("state", {A: 0x408}),
        ("insert", A, ("5", "five"), 0x500),
        ("state", {A: 0x600}),  # the stop: a keepalive between transactions
    ]
    assert result.summary.stopped == CAUGHT_UP


def test_no_new_state_when_nothing_moved_except_the_final_one() -> None:
    result = run(
        [keepalive(0x100), Sleep(6), keepalive(0x100), Sleep(6), keepalive(0x200)],
        stop_lsn=0x200,
        positions={A: 0x100},
        status_interval_seconds=60,
    )
    assert result.events == [CONFIRM, ("state", {A: 0x200})]


# --- the stop position ------------------------------------------------------------------------


def test_the_read_stops_at_the_first_commit_at_or_past_the_stop_position() -> None:
    later = transaction(0x300, 0x308, insert(REL_A, "2", "two"))
    result = run(
        [
            *transaction(0x100, 0x108, relation(REL_A, "a")),
            *transaction(0x200, 0x208, insert(REL_A, "1", "one")),
            *later,
        ],
        stop_lsn=0x201,
        positions={A: 0x100},
    )
    assert result.events == [
        CONFIRM,
        ("relation", "public", "a"),
        ("insert", A, ("1", "one"), 0x200),
        ("state", {A: 0x208}),
    ]
    assert result.transport.script == later  # nothing read past the stop
    assert result.summary.position == 0x208


def test_a_keepalive_between_transactions_at_the_stop_position_ends_the_read() -> None:
    result = run([keepalive(0x180), keepalive(0x200)], stop_lsn=0x200, positions={A: 0x100})
    assert result.events == [CONFIRM, ("state", {A: 0x200})]
    assert str(result.summary) == "0 transactions, 0 records, position 0/200, stopped: caught up"


# --- keepalives and status updates ------------------------------------------------------------


def test_a_reply_request_is_answered_with_confirm_lsn_never_the_position_read() -> None:
    result = run(
        [
            *transaction(0x800, 0x808, relation(REL_A, "a"), insert(REL_A, "1", "one")),
            keepalive(0x900, reply=True),
            begin(0xA00),
            keepalive(0xA80, reply=True),  # inside a transaction: answered all the same
            commit(0xA00, 0xA08),
            keepalive(0xB00, reply=True),
        ],
        stop_lsn=0xB00,
        positions={A: 0x100},
    )
    assert result.events == [
        CONFIRM,
        ("relation", "public", "a"),
        ("insert", A, ("1", "one"), 0x800),
        CONFIRM,
        CONFIRM,
        CONFIRM,
        ("state", {A: 0xB00}),
    ]


def test_idle_reads_ask_the_server_once_and_keep_the_status_interval() -> None:
    result = run(
        [None] * 21 + [keepalive(0x200)],
        stop_lsn=0x200,
        positions={A: 0x100},
        idle_poll_seconds=0.5,
        status_interval_seconds=10,
    )
    # Idle from the first poll: one reply request, then only the periodic status (at 10.5 s).
    assert result.events == [CONFIRM, ASK, CONFIRM, ("state", {A: 0x200})]


def test_a_frame_ends_the_wait_for_a_reply_and_the_next_idle_read_asks_again() -> None:
    result = run(
        [None, keepalive(0x150), None, None, keepalive(0x200)],
        stop_lsn=0x200,
        positions={A: 0x100},
    )
    assert result.events == [CONFIRM, ASK, ASK, ("state", {A: 0x200})]


# --- max_run_seconds ---------------------------------------------------------------------------


def test_max_run_seconds_ends_an_idle_read() -> None:
    result = run(
        [None] * 6, stop_lsn=0x900, positions={A: 0x100}, max_run_seconds=3, idle_poll_seconds=0.5
    )
    assert result.events == [CONFIRM, ASK, ("state", {})]
    assert str(result.summary) == (
        "0 transactions, 0 records, position 0/100, stopped: max_run_seconds reached"
    )


def test_max_run_seconds_waits_for_the_open_transaction_to_commit() -> None:
    result = run(
        [
            *transaction(0x100, 0x108, relation(REL_A, "a")),
            begin(0x200),
            Sleep(5),
            insert(REL_A, "1", "one"),
            None,
            commit(0x200, 0x208),
            *transaction(0x300, 0x308, insert(REL_A, "2", "two")),
        ],
        stop_lsn=0x900,
        positions={A: 0x100},
        max_run_seconds=3,
    )
    assert result.events == [
        CONFIRM,
        ("relation", "public", "a"),
        ("insert", A, ("1", "one"), 0x200),
        ("state", {A: 0x208}),
    ]
    assert result.summary.stopped == OUT_OF_TIME
    assert len(result.transport.script) == 3  # the next transaction is left for the next run


# --- progress lines ------------------------------------------------------------------------------


def test_progress_lines_at_boundaries_and_the_summary_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="test.reader"):
        run(
            [
                *transaction(0x1000, 0x1008, relation(REL_A, "a"), insert(REL_A, "1", "one")),
                Sleep(30),
                *transaction(0x2000, 0x2008, insert(REL_A, "2", "two")),
            ],
            stop_lsn=0x2008,
            positions={A: 0x1000},
        )
    assert caplog.messages == [
        "Log at 0/2008, 568.0 KiB behind the server: 0 transactions/s, 0 records/s "
        "(2 transactions, 2 records so far).",
        "Log read (caught up): read 4.0 KiB of WAL from 0/1000 to 0/2008 in 30.0 s: "
        "2 transactions, 2 records (0 records/s); 568.0 KiB behind the server at the end.",
    ]


# --- property: STATE never claims more than was read, and only at boundaries --------------------


@st.composite
def scripts(draw: st.DrawFn) -> tuple[Script, list[t.Any], set[int], int]:
    """A random log: transactions and keepalives, with time passing between frames.

    Returns the script, the sink calls its changes must give, every boundary LSN (commit ends,
    keepalive WAL ends between transactions), and the stop position (the last boundary).
    """
    lsn = 0x1000
    script: Script = [*transaction(0xF00, 0xF08, relation(REL_A, "a"))]
    expected: list[t.Any] = [("relation", "public", "a")]
    boundaries = {0xF08}
    for n in range(draw(st.integers(1, 8))):
        script.append(Sleep(draw(st.sampled_from([0, 0.5, 3, 6]))))
        if draw(st.booleans()):
            lsn += draw(st.integers(0, 0x100))
            script.append(keepalive(lsn, reply=draw(st.booleans())))
            boundaries.add(lsn)
            continue
        final = lsn + 0x80
        script.append(begin(final, xid=800 + n))
        for i in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                # Inside a transaction: neither a boundary nor a stop, whatever its position.
                script.append(keepalive(lsn + draw(st.integers(0, 0x10000)), reply=True))
            script.append(Sleep(draw(st.sampled_from([0, 2, 7]))))
            script.append(insert(REL_A, str(i), None))
            expected.append(("insert", A, (str(i), None), final))
        lsn = final + 8
        script.append(commit(final, lsn))
        boundaries.add(lsn)
    stop = max(boundaries)
    return script, expected, boundaries, stop


@settings(max_examples=200, deadline=None)
@given(scripts())
def test_state_positions_are_boundaries_already_read(
    case: tuple[Script, list[t.Any], set[int], int],
) -> None:
    script, expected, boundaries, stop = case
    events: list[t.Any] = []
    clock = FakeClock()
    transport = NotingTransport(script, clock, events)
    loop = ReadLoop(
        transport=transport,
        sink=FakeSink(events),
        positions={A: 0xF00},
        settings=ReaderSettings(confirm_lsn=0xF00, state_interval_seconds=5),
        server_lsn=lambda: SERVER_LSN,
        clock=clock,
    )
    summary = loop.run(stop_lsn=stop)

    read: list[int] = []  # boundary positions read so far
    in_transaction = False
    previous: bytes | None = None
    for event in events:
        if event[0] == "frame":
            frame = event[1]
            if frame is not None and frame[0] == ord("w"):
                kind = frame[XLOGDATA_HEADER_SIZE]
                in_transaction = kind == ord("B") or (in_transaction and kind != ord("C"))
                if kind == ord("C"):
                    read.append(int.from_bytes(frame[XLOGDATA_HEADER_SIZE + 10 : -8], "big"))
            elif frame is not None and not in_transaction:
                read.append(int.from_bytes(frame[1:9], "big"))
            previous = frame
        elif event[0] == "state":
            # Written right after a boundary frame (a commit or a keepalive between
            # transactions), never inside a transaction ...
            assert not in_transaction
            assert previous is not None
            assert previous[0] == ord("k") or previous[XLOGDATA_HEADER_SIZE] == ord("C")
            # ... claiming a boundary, and nothing past what has been read.
            assert set(event[1].values()) <= boundaries
            assert all(lsn <= max(read) for lsn in event[1].values())
        elif event[0] == "status":
            assert event[1] == 0xF00  # only ever the confirmed position
    assert [e for e in events if e[0] in ("insert", "relation")] == expected
    assert events[-1] == ("state", {A: stop})
    assert summary.position == stop
    assert summary.stopped == CAUGHT_UP
    # Nothing but keepalives at the stop position can be left unread.
    assert not any(isinstance(i, bytes) and i[0] == ord("w") for i in transport.script)


def test_summary_str_names_the_stop_reason() -> None:
    assert str(ReadSummary(3, 7, 0x16_B374_D848, OUT_OF_TIME)) == (
        "3 transactions, 7 records, position 16/B374D848, stopped: max_run_seconds reached"
    )
