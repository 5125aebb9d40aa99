# shellcheck shell=bash disable=SC2154,SC2034  # $script and $config come from the caller; it uses what this sets
# Sourced by put.sh and store.sh (not run on its own): builds the nvkv
# binary when missing and starts one `nvkv serve` with its data in a
# temporary directory, stopped with SIGTERM (and the directory removed) when
# the script exits, also on Ctrl-C.
#
# Reads: $script (the caller's name, for messages), $config (a config file,
# or empty for the embedded default), NVKV_BIN (default target/release/nvkv).
# Sets: $bin, $work (the temporary directory), $daemon (the serve's pid),
# $ready (its ready line), $endpoint (host:port of its client port) and
# $nvkv_etcd_endpoint (host:port of its etcd API, on a free port).

bin="${NVKV_BIN:-target/release/nvkv}"
if [ ! -x "$bin" ]; then
    echo "$script: building $bin" >&2
    cargo build --release >&2
fi

work=$(mktemp -d)
daemon=""
cleanup() {
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon"
        wait "$daemon" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

serve_args=(serve --data-dir "$work/data" --listen 127.0.0.1:0 --etcd-listen 127.0.0.1:0)
if [ -n "$config" ]; then
    serve_args+=(--config "$config")
fi
"$bin" "${serve_args[@]}" > "$work/serve.out" 2> "$work/serve.err" &
daemon=$!
# shellcheck source=bench/await-ready.sh
source bench/await-ready.sh
ready=$(await_ready "$work/serve.out" "$work/serve.err" "$daemon" "nvkv serve") || exit 1
endpoint="127.0.0.1:${ready##*:}"
# The etcd API's address, which the ready line names before the client's.
nvkv_etcd_endpoint=$(sed -nE 's/.*, etcd ([0-9.:]+), client .*/\1/p' <<< "$ready")
echo "$script: $ready" >&2
