#!/usr/bin/env bash
# agent-subject.sh - the full node agent (`underroute agent`) as a subject of the benchmark lab
# (../shared/lab, "Subject interface"): writes a standalone config from the lab's placeholders
# and execs the agent, so mesh.sh measures what runs on a node (speaker, kernel programmer with
# per-address tables, pod registry, API, metrics), not the speaker alone.
#
#   agent-subject.sh --dir DIR --router-id A --asn N --peers A,B,... --announce P[,P] \
#                    --hold S --gr 0|1
# {restart} is not needed: the agent finds out itself (its routes survived in the kernel).
set -euo pipefail
BIN=${UNDERROUTE_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/underroute}
dir="" rid="" asn="" peers="" announce="" hold=90 gr=0
while (($#)); do
    case $1 in
        --dir) dir=$2 ;; --router-id) rid=$2 ;; --asn) asn=$2 ;; --peers) peers=$2 ;;
        --announce) announce=$2 ;; --hold) hold=$2 ;; --gr) gr=$2 ;;
        *) echo "agent-subject.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done
[[ -n $dir && -n $rid && -n $asn ]] || { echo "agent-subject.sh: --dir, --router-id and --asn are required" >&2; exit 2; }
quote_list() { local IFS=,; local out="" x; for x in $1; do out+="${out:+, }\"$x\""; done; echo "$out"; }
{
    echo "[node]"
    echo "name = \"lab-$rid\""
    echo "router_id = \"$rid\""
    echo "asn = $asn"
    echo "pod_cidrs = [$(quote_list "$announce")]"
    echo "[cluster]"
    echo "pod_cidrs = [\"10.244.0.0/16\"]"
    echo "[bgp]"
    echo "listen = [\"$rid\"]"
    echo "hold_time = $hold"
    echo "connect_retry = 1"
    [[ $gr == 1 ]] && echo "graceful_restart = true" || echo "graceful_restart = false"
    echo "[registry]"
    echo "dir = \"$dir/pods\""
    echo "[api]"
    echo "socket = \"$dir/api.sock\""
    IFS=, read -ra list <<<"$peers"
    for p in "${list[@]}"; do
        [[ -n $p ]] || continue
        printf '[[peer]]\naddress = "%s"\nasn = %s\n' "$p" "$asn"
    done
} >"$dir/underroute.toml"
exec "$BIN" agent --config "$dir/underroute.toml"
