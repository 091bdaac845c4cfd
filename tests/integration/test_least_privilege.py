"""The least-privilege role of the README, as a non-superuser, on every major.

Postgres lets only a table's owner (or a superuser) add it to a publication, whatever privileges
on the database a role has. So the least-privileged tap role cannot manage the publication: the
tables' owner creates it once, and the tap runs with create_publication = false. The role itself
needs LOGIN, REPLICATION and SELECT, nothing else. The alternative (the tap manages the
publication) needs ownership of the tables, through membership in their owner role, plus CREATE
on the database; both are tested here, with the error a role without ownership gets.
"""

from __future__ import annotations

from tests.integration.test_cdc import pg_rows
from tests.memory_target import MemoryTarget
from tests.tap_runner import run_tap

# README.md, "Postgres prerequisites", as run by an administrator (placeholders filled in).
ROLE_SQL = """
CREATE ROLE tap_pgcdc LOGIN REPLICATION PASSWORD 'change-me';
GRANT USAGE ON SCHEMA public TO tap_pgcdc;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO tap_pgcdc;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES TO tap_pgcdc;
"""
# Run once by the tables' owner (it needs CREATE on the database) or a superuser; the tap then
# runs with create_publication = false.
PUBLICATION_SQL = """
CREATE PUBLICATION tap_pgcdc FOR TABLE ONLY public.orders, ONLY public.notes
    WITH (publish = 'insert, update, delete, truncate'{via_root});
"""

APP_SQL = """
CREATE ROLE app_owner NOLOGIN;
CREATE TABLE orders (id int PRIMARY KEY, note text, amount numeric(10,2));
CREATE TABLE notes (id int PRIMARY KEY, body text);
ALTER TABLE notes ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE orders OWNER TO app_owner;
ALTER TABLE notes OWNER TO app_owner;
INSERT INTO orders SELECT g, 'o' || g, g FROM generate_series(1, 10) g;
INSERT INTO notes SELECT g, repeat('n', 5000) || g FROM generate_series(1, 3) g;
"""

CHANGES_SQL = """
INSERT INTO orders VALUES (11, 'new', 11);
UPDATE orders SET amount = 0 WHERE id = 1;
DELETE FROM orders WHERE id = 2;
UPDATE notes SET id = 30 WHERE id = 3;
UPDATE notes SET id = id WHERE id = 1;
TRUNCATE orders;
INSERT INTO orders VALUES (12, 'after truncate', 12);
"""


def _drop_roles(db) -> None:
    db.execute("DROP OWNED BY tap_pgcdc CASCADE; DROP ROLE tap_pgcdc")
    db.execute("DROP TABLE orders, notes; DROP ROLE app_owner")


def _snapshot_and_changes(db, config: dict) -> None:
    target = MemoryTarget()
    target.apply(run_tap(config).check().messages)
    db.execute(CHANGES_SQL)
    target.apply(run_tap(config, state=target.state).check().messages)
    assert target.rows("public-orders") == pg_rows(db, "SELECT * FROM orders ORDER BY id")
    assert target.rows("public-notes") == pg_rows(db, "SELECT * FROM notes ORDER BY id")


def test_readme_role_with_a_publication_made_by_the_owner(vdb, pg_major) -> None:
    # Roles are cluster-wide; each test drops the ones it made.
    vdb.execute(APP_SQL)
    vdb.execute(ROLE_SQL)
    try:
        via_root = ", publish_via_partition_root = true" if pg_major >= 13 else ""
        vdb.execute(f'GRANT CREATE ON DATABASE "{vdb.name}" TO app_owner')
        vdb.execute("SET ROLE app_owner; " + PUBLICATION_SQL.format(via_root=via_root))
        assert vdb.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'tap_pgcdc'") == [
            (False,)
        ]
        config = vdb.config(
            user="tap_pgcdc", publication_name="tap_pgcdc", create_publication=False
        )
        _snapshot_and_changes(vdb, config)
    finally:
        vdb.execute("DROP PUBLICATION IF EXISTS tap_pgcdc")
        vdb.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = current_database() AND NOT active"
        )
        vdb.execute(f'REVOKE CREATE ON DATABASE "{vdb.name}" FROM app_owner')
        _drop_roles(vdb)


def test_managing_the_publication_needs_table_ownership(db) -> None:
    db.execute(APP_SQL)
    db.execute(ROLE_SQL)
    try:
        db.execute(f'GRANT CREATE ON DATABASE "{db.name}" TO tap_pgcdc')
        config = db.config(user="tap_pgcdc", publication_name="tap_pgcdc")
        refused = run_tap(config)
        assert refused.returncode != 0
        assert "Cannot create publication 'tap_pgcdc'" in refused.stderr
        assert "must be owner of table" in refused.stderr
        assert "and set create_publication = false" in refused.stderr
        # Membership in the owner role gives the ownership Postgres requires.
        db.execute("GRANT app_owner TO tap_pgcdc")
        _snapshot_and_changes(db, config)
    finally:
        db.execute("DROP PUBLICATION IF EXISTS tap_pgcdc")
        db.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = current_database() AND NOT active"
        )
        db.execute(f'REVOKE CREATE ON DATABASE "{db.name}" FROM tap_pgcdc')
        _drop_roles(db)
