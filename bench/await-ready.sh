# shellcheck shell=bash disable=SC2154  # $script comes from the caller
# Sourced by one-node.sh and three-nodes.sh: await_ready OUT ERR PID WHO
# waits up to 60 s for `nvkv serve` (pid PID) to print its ready line into
# OUT and prints that line; if it exits first, shows ERR and stops the
# script, naming WHO.
await_ready() {
    local out="$1" err="$2" pid="$3" who="$4"
    for _ in $(seq 1 600); do
        if grep -q '^nvkv ready: ' "$out"; then break; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$script: $who exited:" >&2; cat "$err" >&2; exit 1
        fi
        sleep 0.1
    done
    grep '^nvkv ready: ' "$out" || { echo "$script: $who never became ready" >&2; exit 1; }
}
