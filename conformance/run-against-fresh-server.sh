#!/usr/bin/env bash
# Start a fresh fhirvault (SQLite, or PostgreSQL in a throwaway cluster) on a free loopback port,
# run the conformance suite against it, and stop everything again.
# Usage: conformance/run-against-fresh-server.sh sqlite|postgres
set -euo pipefail
backend="${1:-sqlite}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# Where cargo puts the binaries (CARGO_TARGET_DIR when set, as on a machine with a shared target).
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --workspace --bins
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "${pgdata:-}" ]; then as_postgres "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

database_url=""
if [ "$backend" = postgres ]; then
    pgbin="${FHIRVAULT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}"
    pgdata="$work/pg"
    mkdir -p "$pgdata"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$work"
    as_postgres "$pgbin/initdb" -D "$pgdata" -A trust -U postgres -E UTF8 --no-locale --no-sync >/dev/null
    pgport="$(free_port)"
    as_postgres "$pgbin/pg_ctl" -D "$pgdata" -o "-p $pgport -c listen_addresses=127.0.0.1 -k $work" -l "$work/pg.log" -w start >/dev/null
    database_url="postgres://postgres@127.0.0.1:$pgport/postgres"
fi

port="$(free_port)"
(
    cd "$work"
    args=(--fhir-resources "$root/fhir-resources" serve --listen "127.0.0.1:$port")
    if [ -n "$database_url" ]; then args=(--database-url "$database_url" "${args[@]}"); fi
    exec "$target/debug/fhirvault" "${args[@]}" 2>"$work/server.log"
) &
pids+=($!)
for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
    sleep 0.2
done
# Tokens signed by the server's key ring: an admin's for the suite, and the callers the
# access-control cases (sec-*) need, for the organisation and patient their fixture uses.
issue() { (cd "$work" && "$target/debug/fhirvault" --fhir-resources "$root/fhir-resources" token issue --listen "127.0.0.1:$port" "$@"); }
FHIRVAULT_CONFORMANCE_TOKEN="$(issue --role admin)"
export FHIRVAULT_CONFORMANCE_TOKEN
clinician="$(issue --role clinician --scope 'user/*.cruds' --org conformance-org-a)"
crm="$(issue --role crm --scope 'user/*.rs')"
patient="$(issue --role patient --scope 'patient/*.rs patient/Consent.cud' --patient conformance-pat-a)"
auditor="$(issue --role auditor --scope 'user/*.rs')"
reader="$(issue --role clinician --scope 'user/*.rs' --org conformance-org-a)"
mkdir -p target/conformance
status=0
"$target/debug/fhirvault-conformance" --base-url "http://127.0.0.1:$port/fhir" \
    --as "clinician=$clinician" --as "crm=$crm" --as "patient=$patient" --as "auditor=$auditor" --as "reader=$reader" \
    --junit "target/conformance/$backend.xml" --json "target/conformance/$backend.json" || status=$?
if [ "$status" != 0 ]; then
    echo "conformance suite failed on $backend; server log:" >&2
    tail -n 50 "$work/server.log" >&2
fi
exit "$status"
