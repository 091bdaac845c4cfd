"""The Singer SDK's standard tap tests, against a real server this module starts itself.

The SDK's test factory discovers streams when the test class is built (at collection), so the
server has to exist at import time rather than in a fixture.

No json/jsonb column here: their schema is the union of every JSON type, and the SDK's attribute
tests pick a test per listed type (it tries to cast an object to boolean). test_snapshot.py and
test_cdc.py check json values exactly.
"""

from __future__ import annotations

import atexit

from singer_sdk.testing import get_tap_test_class

from tap_pgcdc.tap import TapPgCdc
from tests.pgserver import start_server

_server = start_server()
atexit.register(_server.destroy)
_server.execute(
    """
    CREATE TABLE public.customers (id int PRIMARY KEY, name text NOT NULL, joined date);
    INSERT INTO public.customers SELECT g, 'customer ' || g, date '2024-01-01' + g
        FROM generate_series(1, 40) g;
    CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id int, total numeric(10,2),
        placed timestamptz, tags text[]);
    INSERT INTO public.orders SELECT g, g % 40 + 1, g * 1.25, now(), ARRAY['a', 'b']
        FROM generate_series(1, 120) g;
    CREATE VIEW public.big_orders AS SELECT * FROM public.orders WHERE total > 100;
    """
)

SAMPLE_CONFIG = {
    "host": _server.host,
    "port": _server.port,
    "user": _server.superuser,
    "database": "postgres",
    "slot_name": "sdk_standard",
    "publication_name": "sdk_standard",
}

TestTapPgCdc = get_tap_test_class(TapPgCdc, config=SAMPLE_CONFIG)
