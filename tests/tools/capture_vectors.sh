#!/usr/bin/env bash
# Captures real BGP messages between gobgpd and BIRD and writes them as hex vectors into
# bgp/tests/vectors/captured/ (see the README there). Run as root from the repository root:
#   tests/tools/capture_vectors.sh
# Everything runs in two namespaces made here (ur-cap-g-PID, ur-cap-b-PID) joined by one veth;
# they and all processes in them are removed on exit, also on failure. Nothing touches the host's
# links or routes. Takes about 20 s. KEEP=1 keeps the work dir (pcap, configs, logs).
set -euo pipefail

out=${1:-bgp/tests/vectors/captured}
here=$(cd "$(dirname "$0")" && pwd)
G=ur-cap-g-$$
B=ur-cap-b-$$
work=$(mktemp -d /tmp/ur-capture.XXXXXX)

cleanup() {
    for ns in "$G" "$B"; do
        if ip netns list | grep -qw "$ns"; then
            for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null || true; done
            ip netns del "$ns" || true
        fi
    done
    if [[ -n ${KEEP:-} ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s, fails after SECONDS.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "timeout waiting for $what" >&2
            echo "--- gobgpd log"; tail -30 "$work/gobgpd.log" || true
            echo "--- bird log"; tail -30 "$work/bird.log" || true
            exit 1
        fi
        sleep 0.2
    done
}

gobgp() { ip netns exec "$G" gobgp -u 127.0.0.1 -p 50051 "$@"; }
birdc() { ip netns exec "$B" birdc -s "$work/bird.ctl" "$@"; }
established() { gobgp neighbor "$1" | grep -q 'BGP state = ESTABLISHED'; }
bird_up() { birdc show protocols "$1" | grep -q Established; }

ip netns add "$G"
ip netns add "$B"
for ns in "$G" "$B"; do
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip -n "$G" link add vg type veth peer name vb netns "$B"
# Three address pairs on one link, one per session: eBGP (v4 and v6 transport), iBGP, and a
# session with a deliberately wrong peer AS on both sides (to get NOTIFICATIONs).
for i in 0 1 2; do
    ip -n "$G" addr add "10.0.$i.1/24" dev vg
    ip -n "$B" addr add "10.0.$i.2/24" dev vb
done
ip -n "$G" addr add fd00::1/64 dev vg nodad
ip -n "$B" addr add fd00::2/64 dev vb nodad
ip -n "$G" link set vg up
ip -n "$B" link set vb up

cat >"$work/gobgpd.toml" <<'TOML'
[global.config]
  as = 65001
  router-id = "10.0.0.1"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.0.2"
    peer-as = 65002
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
    connect-retry = 1
    idle-hold-time-after-reset = 1
  [neighbors.transport.config]
    local-address = "10.0.0.1"
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true

[[neighbors]]
  [neighbors.config]
    neighbor-address = "fd00::2"
    peer-as = 65002
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
    connect-retry = 1
    idle-hold-time-after-reset = 1
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true

[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.1.2"
    peer-as = 65001
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
    connect-retry = 1
    idle-hold-time-after-reset = 1
  [neighbors.transport.config]
    local-address = "10.0.1.1"
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 90
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true

[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.2.2"
    peer-as = 65098
  [neighbors.timers.config]
    connect-retry = 1
    idle-hold-time-after-reset = 1
  [neighbors.transport.config]
    local-address = "10.0.2.1"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
TOML

cat >"$work/bird.conf" <<BIRD
router id 10.0.0.2;
log stderr all;
protocol device {}
protocol static st4 {
  ipv4;
  route 203.0.113.0/24 blackhole { bgp_path.prepend(65020); bgp_community.add((65002,10)); bgp_large_community.add((65002,1,1)); bgp_med = 20; bgp_local_pref = 200; };
  include "$work/extra4.conf";
}
protocol static st6 {
  ipv6;
  route 2001:db8:b::/48 blackhole { bgp_community.add((65002,60)); bgp_large_community.add((65002,6,6)); bgp_med = 60; };
  include "$work/extra6.conf";
}
template bgp common {
  hold time 9;
  keepalive time 3;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  graceful restart on;
  direct;
}
protocol bgp ebgp4 from common {
  local 10.0.0.2 as 65002;
  neighbor 10.0.0.1 as 65001;
  ipv4 { import all; export all; };
}
protocol bgp ebgp6 from common {
  local fd00::2 as 65002;
  neighbor fd00::1 as 65001;
  ipv6 { import all; export all; };
}
protocol bgp peer_ibgp from common {
  local 10.0.1.2 as 65001;
  neighbor 10.0.1.1 as 65001;
  ipv4 { import all; export all; };
  ipv6 { import all; export all; };
}
protocol bgp peer_wrong_as from common {
  local 10.0.2.2 as 65002;
  neighbor 10.0.2.1 as 65099;
  graceful restart off;
  ipv4 { import all; export all; };
}
BIRD
# Routes that are withdrawn later by emptying these files and reconfiguring.
echo 'route 198.51.100.0/24 blackhole { bgp_community.add((65002,20)); };' >"$work/extra4.conf"
echo 'route 2001:db8:c::/48 blackhole;' >"$work/extra6.conf"

ip netns exec "$G" tcpdump -i vg -s 0 -U -w "$work/bgp.pcap" 'tcp port 179' 2>"$work/tcpdump.log" &
disown  # cleanup kills it; keep bash from reporting that as an error
wait_for 10 "tcpdump to start" grep -q 'listening on' "$work/tcpdump.log"

# Fail fast on a config error instead of timing out on sessions below.
bird -p -c "$work/bird.conf"
ip netns exec "$B" bird -f -c "$work/bird.conf" -s "$work/bird.ctl" >"$work/bird.log" 2>&1 &
disown
ip netns exec "$G" gobgpd -f "$work/gobgpd.toml" --api-hosts 127.0.0.1:50051 --pprof-disable >"$work/gobgpd.log" 2>&1 &
disown
for n in 10.0.0.2 fd00::2 10.0.1.2; do wait_for 20 "gobgpd session $n" established "$n"; done
sleep 1

echo "announce from gobgpd"
gobgp global rib add 192.0.2.0/24 nexthop 10.0.0.1 origin igp aspath 65010,65011 med 100 local-pref 300 \
    community 65001:100,65001:200 large-community 65001:1:2 -a ipv4
gobgp global rib add 2001:db8:a::/48 nexthop fd00::1 origin igp med 10 community 65001:600 \
    large-community 65001:6:0 -a ipv6
sleep 2

echo "withdraw from gobgpd and BIRD"
gobgp global rib del 192.0.2.0/24 -a ipv4
gobgp global rib del 2001:db8:a::/48 -a ipv6
: >"$work/extra4.conf"
: >"$work/extra6.conf"
birdc configure >/dev/null
sleep 2

echo "route refresh"
# gobgp 3.10 keeps an Adj-RIB-In and never sends ROUTE-REFRESH (softresetin re-applies its
# import policy locally); it is run anyway so a future gobgp that does would be captured.
gobgp neighbor 10.0.0.2 softresetin
gobgp neighbor fd00::2 softresetin
birdc reload in ebgp4 >/dev/null
birdc reload in peer_ibgp >/dev/null
sleep 4  # and a keepalive or two

echo "graceful restart of gobgpd (kill -9, restart with -r)"
for p in $(ip netns pids "$G"); do
    if [[ $(cat /proc/"$p"/comm 2>/dev/null) == gobgpd ]]; then kill -9 "$p"; fi
done
sleep 1
ip netns exec "$G" gobgpd -r -f "$work/gobgpd.toml" --api-hosts 127.0.0.1:50051 --pprof-disable >>"$work/gobgpd.log" 2>&1 &
disown
for n in 10.0.0.2 fd00::2; do wait_for 30 "gobgpd session $n after restart" established "$n"; done
sleep 2

echo "administrative shutdown from BIRD"
birdc disable ebgp4 >/dev/null
sleep 1
for p in $(ip netns pids "$G"); do
    if [[ $(cat /proc/"$p"/comm 2>/dev/null) == tcpdump ]]; then kill -INT "$p"; fi
done
wait_for 10 "tcpdump to finish" grep -q 'packets captured' "$work/tcpdump.log"

mkdir -p "$out"
rm -f "$out"/*.hex
python3 "$here/bgp_capture_extract.py" "$work/bgp.pcap" "$out" \
    --peer 10.0.0.1=gobgp --peer 10.0.1.1=gobgp --peer 10.0.2.1=gobgp --peer fd00::1=gobgp \
    --peer 10.0.0.2=bird --peer 10.0.1.2=bird --peer 10.0.2.2=bird --peer fd00::2=bird \
    --session 10.0.0.1=ebgp-v4 --session 10.0.0.2=ebgp-v4 \
    --session fd00::1=ebgp-v6 --session fd00::2=ebgp-v6 \
    --session 10.0.1.1=ibgp --session 10.0.1.2=ibgp \
    --session 10.0.2.1=wrong-peer-as --session 10.0.2.2=wrong-peer-as
