#!/usr/bin/env python3
"""Validate the manifests in deploy/ offline, against the Kubernetes OpenAPI schemas that the
kubernetes-validate package ships (strict: unknown fields are errors), and check the policy the
project promises: least-privilege RBAC, no privileged container, probes on the metrics port.

  validate.py [--out DIR]   validate deploy/; with --out, write the ConfigMap's agent config
                            and conflist to DIR for further checks
  validate.py --files F...  only the schema validation, for the given files

Run by tests/deploy_manifests.rs. Exits non-zero with one line per problem.
"""

import json
import os
import sys

import kubernetes_validate
import yaml

# The oldest Kubernetes release still supported upstream when this was written, and the newest
# schema the package ships.
VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]
HERE = os.path.dirname(os.path.abspath(__file__))

problems = []


def problem(msg):
    problems.append(msg)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def validate_schema(path, docs):
    for doc in docs:
        name = "%s %s/%s" % (path, doc.get("kind"), doc.get("metadata", {}).get("name"))
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = "/".join(str(p) for p in e.path)
                problem("%s (Kubernetes %s): %s: %s" % (name, version, where, e.message))
            except Exception as e:  # unknown kind or apiVersion: also a failure
                problem("%s (Kubernetes %s): %s" % (name, version, e))


def check_rbac(objects):
    roles = [o for o in objects if o["kind"] in ("ClusterRole", "Role")]
    if len(roles) != 1:
        problem("expected exactly one ClusterRole, found %d" % len(roles))
    for role in roles:
        for rule in role.get("rules", []):
            if set(rule.get("verbs", [])) - {"get", "list", "watch"}:
                problem("%s grants %s: only get/list/watch" % (role["metadata"]["name"], rule["verbs"]))
            if set(rule.get("resources", [])) - {"nodes", "pods"}:
                problem("%s reaches %s: only nodes and pods" % (role["metadata"]["name"], rule["resources"]))
            if rule.get("apiGroups") != [""]:
                problem("%s: only the core API group" % role["metadata"]["name"])


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def check_daemonset(ds, config_text):
    spec = ds["spec"]["template"]["spec"]
    if not spec.get("hostNetwork"):
        problem("DaemonSet: hostNetwork must be true")
    if not any(t.get("operator") == "Exists" and "key" not in t for t in spec.get("tolerations", [])):
        problem("DaemonSet: needs a toleration for every taint (operator: Exists, no key)")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < 15:
        problem("DaemonSet: terminationGracePeriodSeconds %d leaves no time to withdraw" % grace)
    containers = spec["containers"] + spec.get("initContainers", [])
    for c in containers:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            problem("container %s is privileged" % c["name"])
    agent = next((c for c in spec["containers"] if c["name"] == "agent"), None)
    if agent is None:
        problem("DaemonSet: no container named agent")
        return
    caps = agent.get("securityContext", {}).get("capabilities", {})
    if caps.get("drop") != ["ALL"] or not {"NET_ADMIN", "NET_RAW"} <= set(caps.get("add", [])):
        problem("agent: drop ALL capabilities, add NET_ADMIN and NET_RAW")
    ports = {p["name"]: p["containerPort"] for p in agent.get("ports", [])}
    metrics_port = None
    try:
        import tomllib  # Python 3.11+ (Debian 12); the agent's own --check covers the rest

        metrics_port = port_of(tomllib.loads(config_text)["metrics"]["listen"])
    except ImportError:
        pass
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = agent.get(probe, {}).get("httpGet")
        if not get or get.get("path") != path:
            problem("agent: %s must GET %s" % (probe, path))
            continue
        port = ports.get(get["port"], get["port"])
        if metrics_port is not None and port != metrics_port:
            problem("agent: %s port %s is not [metrics] listen's %d" % (probe, port, metrics_port))
    mounts = {m["name"]: m["mountPath"] for c in containers for m in c.get("volumeMounts", [])}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    want = {"/run/underroute": "/run/underroute", "/opt/cni/bin": "/host/opt/cni/bin",
            "/etc/cni/net.d": "/host/etc/cni/net.d"}
    for host, inside in want.items():
        if not any(host_paths.get(n) == host and mounts.get(n) == inside for n in host_paths):
            problem("DaemonSet: hostPath %s must be mounted at %s" % (host, inside))
    install = [c for c in spec.get("initContainers", []) if c.get("command", [])[:2] == ["underroute-cni", "install"]]
    if len(install) != 1:
        problem("DaemonSet: one init container must run `underroute-cni install`")
    if agent.get("command", [])[:5] != ["underroute", "agent", "--kube", "--config", "/etc/underroute/underroute.toml"]:
        problem("agent: must run `underroute agent --kube --config /etc/underroute/underroute.toml`")
    node_name = next((e for e in agent.get("env", []) if e.get("name") == "NODE_NAME"), {})
    if node_name.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        problem("agent: NODE_NAME must come from the downward API (spec.nodeName)")


def main(argv):
    if argv[:1] == ["--files"]:
        for path in argv[1:]:
            validate_schema(path, load(path))
        return finish()
    out = argv[1] if argv[:1] == ["--out"] and len(argv) == 2 else None
    if argv and out is None:
        print(__doc__, file=sys.stderr)
        return 2
    kustomization = load(os.path.join(HERE, "kustomization.yaml"))[0]
    listed = set(kustomization.get("resources", []))
    present = {f for f in os.listdir(HERE) if f.endswith(".yaml") and f != "kustomization.yaml"}
    if listed != present:
        problem("kustomization.yaml resources %s differ from the manifests %s" % (sorted(listed), sorted(present)))
    objects = []
    for name in sorted(present):
        path = os.path.join(HERE, name)
        docs = load(path)
        validate_schema(name, docs)
        objects += docs
    for o in objects:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding") and o["metadata"].get("namespace") != "underroute":
            problem("%s/%s is not in the underroute namespace" % (o["kind"], o["metadata"]["name"]))
    check_rbac(objects)
    cms = [o for o in objects if o["kind"] == "ConfigMap"]
    dss = [o for o in objects if o["kind"] == "DaemonSet"]
    if len(cms) != 1 or len(dss) != 1:
        problem("expected one ConfigMap and one DaemonSet")
        return finish()
    data = cms[0].get("data", {})
    config = data.get("underroute.toml", "")
    check_daemonset(dss[0], config)
    conflists = {k: v for k, v in data.items() if k.endswith(".conflist")}
    if len(conflists) != 1:
        problem("ConfigMap: expected one .conflist")
    for key, text in conflists.items():
        try:
            json.loads(text)
        except ValueError as e:
            problem("ConfigMap: %s is not JSON: %s" % (key, e))
    if out:
        with open(os.path.join(out, "underroute.toml"), "w") as f:
            f.write(config)
        for key, text in conflists.items():
            with open(os.path.join(out, key), "w") as f:
                f.write(text)
    return finish()


def finish():
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
