#!/usr/bin/env bash
# schemathesis against the real `ironboot serve`: every operation of the OpenAPI document the
# server publishes (`/v1/openapi.json`; IRONBOOT_OPENAPI names another file or URL), bounded to
# ST_EXAMPLES generated cases each; no 5xx and no answer outside its schema.
set -euo pipefail
cd "$(dirname "$0")/.."
ST_EXAMPLES=${ST_EXAMPLES:-20}
VENV=target/schemathesis-venv
if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==3.39.16" "hypothesis<6.130"
fi
cargo build --quiet --bin ironboot
work=$(mktemp -d /tmp/ironboot-st.XXXXXX)
RUST_LOG=warn target/debug/ironboot serve --data-dir "$work/data" --ready-file "$work/ready.json" \
  --api-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --tftp-listen 127.0.0.1:0 \
  > "$work/ironboot.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 300); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
api=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$work/ready.json")
SCHEMA=${IRONBOOT_OPENAPI:-http://$api/v1/openapi.json}
echo "=== schemathesis $SCHEMA against http://$api ($ST_EXAMPLES examples per operation)"
status=0
"$VENV/bin/st" run "$SCHEMA" --base-url "http://$api" \
  --checks not_a_server_error,response_schema_conformance \
  --hypothesis-max-examples "$ST_EXAMPLES" --hypothesis-deadline None \
  --hypothesis-derandomize --workers 1 --no-color \
  -H "X-OpenStack-Ironic-API-Version: latest" > "$work/st.log" 2>&1 || status=$?
tail -n 25 "$work/st.log"
if grep -q " 5[0-9][0-9] " "$work/ironboot.log"; then
  echo "the server logged a 5xx:" >&2; grep " 5[0-9][0-9] " "$work/ironboot.log" | head >&2
fi
exit $status
