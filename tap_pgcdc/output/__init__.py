"""The Singer side of the output: record rendering and the Singer writer (the fast paths).

- `jsontext`: the JSON text of values and messages, exactly as the writer spells it.
- `writer`: the tap's Singer writer (exact numbers, special floats, stdout flushed at STATE).
- `records`: RECORD lines written directly when the SDK's per-record work would change nothing.
- `tuples`: record JSON compiled per relation, rendered straight from a change's tuple bytes.
- `relations`: per-relation plans turning tuple data into records of one stream.
- `changes`: the log reader's sink, writing decoded changes as records of their streams.
"""
