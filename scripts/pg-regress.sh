#!/usr/bin/env bash
# PostgreSQL's own regression suite, run directly and through phigate against fresh
# servers of the same installation, and the tests whose output differs between the two
# runs (README, "What phigate refuses that PostgreSQL allows"). Nothing is protected, the
# role may run every kind of statement, the upstream login is the superuser. The suite's
# COPYs of server files (refused by phigate) become psql's \copy in both runs.
#
# usage: scripts/pg-regress.sh SRC    (run from the repository root)
#   SRC: PostgreSQL's source tree of the server's version (`apt-get source postgresql-15`
#   with a deb-src line)
# needs: postgresql-server-dev-<major> (pg_regress, the headers regress.so builds with),
#   gcc, python3. Installing the dev package may upgrade the server: note its version.
set -euo pipefail
SRC=${1:?usage: scripts/pg-regress.sh <PostgreSQL source tree>}
BIN=$(pg_config --bindir)
PG_REGRESS=$(dirname "$(pg_config --pgxs)")/../test/regress/pg_regress
WORK=$(mktemp -d /tmp/phigate-regress.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
AS_PG=(setpriv --pdeathsig=KILL)
[ "$(id -u)" = 0 ] && AS_PG+=(--reuid=postgres --regid=postgres --init-groups)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cargo build --release --quiet
PHIGATE=$PWD/target/release/phigate

# The suite, its COPYs of server files as \copy, and the C functions it loads.
cp -r "$SRC/src/test/regress" "$WORK/suite"
mkdir -p "$WORK/lib" "$WORK/shared/results"
python3 - "$WORK" <<'PY'
import glob, re, sys
work = sys.argv[1]
for path in glob.glob(f"{work}/suite/sql/*.sql"):
    lines, name, changed = open(path).read().split("\n"), None, False
    for i, line in enumerate(lines):
        m = re.match(r"\\set filename :(abs_srcdir|abs_builddir) '([^']*)'$", line)
        if m:
            name = (f"{work}/suite" if m[1] == "abs_srcdir" else f"{work}/shared") + m[2]
        m = re.match(r"^(COPY|copy)( .*):'filename'(.*);$", line)
        if m and name:
            lines[i], changed = f"\\copy{m[2]}'{name}'{m[3]}", True
    if changed:
        open(path, "w").write("\n".join(lines))
PY
gcc -O1 -fPIC -shared -I"$(pg_config --includedir-server)" "$WORK/suite/regress.c" -o "$WORK/lib/regress.so"
cp "$(pg_config --pkglibdir)"/{autoinc,refint}.so "$WORK/lib/"
chmod -R a+rX "$WORK"

# One run on a fresh server: `direct`, or `proxy` through phigate.
run() {
  local mode=$1 dir=$WORK/$1 pg_port ph_port port
  pg_port=$(free_port)
  mkdir -p "$dir" && [ "$(id -u)" = 0 ] && chown postgres "$dir"
  "${AS_PG[@]}" "$BIN/initdb" -D "$dir/data" -N -A trust -U postgres --locale=C.UTF-8 >/dev/null
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"
  "${AS_PG[@]}" "$BIN/postgres" -D "$dir/data" -p "$pg_port" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$dir" -c max_prepared_transactions=10 >"$dir/pg.log" 2>&1 &
  until pg_isready -q -h 127.0.0.1 -p "$pg_port"; do sleep 0.2; done
  local psql=(psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres)
  "${psql[@]}" -c "CREATE DATABASE regression TEMPLATE=template0"
  for s in "lc_messages TO 'C'" "lc_monetary TO 'C'" "lc_numeric TO 'C'" "lc_time TO 'C'" \
    "bytea_output TO 'hex'" "timezone_abbreviations TO 'Default'"; do
    "${psql[@]}" -c "ALTER DATABASE regression SET $s"
  done
  port=$pg_port
  if [ "$mode" = proxy ]; then
    ph_port=$(free_port)
    mkdir -p "$dir/ph/policies"
    printf '[roles.dev]\nstatements = ["all"]\n' >"$dir/ph/policies/roles.toml"
    echo pw | "$PHIGATE" user add postgres --role dev --policies "$dir/ph/policies" >/dev/null
    printf '[listen]\naddress = "127.0.0.1:%s"\n[upstream]\naddress = "127.0.0.1:%s"\ndatabase = "regression"\nuser = "postgres"\ntls = "disable"\n' \
      "$ph_port" "$pg_port" >"$dir/ph/phigate.toml"
    (cd "$dir/ph" && RUST_LOG=warn setpriv --pdeathsig=KILL "$PHIGATE" serve --config phigate.toml >"$dir/ph.log" 2>&1 &)
    until pg_isready -q -h 127.0.0.1 -p "$ph_port"; do sleep 0.2; done
    port=$ph_port
  fi
  (cd "$WORK/suite" && PGPASSWORD=pw "$PG_REGRESS" --use-existing --dbname=regression \
    --host=127.0.0.1 --port="$port" --user=postgres --bindir="$BIN" --inputdir=. \
    --outputdir="$dir" --dlpath="$WORK/lib" --schedule=parallel_schedule >"$dir/summary.txt" 2>&1) || true
  pkill -f "phigate serve --config phigate.toml" 2>/dev/null || true
  "${AS_PG[@]}" "$BIN/pg_ctl" -D "$dir/data" stop -m immediate >/dev/null 2>&1 || true
  echo "$mode: $(grep -cE 'FAILED|failed \(ignored\)' "$dir/summary.txt") of $(grep -cE '^(ok|not ok|test|     )' "$dir/summary.txt" || true) tests differ from the expected output"
}

run direct
run proxy
echo "tests whose output differs between the runs (lines that differ):"
for out in "$WORK"/proxy/results/*.out; do
  n=$(diff "$WORK/direct/results/$(basename "$out")" "$out" | grep -c '^[<>]' || true)
  [ "$n" -gt 0 ] && echo "  $(basename "$out" .out) $n"
done
echo "errors only the run through phigate met, by message:"
for out in "$WORK"/proxy/results/*.out; do
  diff "$WORK/direct/results/$(basename "$out")" "$out" | grep '^> ERROR' || true
done | sed -E 's/"[^"]*"/"..."/g' | sort | uniq -c | sort -rn | head -40
echo "results: $WORK"
