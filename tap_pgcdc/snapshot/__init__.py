"""Reading a table's snapshot: the chunk queries, and records the server renders as JSON.

- `query`: the one builder of the chunk queries (key order with resume, or one pass), used by the
  SDK's record path (`streams.PgCdcStream`) and by the fast path alike.
- `render`: the SQL that renders a row as the JSON the plain path would write, and the markers
  for values Python converts.
- `chunks`: `JsonSnapshot`, which reads server-rendered chunks (one ahead, in a thread) and
  writes their RECORD lines.

Nothing here imports the stream class or the output modules: a snapshot writes through the small
interfaces its callers pass in.
"""
