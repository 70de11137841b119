#!/bin/sh
# CNI install step of the underroute DaemonSet (init container). Copies the plugin binary and
# the conflist into the host's CNI directories, each atomically: written under a temp name in
# the target directory, fsynced, then renamed, so kubelet/containerd never see half a file.
#
#   CNI_BIN_DIR   host CNI bin dir, mounted into the container   (default /host/opt/cni/bin)
#   CNI_CONF_DIR  host CNI config dir, mounted into the container (default /host/etc/cni/net.d)
#   CNI_CONFLIST  the conflist to install, e.g. from a ConfigMap   (default: none, binary only)
#   UNDERROUTE_CNI the plugin binary in this image               (default: underroute-cni on PATH)
set -eu
bin=${UNDERROUTE_CNI:-underroute-cni}
set -- install --bin-dir "${CNI_BIN_DIR:-/host/opt/cni/bin}" --conf-dir "${CNI_CONF_DIR:-/host/etc/cni/net.d}"
if [ -n "${CNI_CONFLIST:-}" ]; then
    set -- "$@" --conflist "$CNI_CONFLIST"
fi
exec "$bin" "$@"
