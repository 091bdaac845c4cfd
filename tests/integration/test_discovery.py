"""Discovery against a real server: which streams, their keys, schemas and metadata."""

from __future__ import annotations

from typing import Any

from tests.tap_runner import discover, run_tap
from tests.type_cases import create_types_table


def _streams(catalog: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["tap_stream_id"]: s for s in catalog["streams"]}


def _root(stream: dict[str, Any]) -> dict[str, Any]:
    return next(m["metadata"] for m in stream["metadata"] if m["breadcrumb"] == [])


def test_discovers_tables_views_and_partition_parents_only(db) -> None:
    db.execute(
        """
        CREATE SCHEMA other;
        CREATE TABLE public.orders (id bigint PRIMARY KEY, note text NOT NULL, amount numeric(12,2));
        CREATE TABLE public.events (ts timestamptz, payload jsonb);
        CREATE TABLE other.pair (a int, b text, c int, PRIMARY KEY (b, a));
        CREATE VIEW public.big_orders AS SELECT * FROM public.orders WHERE amount > 100;
        CREATE MATERIALIZED VIEW public.order_count AS SELECT count(*) AS n FROM public.orders;
        CREATE TABLE public.measures (id int, at date, v real, PRIMARY KEY (id, at))
            PARTITION BY RANGE (at);
        CREATE TABLE public.measures_2024 PARTITION OF public.measures
            FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE public.measures_2025 PARTITION OF public.measures
            FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        INSERT INTO public.orders SELECT g, 'n' || g, g FROM generate_series(1, 50) g;
        ANALYZE public.orders;
        """
    )
    catalog = discover(db.config())
    streams = _streams(catalog)
    assert set(streams) == {
        "public-orders",
        "public-events",
        "other-pair",
        "public-big_orders",
        "public-order_count",
        "public-measures",
    }

    orders = streams["public-orders"]
    assert orders["key_properties"] == ["id"]
    assert orders["schema"]["properties"]["id"] == {"type": ["integer"]}
    assert orders["schema"]["properties"]["note"] == {"type": ["string"]}
    assert orders["schema"]["properties"]["amount"]["type"] == ["number", "string", "null"]
    assert orders["schema"]["properties"]["_sdc_lsn"] == {"type": ["integer", "null"]}
    assert orders["schema"]["properties"]["_sdc_deleted_at"] == {
        "type": ["string", "null"],
        "format": "date-time",
    }
    root = _root(orders)
    assert root["table-key-properties"] == ["id"]
    assert root["schema-name"] == "public"
    assert root["selected-by-default"] is True
    assert root["is-view"] is False
    assert root["row-count"] == 50
    assert root["replication-method"] == "LOG_BASED"
    assert "forced-replication-method" not in root

    assert streams["other-pair"]["key_properties"] == ["b", "a"]  # primary key order
    assert streams["public-events"]["key_properties"] == []

    for view in ("public-big_orders", "public-order_count"):
        root = _root(streams[view])
        assert root["is-view"] is True
        assert root["forced-replication-method"] == "FULL_TABLE"
        assert "_sdc_lsn" not in streams[view]["schema"]["properties"]

    measures = streams["public-measures"]
    assert measures["key_properties"] == ["id", "at"]
    assert set(measures["schema"]["properties"]) == {"id", "at", "v", "_sdc_lsn", "_sdc_deleted_at"}


def test_filters_and_privileges(db) -> None:
    db.execute(
        """
        CREATE SCHEMA sales; CREATE SCHEMA hr;
        CREATE TABLE sales.orders (id int PRIMARY KEY);
        CREATE TABLE sales.order_lines (id int PRIMARY KEY);
        CREATE TABLE sales.customers (id int PRIMARY KEY);
        CREATE TABLE hr.salaries (id int PRIMARY KEY);
        CREATE TABLE public.secret (id int PRIMARY KEY);
        CREATE ROLE limited LOGIN;
        GRANT USAGE ON SCHEMA sales, hr TO limited;
        GRANT SELECT ON sales.orders, sales.order_lines, sales.customers, hr.salaries TO limited;
        """
    )
    by_schema = _streams(discover(db.config(filter_schemas=["sales"])))
    assert set(by_schema) == {"sales-orders", "sales-order_lines", "sales-customers"}
    by_glob = _streams(discover(db.config(filter_tables=["sales.order*", "hr.*"])))
    assert set(by_glob) == {"sales-orders", "sales-order_lines", "hr-salaries"}
    # A role sees only what it may SELECT.
    limited = _streams(discover(db.config(user="limited")))
    assert "public-secret" not in limited
    assert set(limited) == {"sales-orders", "sales-order_lines", "sales-customers", "hr-salaries"}


