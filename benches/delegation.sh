#!/usr/bin/env bash
# The cost of delegated end users: pgbench's select-only statement through phigate from
# one delegating login, without an end user and with one named in a sqlcommenter comment,
# alternately (ROUNDS rounds of SECS seconds, CLIENTS clients, prepared statements). Prints
# TPS medians, their ratio, and phigate's CPU per statement for each.
# usage: benches/delegation.sh [ROUNDS] [SECS] [CLIENTS]   (from the repository root)
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-10}
CLIENTS=${3:-8}
# shellcheck source=benches/harness.sh
source "$(dirname "$0")/harness.sh"

# the bench login becomes a delegating service; `dr` an end user of the same role
users=$WORK/phigate/policies/users.toml
sed -i 's/^\[users.bench\]$/[users.bench]\ndelegate = { comment = "db_user" }/' "$users"
printf '\n[users.dr]\nrole = "app"\nauth = "delegated"\n' >>"$users"
kill -HUP "$PHPID"
sleep 1
statement='SELECT abalance FROM pgbench_accounts WHERE aid = :aid'
printf '\\set aid random(1, 1000000)\n%s;\n' "$statement" >"$WORK/service.sql"
printf "\\\\set aid random(1, 1000000)\n%s /*db_user='dr'*/;\n" "$statement" >"$WORK/end-user.sql"

declare -A TPS TICKS TXS
for round in $(seq 1 "$ROUNDS"); do
  for v in service end-user; do
    measure "$PHPID" "$v" -n -M prepared -f "$WORK/$v.sql" -p "$PHPORT"
    TPS[$v]="${TPS[$v]:-} $TPS_OUT"
    TICKS[$v]=$(( ${TICKS[$v]:-0} + TICKS_OUT ))
    TXS[$v]=$(( ${TXS[$v]:-0} + TX_OUT ))
    echo "$round $v $TPS_OUT"
  done
done
service=$(echo "${TPS[service]}" | median)
end_user=$(echo "${TPS[end-user]}" | median)
echo
echo "delegation over $ROUNDS rounds, $CLIENTS clients, ${SECS}s per run (TPS medians):"
awk -v s="$service" -v e="$end_user" 'BEGIN {
  printf "  no end user %9.0f TPS\n  end user    %9.0f TPS   ratio %.2f\n", s, e, e / s }'
per_statement "no end user" "${TICKS[service]}" "${TXS[service]}"
per_statement "end user   " "${TICKS[end-user]}" "${TXS[end-user]}"
