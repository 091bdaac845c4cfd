"""The publication-gap decision (`recovery.plan_publication_recovery`) over hand-built facts."""

from __future__ import annotations

import dataclasses

import pytest

from tap_pgcdc.errors import SlotError
from tap_pgcdc.recovery import Publishing, SlotRecovery, plan_publication_recovery
from tap_pgcdc.replication.publication import membership
from tests.unit.test_judge_publication import publication, table

PUB = 500  # the publication's OID now


def stream(
    name: str,
    position: int | None = 100,
    recorded: tuple[int, int] | None = (PUB, 61),
    member: int | None = 61,
) -> Publishing:
    return Publishing(stream=name, position=position, recorded=recorded, member=member)


def plan(oid: int | None, *streams: Publishing, resnapshot: bool = True) -> SlotRecovery:
    return plan_publication_recovery("pub", oid, streams, resnapshot=resnapshot)


def test_tables_published_all_along_keep_their_bookmarks() -> None:
    assert plan(PUB, stream("a"), stream("b", member=62, recorded=(PUB, 62))) == SlotRecovery()
    # Nothing recorded yet (a state written before the tap kept it): trusted while published.
    assert plan(PUB, stream("a", recorded=None)) == SlotRecovery()
    # No position yet: nothing to distrust, even if nothing publishes the table yet.
    assert plan(None, stream("new", position=None, recorded=None, member=None)) == SlotRecovery()
    assert plan(PUB, stream("new", position=None, member=None)) == SlotRecovery()


def test_a_missing_publication_loses_every_bookmarked_stream() -> None:
    streams = (stream("a"), stream("b", recorded=None), stream("new", position=None))
    recovery = plan(None, *streams)
    assert recovery.lost == ("a", "b")
    assert not recovery.drop_slot  # the read starts at the new snapshot's point, past the gap
    assert recovery.reason.startswith("Publication 'pub' does not exist, but the input state")
    with pytest.raises(
        SlotError, match=r"positions for a, b read through it.*Fix: set on_slot_lost"
    ):
        plan(None, *streams, resnapshot=False)


def test_a_publication_created_again_loses_every_bookmarked_stream() -> None:
    recovery = plan(PUB + 1, stream("a"), stream("b", recorded=None))
    assert recovery.lost == ("a", "b")
    assert "was dropped and created again since the input state's positions for a were" in (
        recovery.reason
    )
    assert f"its OID is {PUB + 1}, the state recorded {PUB}" in recovery.reason


def test_a_table_out_of_the_publication_for_a_while_loses_its_stream_only() -> None:
    removed = stream("b", member=None)  # not published now: the tap is about to add it
    readded = stream("c", member=99)  # published again, by another membership row
    recovery = plan(PUB, stream("a"), removed, readded, stream("d", recorded=None, member=None))
    assert recovery.lost == ("b", "c", "d")
    assert recovery.reason.startswith("The tables of b, c, d were out of publication 'pub'")
    with pytest.raises(SlotError) as caught:
        plan(PUB, stream("a"), removed, resnapshot=False)
    message = str(caught.value)
    assert "The tables of b were out of publication 'pub' for a while" in message
    assert "Continuing would leave a silent gap in the target. Fix: set on_slot_lost" in message


# --- what makes a table published: `publication.membership` -------------------------------------


def test_membership_is_the_catalog_row_that_publishes_the_table() -> None:
    plain, other = table(101, "plain"), table(102, "other")
    leaf = table(104, "leaf", ancestors=frozenset({103}))
    listed = dataclasses.replace(publication(plain), members={101: 7001, 103: 7003})
    assert membership(listed, plain) == 7001
    assert membership(listed, leaf) == 7003  # through its listed parent
    assert membership(listed, other) is None
    assert membership(None, plain) is None
    assert membership(listed, None) is None  # the table is gone
    every = publication(all_tables=True)
    assert membership(every, other) == 0  # FOR ALL TABLES: published as long as it exists