def test_schema_for_every_type(db) -> None:
    create_types_table(db.execute)
    props = _streams(discover(db.config()))["public-all_types"]["schema"]["properties"]
    expected_types = {
        "c_smallint": ["integer", "null"],
        "c_bigint": ["integer", "null"],
        # a number, or "NaN", "Infinity", "-Infinity" (JSON has no such numbers)
        "c_numeric": ["number", "string", "null"],
        "c_real": ["number", "string", "null"],
        "c_double": ["number", "string", "null"],
        "c_money": ["number", "null"],
        "c_bool": ["boolean", "null"],
        "c_text": ["string", "null"],
        "c_bytea": ["string", "null"],
        "c_uuid": ["string", "null"],
        "c_int_array": ["array", "null"],
        "c_hstore": ["object", "null"],
        "c_enum": ["string", "null"],
        "c_domain": ["integer", "null"],
        "c_jsonb": ["object", "array", "string", "number", "boolean", "null"],
    }
    for column, types in expected_types.items():
        assert props[column]["type"] == types, column
    assert props["c_timestamptz"]["format"] == "date-time"
    assert props["c_date"]["format"] == "date"
    assert props["c_interval"]["format"] == "duration"
    assert props["c_numeric"]["pattern"] == "^(NaN|Infinity|-Infinity)$"
    assert "format" not in props["c_time"] and "pattern" in props["c_time"]
    assert props["c_varchar"]["maxLength"] == 20
    assert props["c_int_array"]["items"] == {"type": ["integer", "null"]}
    assert props["c_2d_array"]["type"] == ["array", "null"]
    assert props["id"] == {"type": ["integer"]}


def test_quoted_identifiers_are_discovered(db) -> None:
    db.execute(
        'CREATE SCHEMA "Sales Dept";'
        ' CREATE TABLE "Sales Dept"."Order ""Lines""" ("Id" int PRIMARY KEY, "Unit Price" numeric);'
        ' CREATE TABLE public."tablé_ünï" ("ключ" int PRIMARY KEY);'
    )
    streams = _streams(discover(db.config()))
    assert streams['Sales Dept-Order "Lines"']["key_properties"] == ["Id"]
    assert set(streams['Sales Dept-Order "Lines"']["schema"]["properties"]) >= {"Id", "Unit Price"}
    assert streams["public-tablé_ünï"]["key_properties"] == ["ключ"]


def test_about_lists_every_setting() -> None:
    import json

    run = run_tap({}, args=["--about", "--format=json"]).check()
    about = json.loads("\n".join(run.raw_lines))
    props = about["settings"]["properties"]
    for name in (
        "host",
        "port",
        "user",
        "password",
        "database",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "filter_schemas",
        "filter_tables",
        "slot_name",
        "publication_name",
        "create_slot",
        "create_publication",
        "max_run_seconds",
        "stream_maps",
    ):
        assert name in props, name
        assert props[name].get("description") or name == "stream_maps", name
    assert props["password"].get("secret") is True
    assert props["sslmode"]["enum"] == [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ]
    assert props["port"]["default"] == 5432
    assert props["slot_name"]["default"] == "tap_pgcdc"


def test_extension_objects_are_offered_but_not_selected_by_default(db) -> None:
    """PostGIS' spatial_ref_sys and its views belong to the extension (pg_depend deptype 'e').

    Tested with pg_buffercache, a contrib extension that creates a view, the same way: the
    tap recognises extension-owned tables and views by their dependency on the extension.
    """
    db.execute("CREATE EXTENSION pg_buffercache; CREATE TABLE mine (id int PRIMARY KEY)")
    catalog = discover(db.config())
    streams = _streams(catalog)
    assert _root(streams["public-pg_buffercache"])["selected-by-default"] is False
    assert _root(streams["public-mine"])["selected-by-default"] is True
    run = run_tap(db.config(), catalog=catalog).check()
    assert {m["stream"] for m in run.of_type("SCHEMA")} == {"public-mine"}
    for stream in (streams["public-mine"],):
        automatic = {
            m["breadcrumb"][-1]
            for m in stream["metadata"]
            if m["breadcrumb"] and m["metadata"].get("inclusion") == "automatic"
        }
        assert automatic == {"id", "_sdc_lsn", "_sdc_deleted_at"}
