"""tap-pgcdc: a Singer tap for PostgreSQL change data capture over pgoutput."""
