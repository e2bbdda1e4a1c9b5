#!/usr/bin/env bash
# Property-based API test: schemathesis against the OpenAPI document the
# gateway serves, with the bearer token. Fails on any 5xx, any response
# that does not match the documented schema, status code or content type.
#
# Runs `overpass api-only` (the same RIB, store and API code as `overpass
# run`, without a dataplane) on a free loopback port with a fresh state dir.
# schemathesis is pip-installed into a venv under target/ on first use.
#
# Usage: gateway/tests/schemathesis.sh [max-examples per operation, default 100]
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$here"
max_examples="${1:-100}"
venv="$here/target/schemathesis-venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'schemathesis>=4,<5'
fi
cargo build --quiet -p overpass --bin overpass
work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
token="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
(umask 077 && printf '%s\n' "$token" > "$work/token")
cat > "$work/overpass.toml" <<TOML
[gateway]
pod_cidr = "10.244.0.0/24"
underlay_ip = "198.18.0.1"

[[underlay]]
interface = "ul0"

[[pod]]
name = "a"
interface = "gwp-a"
ip = "10.244.0.2"
mac = "02:0a:00:00:00:02"

[[peer]]
name = "node1"
pod_cidr = "10.244.1.0/24"
underlay_ip = "198.18.0.11"
vtep_mac = "02:0b:00:00:00:01"

[api]
listen = "127.0.0.1:0"
token_file = "$work/token"

[state]
dir = "$work/state"
TOML
"$here/target/debug/overpass" api-only --config "$work/overpass.toml" > "$work/out" 2> "$work/err" &
pid=$!
url=""
for _ in $(seq 100); do
    url="$(grep -o 'http://[0-9.:]*' "$work/out" || true)"
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { cat "$work/err"; echo "overpass api-only did not start" >&2; exit 1; }
echo "schemathesis against $url/api/v1/openapi.json (overpass api-only, pid $pid)"
# From the scratch dir: schemathesis keeps a .schemathesis/ cache in its cwd.
(cd "$work" && "$venv/bin/schemathesis" run "$url/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$max_examples" \
    --seed 1 \
    --no-color \
    --report junit --report-dir "$here/target/schemathesis-report") \
    2>&1 | tee "$work/st.log"
status=${PIPESTATUS[0]}
kill -0 "$pid" 2>/dev/null || { echo "overpass api-only died during the run" >&2; cat "$work/err"; exit 1; }
exit "$status"
