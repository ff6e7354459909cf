#!/usr/bin/env bash
# The Helm chart test (ctest e2e/test_chart): lints helm/granary, renders
# it with the default values and with a non-default values file, checks the
# rendered objects, checks that the values schema refuses bad values, and
# checks that manifests/ is exactly what scripts/render-manifests.sh makes
# from the chart now.
#
#   e2e/helm/test_chart.sh [REPO_ROOT]
#
# helm: $HELM, else $GRANARY_TOOLS/bin/helm (scripts/setup.sh builds it),
# else PATH. The checks parse YAML with PyYAML when it is installed, else with
# a small parser for the subset that the chart renders (when both exist, the
# two must agree on every rendered document).
set -euo pipefail

root=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
tools=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
helm=${HELM:-}
if [ -z "$helm" ]; then
  if [ -x "$tools/bin/helm" ]; then
    helm=$tools/bin/helm
  elif command -v helm >/dev/null 2>&1; then
    helm=$(command -v helm)
  else
    echo "test_chart: FAIL: helm not found in $tools/bin or PATH: run scripts/setup.sh" >&2
    exit 1
  fi
fi
export HELM=$helm

cd "$root"
chart=helm/granary
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
passed=0

ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failures=$((failures + 1)); echo "FAIL: $*" >&2; }

# A values file that moves every knob the checks look at off its default.
cat >"$work/custom.yaml" <<'EOF'
fullnameOverride: gran
logLevel: debug
image:
  repository: registry.example.com/ml/granary
  tag: "0.2.0-rc1"
cache:
  dir: /mnt/nvme0/granary-cache
  hostPathType: Directory
  capacity: 750Gi
  blockSize: 8Mi
  policy: lru
store:
  endpoint: http://minio.storage.svc:9000
  region: eu-west-1
  allowedEndpoints:
    - https://s3.eu-west-1.amazonaws.com
    - http://10.0.0.5:7070
  credentials:
    existingSecret: cluster-s3
clusterToken:
  existingSecret: team-granary-token
  existingSecretKey: hmac
metaKeys:
  existingSecret: team-meta-keys
meta:
  persistence:
    enabled: true
    size: 20Gi
  extraConfig:
    heartbeat:
      expiry: 30s
worker:
  port: 7481
  probePort: 7490
  extraConfig:
    fetch:
      max_inflight: 256
node:
  kubeletDir: /var/lib/k0s/kubelet
  fuseConfig:
    prefetch:
      blocks: 8
  tolerations:
    - key: nvidia.com/gpu
      operator: Exists
      effect: NoSchedule
  nodeSelector:
    node-role.example.com/gpu: "true"
  priorityClassName: ""
storageClass:
  create: true
  name: granary-coco
  source: s3://datasets/coco/
  endpoint: https://s3.eu-west-1.amazonaws.com
  region: eu-west-1
  blockSize: 16Mi
  cachePolicy: lru
  pin: true
  preload: true
  secretName: coco-s3
  secretNamespace: ml-team
datasets:
  clusterCredentials:
    - sources: ["*"]
    - namespace: ml-team
      sources: [s3://datasets/coco/, s3://datasets/imagenet/train/]
    - namespace: "*"
      sources: [s3://public-datasets/]
EOF
# tolerations for the worker too, through --set-json (another values path).
worker_tolerations='[{"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"}]'

# 1. lint
if "$helm" lint --strict "$chart" >"$work/lint.out" 2>&1; then
  ok "helm lint --strict $chart"
else
  cat "$work/lint.out" >&2
  fail "helm lint --strict $chart"
fi
if "$helm" lint --strict "$chart" -f "$work/custom.yaml" >"$work/lint2.out" 2>&1; then
  ok "helm lint --strict with custom values"
else
  cat "$work/lint2.out" >&2
  fail "helm lint --strict with custom values"
fi

# 2. render
render() { "$helm" template granary "$chart" --namespace granary-system "$@"; }
if render >"$work/default.yaml" 2>"$work/default.err"; then
  ok "render with default values"
else
  cat "$work/default.err" >&2
  fail "render with default values"
fi
if render -f "$work/custom.yaml" --set-json "worker.tolerations=$worker_tolerations" \
  >"$work/custom.out.yaml" 2>"$work/custom.err"; then
  ok "render with custom values"
else
  cat "$work/custom.err" >&2
  fail "render with custom values"
fi
# the workers' store keys given as values: the chart makes their Secret
if render --set store.credentials.accessKeyID=AKIDEXAMPLE \
  --set store.credentials.secretAccessKey=wJalrXUtnFEMI/K7MDENG \
  >"$work/keys.yaml" 2>"$work/keys.err"; then
  ok "render with store credentials in values"
else
  cat "$work/keys.err" >&2
  fail "render with store credentials in values"
fi

# meta.address is the one value every component that dials meta uses: the
# worker's, the node plugin's, the controller's and the FUSE daemons'
# configs, nothing else.
render --set meta.address=meta.example.net:7400 >"$work/meta-address.yaml"
uses=$(grep -c 'address: meta.example.net:7400' "$work/meta-address.yaml" || true)
others=$(grep -c 'granary-meta.granary-system.svc' "$work/meta-address.yaml" || true)
if [ "$uses" = 4 ] && [ "$others" = 0 ]; then
  ok "meta.address reaches worker.yaml, the node's and the controller's csi.yaml and fuse.yaml, and only them"
else
  fail "meta.address used $uses times (want 4), the Service name still $others times"
fi

# fileRoots: off by default everywhere; set, it reaches the four daemons that
# check file:// sources, and each directory is mounted read-only at the same
# path in every container that reads it (meta, both granary-csi, the worker).
render >"$work/no-file-roots.yaml"
if [ "$(grep -c 'allowed_file_roots: ""' "$work/no-file-roots.yaml" || true)" = 4 ] &&
   ! grep -q 'file-root-' "$work/no-file-roots.yaml"; then
  ok "fileRoots empty by default: allowed_file_roots "" in four configs, no host directory mounted"
else
  fail "default render: allowed_file_roots not '' in four configs, or a file root mounted"
fi
render --set 'fileRoots={/srv/datasets,/mnt/shared}' >"$work/file-roots.yaml"
roots=$(grep -c 'allowed_file_roots: /srv/datasets,/mnt/shared' "$work/file-roots.yaml" || true)
mounts=$(grep -A2 -- '- name: file-root-1' "$work/file-roots.yaml" | grep -c 'mountPath: /mnt/shared' || true)
ro=$(grep -A2 -- '- name: file-root-1' "$work/file-roots.yaml" | grep -c 'readOnly: true' || true)
vols=$(grep -A3 -- '- name: file-root-0' "$work/file-roots.yaml" | grep -c 'path: /srv/datasets' || true)
if [ "$roots" = 4 ] && [ "$mounts" = 4 ] && [ "$ro" = 4 ] && [ "$vols" = 3 ]; then
  ok "fileRoots reach meta, the controller, the node plugin and the worker, mounted read-only"
else
  fail "fileRoots: allowed_file_roots in $roots configs (want 4), /mnt/shared mounted $mounts times read-only $ro (want 4), /srv/datasets a hostPath volume $vols times (want 3 pods)"
fi

# networkPolicy: on by default; metricsFrom opens the health and metrics
# ports, and only those, to its peers (both checked in 4.); enabled=false
# renders none.
render --set networkPolicy.enabled=false >"$work/no-netpol.yaml"
if grep -q '^kind: NetworkPolicy' "$work/no-netpol.yaml"; then
  fail "networkPolicy.enabled=false still renders a NetworkPolicy"
else
  ok "networkPolicy.enabled=false renders no NetworkPolicy"
fi
render --set-json 'networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]' \
  --show-only templates/networkpolicy.yaml >"$work/netpol-metrics.yaml"
render --set-json 'networkPolicy.probeFrom=[{"ipBlock":{"cidr":"10.0.0.0/16"}}]' \
  --show-only templates/networkpolicy.yaml >"$work/netpol-probe.yaml"

# metrics: ServiceMonitors and the dashboard ConfigMap when asked for (both
# checked in 4.), no scrape annotations when they are turned off.
render --set metrics.serviceMonitor.enabled=true --set metrics.dashboard.enabled=true \
  --set-json 'metrics.serviceMonitor.labels={"release":"kps"}' \
  --set metrics.dashboard.namespace=monitoring >"$work/monitoring.yaml"
# TLS on (mutual by default) and the egress policies on: checked below.
render --set tls.enabled=true --set networkPolicy.egress.enabled=true \
  --set metrics.serviceMonitor.enabled=true \
  --set 'networkPolicy.egress.storeCIDRs={10.20.0.0/16,192.0.2.7/32}' \
  --set 'networkPolicy.egress.apiServerCIDRs={10.96.0.1/32}' \
  --set 'networkPolicy.egress.dnsCIDRs={169.254.20.10/32}' >"$work/tls.yaml"
render --set tls.enabled=true --set tls.mutual=false --set tls.existingSecret=my-tls \
  --set metrics.serviceMonitor.enabled=true >"$work/tls-own.yaml"
render --set tls.enabled=true --set tls.existingSecrets.meta=own-meta \
  --set tls.existingSecrets.worker=own-worker --set tls.existingSecrets.client=own-client \
  --set metrics.serviceMonitor.enabled=true >"$work/tls-roles.yaml"

# A cache directory or file root that holds STATE/node would show every
# volume's directory to each mount pod (granary-csi refuses such a
# template at start): refused at render, naming the value.
for bad in "cache.dir=/var/lib/granary" "fileRoots={/srv,/}"; do
  if render --set "$bad" >/dev/null 2>"$work/overlap.err"; then
    fail "--set $bad renders, though it holds node.stateDir/node"
  elif grep -q "holds node.stateDir's node/ directory" "$work/overlap.err"; then
    ok "--set $bad refused: $(grep -o "[a-zA-Z.]*: '[^']*' holds" "$work/overlap.err")"
  else
    fail "--set $bad refused without naming the overlap: $(cat "$work/overlap.err")"
  fi
done

# A long release name: the mount pods' name prefix stays within the 40
# characters granary-csi takes (it refuses to start with a longer one).
"$helm" template datasets-platform-production-eu1 "$chart" --namespace granary-system \
  --show-only templates/configmaps.yaml >"$work/long-name.yaml"
prefix=$(grep -o '"name":"[^"]*-mount"' "$work/long-name.yaml" | head -1 | cut -d'"' -f4)
if [ -n "$prefix" ] && [ "${#prefix}" -le 40 ]; then
  ok "a 31-character release name gives mount pods a name prefix of ${#prefix} characters ($prefix)"
else
  fail "mount pod name prefix '$prefix' (${#prefix} characters; granary-csi takes at most 40)"
fi
render --set metrics.annotations=false >"$work/no-annotations.yaml"
if grep -q 'prometheus.io/' "$work/no-annotations.yaml"; then
  fail "metrics.annotations=false still renders prometheus.io annotations"
else
  ok "metrics.annotations=false renders no scrape annotation"
fi

# 3. the schema (or the chart's own checks) refuses bad values
refuse() {
  local what=$1
  shift
  if render "$@" >/dev/null 2>"$work/refuse.err"; then
    fail "schema accepted $what"
  else
    ok "schema refuses $what: $(tr '\n' ' ' <"$work/refuse.err" | sed -n -e "s/.*\(at '[^']*'.*\)/\1/p" \
      -e "s/.*execution error at ([^)]*): \(.*\)  Use --debug.*/\1/p" | cut -c1-90)"
  fi
}
refuse "an unknown key" --set cache.size=1Gi
refuse "cache.policy=fifo" --set cache.policy=fifo
refuse "cache.capacity=lots" --set cache.capacity=lots
refuse "a relative cache.dir" --set cache.dir=var/cache
refuse "privileged sidecars" --set sidecars.securityContext.privileged=true
refuse "a short cluster token" --set clusterToken.value=short
refuse "meta.address without a port" --set meta.address=meta.example.net
refuse "a source without s3://" --set storageClass.source=imagenet
refuse "a relative file root" --set 'fileRoots={datasets}'
refuse "controller.replicas above 1 with meta.persistence" --set controller.replicas=2 \
  --set meta.persistence.enabled=true
render --set node.mountPods.admissionPolicy=false >"$work/no-vap.yaml"
render --set node.mountPods.enabled=false >"$work/no-mount-pods.yaml"
if grep -q 'name: granary-granary-system-mount-pods' "$work/no-vap.yaml" "$work/no-mount-pods.yaml"; then
  fail "an admission policy for mount pods without node.mountPods.admissionPolicy or enabled"
else
  ok "no admission policy for mount pods when turned off or without mount pods"
fi
render --set datasets.cacheGatePolicy=false >"$work/no-gate-vap.yaml"
render --set datasets.cacheGate=false >"$work/no-gate.yaml"
if grep -q 'name: granary-granary-system-cache-gate' "$work/no-gate-vap.yaml" "$work/no-gate.yaml"; then
  fail "an admission policy for the cache gate without datasets.cacheGatePolicy or cacheGate"
else
  ok "no admission policy for the cache gate when turned off or without the gate"
fi
render --set criticalPodsQuota.enabled=true --set criticalPodsQuota.pods=500 \
  --show-only templates/resourcequota.yaml >"$work/quota.yaml"
if render | grep -q '^kind: ResourceQuota'; then
  fail "a ResourceQuota without criticalPodsQuota.enabled"
else
  ok "no ResourceQuota by default"
fi
refuse "controller.replicas of 0" --set controller.replicas=0
refuse "worker.probePort equal to worker.port" --set worker.probePort=7480
refuse "meta.port on granary-csi's health port" --set meta.port=9808
refuse "metrics.metaPort on the csi-provisioner's port" --set metrics.metaPort=8080
refuse "metrics.metaPort equal to meta.port" --set metrics.metaPort=7400
if render --set controller.replicas=3 >"$work/replicas.yaml" &&
   grep -q '^  replicas: 3$' "$work/replicas.yaml"; then
  ok "controller.replicas=3 renders three competing replicas"
else
  fail "controller.replicas=3 does not render"
fi
refuse "store.credentials: existingSecret and keys" \
  --set store.credentials.existingSecret=s3 --set store.credentials.accessKeyID=a \
  --set store.credentials.secretAccessKey=b
refuse "store.credentials: accessKeyID alone" --set store.credentials.accessKeyID=a
refuse "an allowed endpoint that is not http(s)" --set 'store.allowedEndpoints={ftp://x}'
refuse "networkPolicy.enabled=maybe" --set networkPolicy.enabled=maybe
refuse "tls.enabled=maybe" --set tls.enabled=maybe
refuse "an unknown tls value" --set tls.certFile=/x
refuse "a store CIDR that is not one" --set 'networkPolicy.egress.storeCIDRs={s3.example.com}'
refuse "a DNS CIDR that is not one" --set 'networkPolicy.egress.dnsCIDRs={node-local-dns}'
refuse "two allowed endpoints in one item" --set-json 'store.allowedEndpoints=["http://a,http://b"]'
refuse "a datasets.clusterCredentials rule without a source" \
  --set-json 'datasets.clusterCredentials=[{"namespace":"team-a","sources":[]}]'
refuse "a datasets.clusterCredentials source not ending in /" \
  --set-json 'datasets.clusterCredentials=[{"namespace":"team-a","sources":["s3://shared/x"]}]'
refuse "a datasets.clusterCredentials source with a .. segment" \
  --set-json 'datasets.clusterCredentials=[{"namespace":"team-a","sources":["s3://shared/../x/"]}]'
refuse "a datasets.clusterCredentials namespace that is none" \
  --set-json 'datasets.clusterCredentials=[{"namespace":"Team_A","sources":["*"]}]'
refuse "tls.existingSecrets for some roles only" --set tls.enabled=true \
  --set tls.existingSecrets.meta=own-meta --set tls.existingSecrets.worker=own-worker

# 4. the rendered objects
if python3 - "$work/default.yaml" "$work/custom.out.yaml" "$work/keys.yaml" \
  "$work/netpol-metrics.yaml" "$work/monitoring.yaml" "$root/$chart/dashboards/granary.json" \
  "$work/tls.yaml" "$work/tls-own.yaml" "$work/netpol-probe.yaml" "$work/quota.yaml" \
  "$work/tls-roles.yaml" <<'PY'
import base64
import json
import re
import sys

# ---- YAML: PyYAML when present, else a parser for what helm renders here:
# block mappings and sequences, plain/quoted scalars, [a, "b"] and {} flows,
# literal blocks (|, |-), comments and --- separators.

BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
        "FALSE": False, "yes": True, "Yes": True, "YES": True, "no": False,
        "No": False, "NO": False, "on": True, "On": True, "ON": True,
        "off": False, "Off": False, "OFF": False}
KEY = re.compile(r'^(?:"((?:[^"\\]|\\.)*)"|\'((?:[^\']|\'\')*)\'|([^\s"\'\[{#-][^:#]*?|-[^\s:][^:#]*?))\s*:(?:\s+(.*))?$')


def scalar(text):
    t = text.strip()
    if t.startswith('"'):
        end = re.match(r'"((?:[^"\\]|\\.)*)"\s*(#.*)?$', t)
        if not end:
            raise ValueError("bad double-quoted scalar: " + t)
        return json.loads('"' + end.group(1) + '"')
    if t.startswith("'"):
        end = re.match(r"'((?:[^']|'')*)'\s*(#.*)?$", t)
        if not end:
            raise ValueError("bad single-quoted scalar: " + t)
        return end.group(1).replace("''", "'")
    if t.startswith("["):
        inner = t[1:t.rindex("]")].strip()
        if not inner:
            return []
        items, cur, q = [], "", None
        for ch in inner:
            if q:
                cur += ch
                if ch == q:
                    q = None
            elif ch in "\"'":
                q = ch
                cur += ch
            elif ch == ",":
                items.append(cur)
                cur = ""
            elif ch in "[{":
                raise ValueError("nested flow collections are not supported: " + t)
            else:
                cur += ch
        items.append(cur)
        return [scalar(i) for i in items]
    if t.startswith("{"):
        if re.match(r"^\{\s*\}$", t):
            return {}
        raise ValueError("non-empty flow mappings are not supported: " + t)
    t = re.sub(r"\s+#.*$", "", t)
    if t in ("", "~", "null", "Null", "NULL"):
        return None
    if t in BOOL:
        return BOOL[t]
    if re.match(r"^[-+]?0[0-7_]+$", t):
        return int(t.replace("_", ""), 8)
    if re.match(r"^[-+]?0x[0-9a-fA-F_]+$", t):
        return int(t.replace("_", ""), 16)
    if re.match(r"^[-+]?(0|[1-9][0-9_]*)$", t):
        return int(t.replace("_", ""))
    if re.match(r"^[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?$", t) and re.search(r"[0-9]", t):
        return float(t.replace("_", ""))
    return t


class Lines:
    def __init__(self, text):
        self.raw = text.split("\n")
        self.i = 0

    def skip(self):
        while self.i < len(self.raw):
            s = self.raw[self.i].strip()
            if s and not s.startswith("#"):
                return
            self.i += 1

    def peek(self):
        self.skip()
        if self.i >= len(self.raw):
            return None, None
        line = self.raw[self.i]
        return len(line) - len(line.lstrip(" ")), line.strip()


def is_item(s):
    return s == "-" or s.startswith("- ")


def block_scalar(lines, indent, style):
    out, block = [], None
    while lines.i < len(lines.raw):
        line = lines.raw[lines.i]
        if line.strip() == "":
            out.append("")
            lines.i += 1
            continue
        ind = len(line) - len(line.lstrip(" "))
        if block is None:
            if ind <= indent:
                break
            block = ind
        if ind < block:
            break
        out.append(line[block:])
        lines.i += 1
    text = "\n".join(out)
    if style == "|-":
        return text.rstrip("\n")
    if style == "|+":
        return text + "\n"
    return text.rstrip("\n") + "\n" if text.strip("\n") else ""


def node(lines, indent):
    ind, s = lines.peek()
    if s is None or ind < indent:
        return None
    return sequence(lines, ind) if is_item(s) else mapping(lines, ind)


def value_after_key(lines, indent, rest):
    if rest is None or rest == "":
        ind, s = lines.peek()
        if s is not None and (ind > indent or (ind == indent and is_item(s))):
            return node(lines, ind)
        return None
    if rest in ("|", "|-", "|+"):
        return block_scalar(lines, indent, rest)
    if rest.startswith(">") or rest.startswith("&") or rest.startswith("*") or rest.startswith("!"):
        raise ValueError("unsupported YAML: " + rest)
    return scalar(rest)


def mapping(lines, indent):
    out = {}
    while True:
        ind, s = lines.peek()
        if s is None or ind < indent:
            return out
        if ind > indent or is_item(s):
            raise ValueError("line %d: bad indentation: %r" % (lines.i + 1, s))
        m = KEY.match(s)
        if not m:
            raise ValueError("line %d: expected key: value, got %r" % (lines.i + 1, s))
        key = m.group(1) if m.group(1) is not None else (
            m.group(2).replace("''", "'") if m.group(2) is not None else m.group(3).strip())
        if m.group(1) is not None:
            key = json.loads('"' + key + '"')
        lines.i += 1
        if key in out:
            raise ValueError("duplicate key %r" % key)
        out[key] = value_after_key(lines, indent, m.group(4))


def sequence(lines, indent):
    out = []
    while True:
        ind, s = lines.peek()
        if s is None or ind != indent or not is_item(s):
            return out
        content = s[1:].strip()
        if content == "":
            lines.i += 1
            out.append(node(lines, indent + 1))
        elif content in ("|", "|-", "|+"):
            # "- |": a literal block as the item (a shell script).
            lines.i += 1
            out.append(block_scalar(lines, indent, content))
        elif KEY.match(content) and content[0] not in "[{":
            # "- key: value": a mapping whose first key sits after the dash.
            lines.raw[lines.i] = " " * (indent + 2) + content
            out.append(mapping(lines, indent + 2))
        else:
            lines.i += 1
            out.append(scalar(content))


def tiny_load_all(text):
    docs = []
    for chunk in re.split(r"^---[ \t]*$", text, flags=re.M):
        lines = Lines(chunk)
        doc = node(lines, 0)
        lines.skip()
        if lines.i < len(lines.raw):
            raise ValueError("trailing content: %r" % lines.raw[lines.i])
        if doc is not None:
            docs.append(doc)
    return docs


try:
    import yaml
except ImportError:
    yaml = None


def load_all(path):
    text = open(path).read()
    docs = tiny_load_all(text)
    if yaml is not None:
        ref = [d for d in yaml.safe_load_all(text) if d is not None]
        if ref != docs:
            for a, b in zip(ref, docs):
                if a != b:
                    print("YAML parsers disagree on:\n%s\n%s" % (a, b), file=sys.stderr)
                    break
            raise SystemExit("FAIL: the built-in YAML parser and PyYAML disagree on " + path)
    return docs


# ---- checks

failures = []
passes = 0


def check(cond, what):
    global passes
    if cond:
        passes += 1
    else:
        failures.append(what)
        print("FAIL: " + what, file=sys.stderr)


def find(docs, kind, name=None):
    got = [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    return got


def one(docs, kind, name):
    got = find(docs, kind, name)
    check(len(got) == 1, "exactly one %s %s (found %d)" % (kind, name, len(got)))
    return got[0] if got else {}


def pod(obj):
    return obj.get("spec", {}).get("template", {}).get("spec", {})


def container(podspec, name):
    for c in podspec.get("containers", []):
        if c["name"] == name:
            return c
    check(False, "container %s present" % name)
    return {}


def volume(podspec, name):
    for v in podspec.get("volumes", []):
        if v["name"] == name:
            return v
    check(False, "volume %s present" % name)
    return {}


def probe_command(c, kind="readinessProbe"):
    return c.get(kind, {}).get("exec", {}).get("command")


def mounts_at(c, path):
    return [m for m in c.get("volumeMounts", []) if m["mountPath"] == path]


def hostpath_mounted_at(podspec, c, host, path):
    for m in mounts_at(c, path):
        v = volume(podspec, m["name"])
        if v.get("hostPath", {}).get("path") == host:
            return True
    return False


def config(docs, cm, key):
    data = one(docs, "ConfigMap", cm).get("data", {})
    check(key in data, "ConfigMap %s has %s" % (cm, key))
    return tiny_load_all(data.get(key, ""))[0] if key in data else {}


def init_container(podspec, name):
    for c in podspec.get("initContainers", []):
        if c["name"] == name:
            return c
    check(False, "initContainer %s present" % name)
    return {}


def meta_key_items(podspec, c, keys_secret, what):
    """The role keys c mounts at /etc/granary/meta-key, from keys_secret, mode
    0400: their names, sorted."""
    m = mounts_at(c, "/etc/granary/meta-key")
    check(len(m) == 1, "%s mounts granary-meta's keys at /etc/granary/meta-key" % what)
    if len(m) != 1:
        return []
    sec = volume(podspec, m[0]["name"]).get("secret", {})
    check(sec.get("secretName") == keys_secret and sec.get("defaultMode") == 0o400,
          "%s: keys from Secret %s, mode 0400 (got %s)" % (what, keys_secret, sec))
    items = sec.get("items") or []
    check(all(i.get("path") == i.get("key") for i in items), "%s: each key at its own name" % what)
    return sorted(i.get("key") for i in items)


def mount_of(podspec, c, path):
    """(mount, volume) of what c mounts at path, or ({}, {})."""
    m = mounts_at(c, path)
    check(len(m) == 1, "%s mounts one volume at %s" % (c.get("name"), path))
    if len(m) != 1:
        return {}, {}
    return m[0], volume(podspec, m[0]["name"])


def env_field(c, name):
    for e in c.get("env", []):
        if e["name"] == name:
            return e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    return None


STORE_CREDS = "/etc/granary/store/credentials"


def check_store_credentials(podspec, c, cfg, secret, what):
    """cfg's store.credentials_file is a file that an initContainer builds from
    Secret `secret` (mounted 0400) into a volume c mounts read-only; secret
    None: no credentials file at all."""
    got = cfg.get("store", {}).get("credentials_file")
    if secret is None:
        check(got is None, "%s: no store.credentials_file without store.credentials (%s)" % (what, got))
        check(not any(i["name"] == "store-credentials" for i in podspec.get("initContainers", [])),
              "%s: no store-credentials initContainer without store.credentials" % what)
        return
    check(got == STORE_CREDS, "%s: store.credentials_file %s (got %s)" % (what, STORE_CREDS, got))
    d = STORE_CREDS.rsplit("/", 1)[0]
    m, v = mount_of(podspec, c, d)
    check(m.get("readOnly") is True, "%s mounts the store credentials read-only" % what)
    check("emptyDir" in v and v["emptyDir"].get("medium") == "Memory",
          "%s: the store credentials file is in a memory emptyDir" % what)
    init = init_container(podspec, "store-credentials")
    im, iv = mount_of(podspec, init, d)
    check(im.get("name") == m.get("name") and not im.get("readOnly"),
          "%s: the initContainer writes the volume the daemon reads" % what)
    script = "\n".join(init.get("command", []) + init.get("args", []))
    for k in ("[default]", "aws_access_key_id", "aws_secret_access_key", "accessKeyID",
              "secretAccessKey", "umask 077", "chmod 0400", STORE_CREDS):
        check(k in script, "%s: the initContainer's script has %s" % (what, k))
    secret_vols = [vol for mm in init.get("volumeMounts", []) for vol in [volume(podspec, mm["name"])]
                   if "secret" in vol]
    check(len(secret_vols) == 1, "%s: the initContainer mounts one Secret" % what)
    sv = secret_vols[0].get("secret", {}) if secret_vols else {}
    check(sv.get("secretName") == secret, "%s: store credentials from Secret %s (got %s)"
          % (what, secret, sv.get("secretName")))
    check(sv.get("defaultMode") == 0o400, "%s: the store Secret is mounted 0400" % what)
    check(not any(mm["name"] == secret_vols[0]["name"] for mm in c.get("volumeMounts", []))
          if secret_vols else False, "%s: the daemon does not mount the Secret itself" % what)
    for e in init.get("env", []) + c.get("env", []):
        check("secretKeyRef" not in e.get("valueFrom", {}), "%s: no secret in the environment" % what)
    isc = init.get("securityContext", {})
    check(isc.get("privileged") is False and isc.get("readOnlyRootFilesystem") is True,
          "%s: the initContainer is unprivileged with a read-only root" % what)


def check_labels(docs):
    for d in docs:
        labels = d.get("metadata", {}).get("labels", {})
        for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                  "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of",
                  "app.kubernetes.io/version", "helm.sh/chart"):
            check(k in labels, "%s %s has label %s" % (d["kind"], d["metadata"]["name"], k))


def check_release(docs, prefix, cache_dir, capacity, block_size, kubelet, token_secret,
                  token_key, tolerations_exist, store_secret, worker_port, keys_secret,
                  probe_port):
    # CSIDriver
    drv = one(docs, "CSIDriver", "csi.granary.io").get("spec", {})
    check(drv.get("attachRequired") is False, "CSIDriver attachRequired false")
    check(drv.get("podInfoOnMount") is True, "CSIDriver podInfoOnMount true")
    check(drv.get("fsGroupPolicy") == "None", "CSIDriver fsGroupPolicy None")
    check(drv.get("volumeLifecycleModes") == ["Persistent"], "CSIDriver Persistent only")

    # node plugin DaemonSet
    ds = one(docs, "DaemonSet", prefix + "-node")
    ps = pod(ds)
    plugin = container(ps, "granary-csi")
    sc = plugin.get("securityContext", {})
    check(sc.get("privileged") is True, "node plugin container privileged")
    check("SYS_ADMIN" in sc.get("capabilities", {}).get("add", []), "node plugin has SYS_ADMIN")
    check("--mode=node" in plugin.get("args", []), "node plugin runs --mode=node")
    km = mounts_at(plugin, kubelet)
    check(len(km) == 1 and km[0].get("mountPropagation") == "Bidirectional",
          "node plugin mounts %s with Bidirectional propagation" % kubelet)
    check(hostpath_mounted_at(ps, plugin, kubelet, kubelet), "kubelet dir is the host's %s" % kubelet)
    check(hostpath_mounted_at(ps, plugin, "/dev/fuse", "/dev/fuse"), "node plugin has /dev/fuse")
    check(volume(ps, "fuse-device").get("hostPath", {}).get("type") == "CharDevice",
          "/dev/fuse is a CharDevice hostPath")
    check(hostpath_mounted_at(ps, plugin, cache_dir, cache_dir),
          "node plugin mounts the cache dir %s at the same path" % cache_dir)
    check(hostpath_mounted_at(ps, plugin, kubelet + "/plugins/csi.granary.io", "/csi"),
          "node plugin socket dir is %s/plugins/csi.granary.io" % kubelet)
    # The plugin registers itself with the kubelet: its registration socket
    # is in the host's plugins_registry, and it names the CSI socket by the
    # path the kubelet sees.
    check(hostpath_mounted_at(ps, plugin, kubelet + "/plugins_registry", "/registration"),
          "node plugin mounts %s/plugins_registry at /registration" % kubelet)
    args = plugin.get("args", [])
    check("--registration_socket=/registration/csi.granary.io-reg.sock" in args,
          "node plugin serves /registration/csi.granary.io-reg.sock")
    check("--kubelet_endpoint=%s/plugins/csi.granary.io/csi.sock" % kubelet in args,
          "node plugin names %s/plugins/csi.granary.io/csi.sock to the kubelet" % kubelet)
    check("--health_address=0.0.0.0:9808" in args, "node plugin serves health on 9808")
    check(probe_command(plugin) == ["/usr/bin/granary-probe", "http://127.0.0.1:9808/readyz"],
          "node plugin readiness is granary-probe on /readyz (the reason in the event)")
    check(plugin.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
          "node plugin liveness is /healthz")
    names = [c["name"] for c in ps.get("containers", [])]
    check(names == ["granary-csi"], "node plugin has no sidecar: %s" % names)
    check(ps.get("hostNetwork", False) is False, "node plugin is not on the host network")
    tok = volume(ps, "cluster-token").get("secret", {})
    check(tok.get("secretName") == token_secret, "node plugin token from Secret %s" % token_secret)
    check(tok.get("items", [{}])[0].get("key") == token_key, "token key %s" % token_key)
    check(tok.get("defaultMode") == 0o400, "token file mode 0400")
    ncfg = config(docs, prefix + "-node", "csi.yaml")
    fuse_config = ncfg.get("fuse_config")
    check(fuse_config == "/etc/granary/fuse.yaml", "csi.yaml fuse_config /etc/granary/fuse.yaml (got %s)" % fuse_config)
    m, v = mount_of(ps, plugin, fuse_config or "")
    check(v.get("configMap", {}).get("name") == prefix + "-node" and m.get("subPath") == "fuse.yaml",
          "the node plugin mounts fuse.yaml of ConfigMap %s-node at fuse_config" % prefix)
    m, v = mount_of(ps, plugin, "/etc/granary/csi.yaml")
    check(m.get("subPath") == "csi.yaml" and "--config=/etc/granary/csi.yaml" in plugin.get("args", []),
          "the node plugin reads csi.yaml")
    state = ncfg.get("state_dir", "")
    check(state.startswith("/") and hostpath_mounted_at(ps, plugin, state, state),
          "node plugin state_dir %s is the host's, at the same path" % state)
    check(ncfg.get("allowed_roots") == kubelet, "csi.yaml allowed_roots is the kubelet dir %s (got %s)"
          % (kubelet, ncfg.get("allowed_roots")))
    check("--node_id=$(NODE_NAME)" in plugin.get("args", []) and env_field(plugin, "NODE_NAME") == "spec.nodeName",
          "node plugin node_id is its node's name")
    fcfg = config(docs, prefix + "-node", "fuse.yaml")
    check(fcfg.get("token_file") == "/etc/granary/token/token", "fuse.yaml token_file (got %s)" % fcfg.get("token_file"))
    check(mounts_at(plugin, "/etc/granary/token") and
          volume(ps, mounts_at(plugin, "/etc/granary/token")[0]["name"]).get("secret", {}).get("defaultMode") == 0o400,
          "the node plugin mounts the token (0400) where fuse.yaml says")

    # worker DaemonSet
    w = one(docs, "DaemonSet", prefix + "-worker")
    wps = pod(w)
    wc = container(wps, "granary-worker")
    check(wps.get("hostNetwork") is False, "worker hostNetwork false")
    check(hostpath_mounted_at(wps, wc, cache_dir, cache_dir),
          "worker mounts the host's cache dir %s at the same path" % cache_dir)
    check(wc.get("securityContext", {}).get("privileged") is False, "worker not privileged")
    check(volume(wps, "cluster-token").get("secret", {}).get("secretName") == token_secret,
          "worker token from Secret %s" % token_secret)
    wcfg = config(docs, prefix + "-worker", "worker.yaml")
    wargs = wc.get("args", [])
    adv = "--advertise_address=$(POD_IP):%d" % worker_port
    check(adv in wargs, "worker args have %s: %s" % (adv, wargs))
    check(env_field(wc, "POD_IP") == "status.podIP", "worker env POD_IP from status.podIP")
    check("--node_id=$(NODE_NAME)" in wargs and env_field(wc, "NODE_NAME") == "spec.nodeName",
          "worker node_id is its node's name")
    # Ready only while it can serve (meta accepts its heartbeats, the cache
    # directory is usable); live while the process answers at all.
    # Both on a listener of their own, outside the block port's
    # connection limits (probe_listen).
    check(probe_command(wc) == ["/usr/bin/granary-probe",
                                "http://127.0.0.1:%d/readyz" % probe_port],
          "worker readiness is granary-probe on /readyz: %s" % probe_command(wc))
    check(wc.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz" and
          wc.get("livenessProbe", {}).get("httpGet", {}).get("port") == "probe",
          "worker liveness is /healthz on its probe port")
    check(wcfg.get("listen") == "0.0.0.0:%d" % worker_port, "worker listens on %d" % worker_port)
    check(wcfg.get("probe_listen") == "0.0.0.0:%d" % probe_port,
          "worker's probes listen on %d (got %s)" % (probe_port, wcfg.get("probe_listen")))
    check([(p.get("name"), p.get("containerPort")) for p in wc.get("ports", [])] ==
          [("http", worker_port), ("probe", probe_port)],
          "worker containerPorts http %d and probe %d (got %s)" % (worker_port, probe_port, wc.get("ports")))
    check("advertise_address" not in wcfg, "worker.yaml leaves advertise_address to the flag")
    check_store_credentials(wps, wc, wcfg, store_secret, "worker")
    check(wcfg.get("cache", {}).get("dir") == cache_dir, "worker.yaml cache.dir %s" % cache_dir)
    check(wcfg.get("cache", {}).get("capacity") == capacity,
          "worker.yaml cache.capacity %s (got %s)" % (capacity, wcfg.get("cache", {}).get("capacity")))
    check(wcfg.get("cache", {}).get("block_size") == block_size, "worker.yaml cache.block_size %s" % block_size)
    check(wcfg.get("token_file") == "/etc/granary/token/token", "worker.yaml token_file")
    check(wcfg.get("http", {}).get("dataset_writes") is False,
          "worker.yaml takes datasets from meta alone: http.dataset_writes false (got %s)"
          % wcfg.get("http"))
    check(mounts_at(wc, "/etc/granary/token"), "worker mounts the token dir")
    check(fcfg.get("cache", {}).get("dir") == cache_dir, "fuse.yaml cache.dir is the worker's")
    check(fcfg.get("cache", {}).get("block_size") == block_size, "fuse.yaml block size is the worker's")
    svc = one(docs, "Service", prefix + "-worker")
    check(svc.get("spec", {}).get("ports", [{}])[0].get("port") == wc.get("ports", [{}])[0].get("containerPort"),
          "worker Service port is the worker's")
    for d, what in ((ds, "node plugin"), (w, "worker")):
        tol = pod(d).get("tolerations") or []
        if tolerations_exist:
            check({"operator": "Exists"} in tol, "%s tolerates everything by default" % what)
        else:
            check(tol == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                  "%s has the custom tolerations: %s" % (what, tol))

    # controller
    dep = one(docs, "Deployment", prefix + "-controller")
    cps = pod(dep)
    cc = container(cps, "granary-csi")
    check("--mode=controller" in cc.get("args", []), "controller runs --mode=controller")
    check("--health_address=0.0.0.0:9808" in cc.get("args", []) and
          probe_command(cc) == ["/usr/bin/granary-probe", "http://127.0.0.1:9808/readyz"],
          "controller serves /readyz on 9808 and is ready by it")
    names = sorted(c["name"] for c in cps.get("containers", []))
    check(names == ["csi-provisioner", "granary-csi", "granary-meta"],
          "controller pod: granary-csi, granary-meta, csi-provisioner only: %s" % names)
    prov = container(cps, "csi-provisioner")
    check(prov.get("image", "").startswith("registry.k8s.io/sig-storage/csi-provisioner:"),
          "csi-provisioner image from registry.k8s.io/sig-storage")
    check("--extra-create-metadata" in prov.get("args", []), "provisioner --extra-create-metadata")
    check("--feature-gates=Topology=false" in prov.get("args", []), "provisioner Topology=false")
    sock = volume(cps, "socket-dir")
    check("emptyDir" in sock, "controller socket dir is an emptyDir")
    check(mounts_at(cc, "/csi") and mounts_at(prov, "/csi"), "controller and provisioner share /csi")
    for c in cps.get("containers", []):
        check(c.get("securityContext", {}).get("privileged") is not True, "controller %s not privileged" % c["name"])

    # RBAC of the provisioner
    cr = one(docs, "ClusterRole", prefix + "-controller")
    rules = {(g, r): set(rule["verbs"]) for rule in cr.get("rules", [])
             for g in rule["apiGroups"] for r in rule["resources"]}
    need = {("", "persistentvolumes"): {"get", "list", "watch", "create", "patch", "delete"},
            ("", "persistentvolumeclaims"): {"get", "list", "watch", "update"},
            ("storage.k8s.io", "storageclasses"): {"get", "list", "watch"},
            ("", "events"): {"list", "watch", "create", "update", "patch"},
            ("storage.k8s.io", "csinodes"): {"get", "list", "watch"},
            ("", "nodes"): {"get", "list", "watch"},
            ("storage.k8s.io", "volumeattachments"): {"get", "list", "watch"},
            ("authentication.k8s.io", "tokenreviews"): {"create"}}
    for k, verbs in need.items():
        check(verbs <= rules.get(k, set()), "controller ClusterRole: %s/%s %s" % (k[0] or "core", k[1], sorted(verbs)))
    for kind in ("ClusterRoleBinding", "ServiceAccount"):
        one(docs, kind, prefix + "-controller")
    one(docs, "ServiceAccount", prefix + "-node")

    # meta: a container of the controller pod, seeing the controller's
    # state_dir at the same path
    check(not find(docs, "StatefulSet"), "no meta StatefulSet: meta is in the controller pod")
    spec = dep.get("spec", {})
    check(spec.get("replicas") == 1, "controller Deployment has 1 replica by default")
    # A new replica is Ready only once it holds the Lease the old one gives
    # up at SIGTERM: a rollout must let an old pod go first.
    # (With persistence: one ReadWriteOnce volume, so Recreate.)
    strat = spec.get("strategy", {})
    persistent = bool(find(docs, "PersistentVolumeClaim"))
    check(strat.get("type") == "Recreate" if persistent else
          strat.get("type") == "RollingUpdate" and
          strat.get("rollingUpdate", {}).get("maxUnavailable") == 1,
          "controller Deployment rolls with maxUnavailable 1, or Recreate with persistence (got %s)"
          % strat)
    mc = container(cps, "granary-meta")
    check("--config=/etc/granary/meta.yaml" in mc.get("args", []), "meta reads meta.yaml")
    mm, mv = mount_of(cps, mc, "/etc/granary/meta.yaml")
    check(mv.get("configMap", {}).get("name") == prefix + "-meta" and mm.get("subPath") == "meta.yaml",
          "meta mounts meta.yaml of ConfigMap %s-meta" % prefix)
    mcfg = config(docs, prefix + "-meta", "meta.yaml")
    ccfg = config(docs, prefix + "-controller", "csi.yaml")
    check("--config=/etc/granary/csi.yaml" in cc.get("args", []), "controller reads csi.yaml")
    state = ccfg.get("state_dir", "")
    check(state.startswith("/"), "controller csi.yaml sets state_dir (got %s)" % state)
    cm, cv = mount_of(cps, cc, state)
    mm, mv = mount_of(cps, mc, state)
    check(bool(cm) and cm.get("name") == mm.get("name") and cm.get("subPath") == mm.get("subPath"),
          "meta mounts the controller's state_dir volume at the same path %s" % state)
    check(not cm.get("readOnly"), "the controller can write its state_dir")
    check(mm.get("readOnly") is True, "meta sees the controller's state_dir read-only")
    data_dir = mcfg.get("data_dir", "")
    dm, dv = mount_of(cps, mc, data_dir)
    check(bool(dm) and not dm.get("readOnly") and not data_dir.startswith(state.rstrip("/") + "/")
          and not state.startswith(data_dir.rstrip("/") + "/"),
          "meta's data_dir %s is a writable mount of its own" % data_dir)
    meta_port = [p for p in mc.get("ports", []) if p.get("name") == "grpc"]
    check(len(meta_port) == 1 and str(mcfg.get("listen", "")) == "0.0.0.0:%d" % meta_port[0]["containerPort"],
          "meta listens on all addresses at its grpc port")
    mport = meta_port[0]["containerPort"] if meta_port else 0
    check(ccfg.get("meta", {}).get("address") == "%s-meta.%s.svc:%d" % (prefix, "granary-system", mport),
          "controller reaches the leading meta through the Service (got %s)" % ccfg.get("meta", {}).get("address"))
    check(ccfg.get("ready_needs_meta") is False,
          "the controller's readiness does not wait for meta (a waiting replica's meta is not Ready)")
    kube_cfg = mcfg.get("kube", {})
    check(kube_cfg.get("enabled") is True and kube_cfg.get("lease") == prefix + "-meta"
          and kube_cfg.get("namespace") == "granary-system",
          "meta competes for the Lease %s-meta and runs the Dataset controller (got %s)"
          % (prefix, kube_cfg))
    check("--kube.identity=$(POD_NAME)" in mc.get("args", []) and
          any(e.get("name") == "POD_NAME" and
              e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"
              for e in mc.get("env", [])),
          "meta's Lease identity is its pod name")
    check(mc.get("livenessProbe", {}).get("httpGet", {}).get("port") == "metrics" and
          mc.get("readinessProbe", {}).get("tcpSocket", {}).get("port") == "grpc",
          "meta is Ready only while it listens (leads), and alive by /healthz, which a waiting replica serves too")
    check_store_credentials(cps, mc, mcfg, store_secret, "meta")
    check("store-credentials" not in [m["name"] for m in cc.get("volumeMounts", [])],
          "the CSI controller does not mount the cluster's store credentials")
    msvc = one(docs, "Service", prefix + "-meta").get("spec", {})
    plabels = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    sel = msvc.get("selector", {})
    check(sel and all(plabels.get(k) == v for k, v in sel.items()),
          "Service %s-meta selects the controller pod: %s" % (prefix, sel))
    sport = msvc.get("ports", [{}])[0]
    check(sport.get("port") == mport and sport.get("targetPort") == "grpc",
          "Service %s-meta port %d to meta's grpc port" % (prefix, mport))
    check(not find(docs, "ServiceAccount", prefix + "-meta"), "no ServiceAccount for meta alone")
    addr = "%s-meta.granary-system.svc:%d" % (prefix, mport)
    check(wcfg.get("meta", {}).get("address") == addr, "worker reaches meta at %s" % addr)
    check(fcfg.get("meta", {}).get("address") == addr, "fuse reaches meta at %s" % addr)

    # granary-meta's callers: each pod holds the key of its role only.
    key_dir = "/etc/granary/meta-key"
    token_file = "/etc/granary/token/token"
    auth = mcfg.get("auth", {})
    check(auth == {"csi_key_file": key_dir + "/csi", "worker_key_file": key_dir + "/worker",
                   "mount_key_file": token_file},
          "meta.yaml auth: the csi and worker keys, the cluster token for mounts (got %s)" % auth)
    check("insecure" not in auth, "the chart never serves unsigned calls")
    check(meta_key_items(cps, mc, keys_secret, "meta") == ["csi", "worker"],
          "meta holds the csi and worker keys")
    check(mounts_at(mc, "/etc/granary/token") and
          volume(cps, mounts_at(mc, "/etc/granary/token")[0]["name"]).get("secret", {})
          .get("secretName") == token_secret, "meta mounts the cluster token (the mount role's key)")
    check(meta_key_items(cps, cc, keys_secret, "controller") == ["csi"],
          "the CSI controller holds the csi key only")
    check(ccfg.get("meta", {}).get("key_file") == key_dir + "/csi", "controller csi.yaml meta.key_file")
    ds = one(docs, "DaemonSet", prefix + "-node")
    nps = pod(ds)
    ncfg = config(docs, prefix + "-node", "csi.yaml")
    check(meta_key_items(nps, container(nps, "granary-csi"), keys_secret, "node plugin") == ["csi"],
          "the node plugin holds the csi key only")
    check(ncfg.get("meta", {}).get("key_file") == key_dir + "/csi", "node csi.yaml meta.key_file")
    check(meta_key_items(wps, wc, keys_secret, "worker") == ["worker"],
          "the worker holds the worker key only")
    check(wcfg.get("meta", {}).get("key_file") == key_dir + "/worker", "worker.yaml meta.key_file")
    # A heartbeat also carries the worker pod's own token, which meta
    # reviews against the workers' ServiceAccount and the pod's node.
    id_dir = "/var/run/secrets/granary/identity"
    check(wcfg.get("meta", {}).get("identity_token_file") == id_dir + "/token",
          "worker.yaml meta.identity_token_file (got %s)" % wcfg.get("meta", {}).get("identity_token_file"))
    id_mounts = mounts_at(wc, id_dir)
    id_sources = volume(wps, id_mounts[0]["name"]).get("projected", {}).get("sources", []) if id_mounts else []
    sat = id_sources[0].get("serviceAccountToken", {}) if len(id_sources) == 1 else {}
    check(sat.get("path") == "token" and sat.get("audience") == "granary-meta" and
          sat.get("expirationSeconds") == 600,
          "the worker mounts its projected token for meta at %s (got %s)" % (id_dir, id_sources))
    check(wps.get("serviceAccountName") == prefix + "-worker" and
          wps.get("automountServiceAccountToken") is False,
          "the worker pod runs as %s-worker with no API token mounted" % prefix)
    kube_cfg = mcfg.get("kube", {})
    check(kube_cfg.get("worker_service_account") == prefix + "-worker" and
          kube_cfg.get("token_audience") == "granary-meta",
          "meta.yaml kube: heartbeats only with %s-worker's tokens for granary-meta (got %s)" %
          (prefix, kube_cfg))
    check(fcfg.get("meta", {}).get("key_file") == token_file,
          "fuse.yaml signs meta calls with the cluster token (got %s)" % fcfg.get("meta", {}).get("key_file"))
    mp = json.loads(one(docs, "ConfigMap", prefix + "-node").get("data", {}).get("mount-pod.json", "{}"))
    mps = mp.get("spec", {})
    mount_c = (mps.get("containers") or [{}])[0]
    check(mounts_at(mount_c, "/etc/granary/token") and
          volume(mps, mounts_at(mount_c, "/etc/granary/token")[0]["name"]).get("secret", {})
          .get("secretName") == token_secret,
          "the mount pod mounts the cluster token, its key for meta")
    check(not [v for v in mps.get("volumes", []) if v.get("secret", {}).get("secretName") == keys_secret],
          "the mount pod holds no role key of meta's")
    check(mps.get("securityContext", {}).get("seccompProfile", {}).get("type") == "RuntimeDefault",
          "the mount pod runs with the runtime's default seccomp profile")
    # Every container but the node plugin's (privileged: it mounts) drops
    # every capability: they run as root, with the runtime's defaults else.
    unprivileged = [("the mount pod", mps)] + [
        (kind + " " + name, pod(one(docs, kind, prefix + name)))
        for kind, name in (("Deployment", "-controller"), ("DaemonSet", "-worker"))]
    for what, ps in unprivileged:
        for c in ps.get("initContainers", []) + ps.get("containers", []):
            check(c.get("securityContext", {}).get("capabilities", {}).get("drop") == ["ALL"],
                  "%s: container %s drops every capability (got %s)" %
                  (what, c.get("name"), c.get("securityContext", {}).get("capabilities")))
    check_labels(docs)
    check_network_policies(docs, prefix, mp, worker_port, mport)
    return dep, wcfg, fcfg, mcfg


def selects(selector, labels):
    ml = selector.get("matchLabels", {})
    return bool(ml) and not selector.get("matchExpressions") and \
        all(labels.get(k) == v for k, v in ml.items())


def check_network_policies(docs, prefix, mount_pod, worker_port, meta_port):
    """Only Granary's own pods reach meta's gRPC port and the workers' port:
    each policy selects its component's pods (and no other component's),
    and each allowed peer is a pod selector matching exactly the pods that
    need the port. With metricsFrom empty nothing else is allowed."""
    pods = {
        "controller": one(docs, "Deployment", prefix + "-controller")["spec"]["template"]["metadata"]["labels"],
        "worker": one(docs, "DaemonSet", prefix + "-worker")["spec"]["template"]["metadata"]["labels"],
        "node": one(docs, "DaemonSet", prefix + "-node")["spec"]["template"]["metadata"]["labels"],
        "mount": mount_pod.get("metadata", {}).get("labels", {}),
    }
    check(len(find(docs, "NetworkPolicy")) == 4, "four NetworkPolicies by default")
    want = {"controller": ({"worker", "node", "mount", "controller"}, meta_port),
            "worker": ({"node", "mount"}, worker_port),
            "node": (set(), None), "mount": (set(), None)}
    for comp, (peers, port) in want.items():
        np = one(docs, "NetworkPolicy", "%s-%s" % (prefix, comp)).get("spec", {})
        sel = np.get("podSelector", {})
        check([c for c in pods if selects(sel, pods[c])] == [comp],
              "NetworkPolicy %s selects the %s pods only" % (comp, comp))
        check(np.get("policyTypes") == ["Ingress"], "NetworkPolicy %s is for ingress" % comp)
        rules = np.get("ingress")
        if not peers:
            check(rules == [], "NetworkPolicy %s allows no ingress" % comp)
            continue
        check(isinstance(rules, list) and len(rules) == 1,
              "NetworkPolicy %s has one rule without metricsFrom: %s" % (comp, rules))
        rule = (rules or [{}])[0]
        froms = rule.get("from", [])
        allowed = {c for c in pods for f in froms
                   if set(f) == {"podSelector"} and selects(f["podSelector"], pods[c])}
        check(allowed == peers and len(froms) == len(peers),
              "NetworkPolicy %s: port from %s pods only (got %s)" % (comp, sorted(peers), sorted(allowed)))
        check(rule.get("ports") == [{"protocol": "TCP", "port": port}],
              "NetworkPolicy %s: TCP %s only (got %s)" % (comp, port, rule.get("ports")))


default = load_all(sys.argv[1])
custom = load_all(sys.argv[2])
keys = load_all(sys.argv[3])

# defaults
ctl, wcfg, fcfg, mcfg = check_release(default, "granary", "/var/cache/granary", "100GiB", "4MiB",
                                     "/var/lib/kubelet", "granary-cluster-token", "token", True,
                                     None, 7480, "granary-meta-keys", 7481)
# Bound volumes register their datasets again from their PVs: meta's
# persistence is off by default.
check(not find(default, "PersistentVolumeClaim"), "persistence off by default: no PVC")
check("emptyDir" in volume(pod(ctl), "data"),
      "meta's data_dir and the controller's state_dir on an emptyDir by default")
sec = one(default, "Secret", "granary-cluster-token")
check(len(sec.get("data", {}).get("token", "")) > 64, "default render generates a token")
mk = one(default, "Secret", "granary-meta-keys").get("data", {})
check(sorted(mk) == ["csi", "worker"] and all(len(v) > 64 for v in mk.values()) and
      mk["csi"] != mk["worker"], "default render generates two different meta role keys")
check(not find(default, "StorageClass"), "no StorageClass by default")
check(wcfg.get("cache", {}).get("policy") == "scan-resistant", "default policy scan-resistant")
check(wcfg.get("log", {}).get("level") == "info", "default log level info")
check(pod(one(default, "DaemonSet", "granary-node")).get("priorityClassName") == "system-node-critical",
      "node plugin system-node-critical by default")


def controller_config(docs, prefix):
    return config(docs, prefix + "-controller", "csi.yaml")


# store.allowedEndpoints: by default no endpoint but store.endpoint, in the
# three daemons that check a dataset's endpoint; never in fuse.yaml or the
# node plugin's csi.yaml (they read with a volume's own Secret).
dcc = controller_config(default, "granary")
check(mcfg.get("store", {}).get("allowed_endpoints") == "" and
      wcfg.get("store", {}).get("allowed_endpoints") == "" and
      dcc.get("store", {}).get("allowed_endpoints") == "" and dcc.get("store", {}).get("endpoint") == "",
      "store.allowedEndpoints empty by default in meta.yaml, worker.yaml and the controller's csi.yaml")
check("allowed_endpoints" not in fcfg.get("store", {}), "fuse.yaml has no allowed_endpoints")
# datasets.clusterCredentials: by default the release's namespace alone may
# read (every source) with the cluster's credentials.
check(mcfg.get("datasets", {}).get("cluster_credentials") == "granary-system *",
      "meta.yaml datasets.cluster_credentials: the release's namespace, every source (got %r)" %
      mcfg.get("datasets", {}).get("cluster_credentials"))

# custom values
ctl, wcfg, fcfg, mcfg = check_release(custom, "gran", "/mnt/nvme0/granary-cache", "750GiB", "8MiB",
                                     "/var/lib/k0s/kubelet", "team-granary-token", "hmac", False,
                                     "cluster-s3", 7481, "team-meta-keys", 7490)
check(not find(custom, "Secret"), "existingSecrets: the chart makes no Secret")
pvc = one(custom, "PersistentVolumeClaim", "gran-meta")
check(volume(pod(ctl), "data").get("persistentVolumeClaim", {}).get("claimName") == "gran-meta",
      "persistence on: meta's data_dir and the controller's state_dir on PVC gran-meta")
check(pvc.get("metadata", {}).get("annotations", {}).get("helm.sh/resource-policy") == "keep",
      "meta's PVC is kept on helm uninstall")
check(pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage") == "20Gi", "meta's PVC 20Gi")
check(mcfg.get("store", {}).get("endpoint") == "http://minio.storage.svc:9000", "meta store endpoint")
check(mcfg.get("store", {}).get("region") == "eu-west-1" and wcfg.get("store", {}).get("region") == "eu-west-1",
      "store region reaches meta and the worker")
check(wcfg.get("cache", {}).get("policy") == "lru", "custom policy lru")
check(wcfg.get("fetch", {}).get("max_inflight") == 256, "worker extraConfig merged")
check(wcfg.get("listen") == "0.0.0.0:7481", "worker port 7481")
check(wcfg.get("store", {}).get("endpoint") == "http://minio.storage.svc:9000", "store endpoint")
allowed = "https://s3.eu-west-1.amazonaws.com,http://10.0.0.5:7070"
ccc = controller_config(custom, "gran")
check(mcfg.get("store", {}).get("allowed_endpoints") == allowed and
      wcfg.get("store", {}).get("allowed_endpoints") == allowed and
      ccc.get("store", {}).get("allowed_endpoints") == allowed,
      "store.allowedEndpoints reaches meta, the worker and the controller")
check(ccc.get("store", {}).get("endpoint") == mcfg.get("store", {}).get("endpoint"),
      "the controller checks StorageClass endpoints against meta's store.endpoint")
check(mcfg.get("heartbeat", {}).get("expiry") == "30s" and mcfg.get("heartbeat", {}).get("interval") == "5s",
      "meta extraConfig merged over the defaults")
check(mcfg.get("datasets", {}).get("cluster_credentials") ==
      "granary-system *\nml-team s3://datasets/coco/ s3://datasets/imagenet/train/\n* s3://public-datasets/",
      "datasets.clusterCredentials: one rule a line, a namespace left out the release's (got %r)" %
      mcfg.get("datasets", {}).get("cluster_credentials"))
check(fcfg.get("prefetch", {}).get("blocks") == 8, "fuse extraConfig merged")
check(fcfg.get("log", {}).get("level") == "debug", "log level debug reaches fuse.yaml")
node_ps = pod(one(custom, "DaemonSet", "gran-node"))
check(node_ps.get("nodeSelector") == {"kubernetes.io/os": "linux", "node-role.example.com/gpu": "true"},
      "node nodeSelector merged with the default: %s" % node_ps.get("nodeSelector"))
check("priorityClassName" not in node_ps, "empty priorityClassName is left out")
check(container(node_ps, "granary-csi").get("image") == "registry.example.com/ml/granary:0.2.0-rc1",
      "custom image")
stc = one(custom, "StorageClass", "granary-coco")
check(stc.get("provisioner") == "csi.granary.io", "StorageClass provisioner csi.granary.io")
p = stc.get("parameters", {})
check(p.get("source") == "s3://datasets/coco/" and p.get("blockSize") == "16MiB" and
      p.get("cachePolicy") == "lru" and p.get("pin") == "true" and p.get("preload") == "true" and
      p.get("endpoint") == "https://s3.eu-west-1.amazonaws.com" and p.get("region") == "eu-west-1",
      "StorageClass parameters: %s" % p)
for k in ("provisioner", "node-stage"):
    check(p.get("csi.storage.k8s.io/%s-secret-name" % k) == "coco-s3" and
          p.get("csi.storage.k8s.io/%s-secret-namespace" % k) == "ml-team",
          "StorageClass %s secret coco-s3 in ml-team" % k)
check(all(isinstance(v, str) for v in p.values()), "StorageClass parameters are strings")

# store keys in values: the chart's Secret
ctl, wcfg, fcfg, mcfg = check_release(keys, "granary", "/var/cache/granary", "100GiB", "4MiB",
                                     "/var/lib/kubelet", "granary-cluster-token", "token", True,
                                     "granary-store-credentials", 7480, "granary-meta-keys", 7481)
ssec = one(keys, "Secret", "granary-store-credentials").get("data", {})
check(sorted(ssec) == ["accessKeyID", "secretAccessKey"], "store Secret keys: %s" % sorted(ssec))
check(base64.b64decode(ssec.get("accessKeyID", "")) == b"AKIDEXAMPLE" and
      base64.b64decode(ssec.get("secretAccessKey", "")) == b"wJalrXUtnFEMI/K7MDENG",
      "store Secret holds the keys of values")
csum = [d["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/store-credentials")
        for d in (one(keys, "DaemonSet", "granary-worker"), one(keys, "Deployment", "granary-controller"))]
dsum = [d["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/store-credentials")
        for d in (one(default, "DaemonSet", "granary-worker"), one(default, "Deployment", "granary-controller"))]
check(all(csum) and all(a != b for a, b in zip(csum, dsum)),
      "changing the store credentials rolls the worker and controller pods")

# networkPolicy.metricsFrom: the health and metrics ports, nothing more
mon = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
npm = {d["metadata"]["name"]: d.get("spec", {}) for d in load_all(sys.argv[4])}


def mon_ports(name):
    return sorted(p["port"] for r in npm.get(name, {}).get("ingress", []) if r.get("from") == mon
                  for p in r.get("ports", []))


check(mon_ports("granary-controller") == [7401, 8080, 9808],
      "metricsFrom reaches the controller's 9808, 8080 and meta's 7401 only")
check(mon_ports("granary-worker") == [7480], "metricsFrom reaches the workers' port")
check(mon_ports("granary-node") == [9808], "metricsFrom reaches the node plugins' 9808")
check(npm.get("granary-mount", {}).get("ingress") == [], "metricsFrom does not open the mount pods")
# The node plugins' admission policy: their service account's pod requests
# in the release's namespace, every check named; the binding denies.
vap = one(default, "ValidatingAdmissionPolicy", "granary-granary-system-mount-pods").get("spec", {})
check(vap.get("failurePolicy") == "Fail" and
      vap.get("matchConstraints", {}).get("namespaceSelector") ==
      {"matchLabels": {"kubernetes.io/metadata.name": "granary-system"}} and
      vap.get("matchConstraints", {}).get("resourceRules") ==
      [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "DELETE"],
        "resources": ["pods"]}],
      "the admission policy takes pod creates and deletes in the release's namespace (got %s)"
      % vap.get("matchConstraints"))
check([c.get("expression") for c in vap.get("matchConditions", [])] ==
      ['request.userInfo.username == "system:serviceaccount:granary-system:granary-node"'],
      "the admission policy holds the node plugins' service account alone")
cel = "\n".join(v.get("expression", "") for v in vap.get("validations", []))
for needle in ('"/var/cache/granary"', 'startsWith("/var/lib/granary/csi/node/")',
               'v.secret.secretName == "granary-cluster-token"', 'v.configMap.name == "granary-node"',
               "variables.node", "privileged", "hostPID", "automountServiceAccountToken"):
    check(needle in cel, "the admission policy checks %s" % needle)
check(one(default, "ValidatingAdmissionPolicyBinding", "granary-granary-system-mount-pods")
      .get("spec") == {"policyName": "granary-granary-system-mount-pods", "validationActions": ["Deny"]},
      "the admission policy's binding denies")
# The cache gate's: the controller's pod updates in every namespace.
gate = one(default, "ValidatingAdmissionPolicy", "granary-granary-system-cache-gate").get("spec", {})
check("namespaceSelector" not in gate.get("matchConstraints", {}) and
      gate.get("matchConstraints", {}).get("resourceRules") ==
      [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods"]}] and
      [c.get("expression") for c in gate.get("matchConditions", [])] ==
      ['request.userInfo.username == "system:serviceaccount:granary-system:granary-controller"'],
      "the cache gate's policy takes the controller's pod updates in every namespace (got %s)"
      % gate.get("matchConstraints"))
check(one(default, "ValidatingAdmissionPolicyBinding", "granary-granary-system-cache-gate")
      .get("spec") == {"policyName": "granary-granary-system-cache-gate", "validationActions": ["Deny"]},
      "the cache gate's policy binding denies")
# criticalPodsQuota: room for pods of the critical priority classes in the release's namespace
quota = one(load_all(sys.argv[10]), "ResourceQuota", "granary-critical-pods")
check(quota.get("metadata", {}).get("namespace") == "granary-system" and
      quota.get("spec", {}).get("hard") == {"pods": "500"} and
      quota.get("spec", {}).get("scopeSelector", {}).get("matchExpressions") ==
      [{"scopeName": "PriorityClass", "operator": "In",
        "values": ["system-node-critical", "system-cluster-critical"]}],
      "criticalPodsQuota: a ResourceQuota of 500 pods scoped to the critical priority classes (got %s)"
      % quota.get("spec"))
# networkPolicy.probeFrom: the workers' probe port besides what metricsFrom opens
nodes = [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
npp = {d["metadata"]["name"]: d.get("spec", {}) for d in load_all(sys.argv[9])}
probe_ports = sorted(p["port"] for r in npp.get("granary-worker", {}).get("ingress", [])
                     if r.get("from") == nodes for p in r.get("ports", []))
check(probe_ports == [7480, 7481], "probeFrom reaches the workers' port and their probe port (got %s)"
      % probe_ports)

# metrics: scrape annotations by default, each on the port that serves /metrics
def annotations(docs, kind, name):
    return one(docs, kind, name).get("spec", {}).get("template", {}).get("metadata", {}).get(
        "annotations", {})


for kind, name, port in (("Deployment", "granary-controller", "7401"),
                         ("DaemonSet", "granary-node", "9808"),
                         ("DaemonSet", "granary-worker", "7480")):
    a = annotations(default, kind, name)
    check(a.get("prometheus.io/scrape") == "true" and a.get("prometheus.io/port") == port and
          a.get("prometheus.io/path") == "/metrics",
          "%s %s: prometheus.io annotations for port %s (got %s)" % (kind, name, port, a))
ctl_pod = pod(one(default, "Deployment", "granary-controller"))
meta_c = container(ctl_pod, "granary-meta")
check({"name": "metrics", "containerPort": 7401, "protocol": "TCP"} in meta_c.get("ports", []),
      "granary-meta's container names its metrics port 7401")
check(config(default, "granary-meta", "meta.yaml").get("metrics", {}).get("address") == "0.0.0.0:7401",
      "meta.yaml's metrics.address is 0.0.0.0:7401")
check(not find(default, "ServiceMonitor") and not find(default, "ConfigMap", "granary-dashboard"),
      "no ServiceMonitor nor dashboard by default")

# ServiceMonitors: one per daemon kind, each selecting a Service of the
# render that has the named port, with the labels asked for
mon = load_all(sys.argv[5])
services = find(mon, "Service")
sms = find(mon, "ServiceMonitor")
check(sorted(d["metadata"]["name"] for d in sms) ==
      ["granary-meta", "granary-node", "granary-worker"], "three ServiceMonitors (meta, node, worker)")
for sm in sms:
    spec = sm.get("spec", {})
    sel = spec.get("selector", {}).get("matchLabels", {})
    ep = (spec.get("endpoints") or [{}])[0]
    check(sm.get("apiVersion") == "monitoring.coreos.com/v1", "%s: monitoring.coreos.com/v1" % sm["metadata"]["name"])
    check(sm["metadata"].get("labels", {}).get("release") == "kps", "%s carries the labels asked for" % sm["metadata"]["name"])
    hit = [s for s in services
           if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
    check(len(hit) == 1, "ServiceMonitor %s selects one Service (got %d)" % (sm["metadata"]["name"], len(hit)))
    ports = [p.get("name") for s in hit for p in s.get("spec", {}).get("ports", [])]
    check(ep.get("port") in ports and ep.get("path") == "/metrics" and ep.get("interval") == "30s",
          "ServiceMonitor %s scrapes port %s (one of %s) at /metrics every 30s" % (
              sm["metadata"]["name"], ep.get("port"), ports))
node_svc = one(mon, "Service", "granary-node-metrics").get("spec", {})
node_ports = [c.get("ports", []) for c in pod(one(mon, "DaemonSet", "granary-node")).get("containers", [])]
check(node_svc.get("clusterIP") == "None" and
      node_svc.get("ports", [{}])[0].get("targetPort") in [p.get("name") for ps in node_ports for p in ps],
      "the node plugins' metrics Service is headless and targets a named port of the pod")

# the dashboard: a ConfigMap labelled for Grafana's sidecar that holds the
# chart's JSON unchanged; every panel has a PromQL query
dash = one(mon, "ConfigMap", "granary-dashboard")
check(dash.get("metadata", {}).get("labels", {}).get("grafana_dashboard") == "1",
      "the dashboard ConfigMap is labelled grafana_dashboard=1")
check(dash.get("metadata", {}).get("namespace") == "monitoring", "the dashboard goes to metrics.dashboard.namespace")
try:
    shipped = json.loads(dash.get("data", {}).get("granary.json", ""))
except ValueError as e:
    shipped = {}
    check(False, "the dashboard ConfigMap's granary.json is JSON: %s" % e)
check(shipped == json.load(open(sys.argv[6])), "the dashboard ConfigMap holds helm/granary/dashboards/granary.json")
panels = shipped.get("panels", [])
check(len(panels) >= 7 and all(p.get("targets") and all(t.get("expr") for t in p["targets"]) for p in panels),
      "every dashboard panel has a PromQL query (%d panels)" % len(panels))
titles = " ".join(p.get("title", "") for p in panels).lower()
for want in ("throughput by source", "hit ratio", "fallbacks", "errors by cause", "p50", "memory", "cache used"):
    check(want in titles, "a dashboard panel shows %s" % want)
exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
check("histogram_quantile(0.99" in exprs and "granary_fuse_read_seconds_bucket" in exprs,
      "the latency panel takes p99 from the histogram")

# TLS: off by default (no Secret, no tls keys, plain probes); on, one
# Secret per role (meta, worker, client) with the CA and that role's
# certificates, each pod mounting only its role's items read-only under
# /etc/granary/tls, and every daemon's config naming them; meta asks for
# client certificates unless tls.mutual=false.
TLS_DIR = "/etc/granary/tls"
check(not [s for s in find(default, "Secret") if "-tls" in s["metadata"]["name"]],
      "no TLS Secret by default")
check("tls" not in mcfg and "tls" not in wcfg and "tls" not in wcfg.get("meta", {}) and
      "worker" not in fcfg and "tls" not in fcfg.get("meta", {}),
      "no tls settings in the configs by default")


def tls_items(docs, podspec, c, secret, what):
    m, v = mount_of(podspec, c, TLS_DIR)
    sec = v.get("secret", {})
    check(m.get("readOnly") is True and sec.get("secretName") == secret and
          sec.get("defaultMode") == 0o400,
          "%s mounts Secret %s read-only, mode 0400, at %s (got %s)" % (what, secret, TLS_DIR, sec))
    return sorted(i.get("key") for i in sec.get("items") or [])


def check_tls(docs, prefix, secrets, mutual):
    """secrets: the Secret each role's pods name, {"meta", "worker", "client"}."""
    ns = "granary-system"
    meta_name = "%s-meta.%s.svc" % (prefix, ns)
    worker_name = "%s-worker.%s.svc" % (prefix, ns)
    client = ["client.crt", "client.key"] if mutual else []
    ctl = one(docs, "Deployment", prefix + "-controller")
    cps = pod(ctl)
    wps = pod(one(docs, "DaemonSet", prefix + "-worker"))
    nps = pod(one(docs, "DaemonSet", prefix + "-node"))
    mp = json.loads(one(docs, "ConfigMap", prefix + "-node").get("data", {}).get("mount-pod.json", "{}"))
    mps = mp.get("spec", {})
    check(tls_items(docs, cps, container(cps, "granary-meta"), secrets["meta"], "granary-meta") ==
          ["ca.crt", "meta.crt", "meta.key"], "granary-meta mounts the CA and its own certificate only")
    check(tls_items(docs, cps, container(cps, "granary-csi"), secrets["client"],
                    "the controller's granary-csi") ==
          sorted(["ca.crt"] + client), "the controller's granary-csi mounts the CA (and the client pair)")
    wc = container(wps, "granary-worker")
    check(tls_items(docs, wps, wc, secrets["worker"], "the worker") ==
          sorted(["ca.crt", "worker.crt", "worker.key"] + client),
          "the worker mounts the CA, the workers' certificate (and the client pair)")
    check(tls_items(docs, nps, container(nps, "granary-csi"), secrets["client"], "the node plugin") ==
          sorted(["ca.crt"] + client), "the node plugin mounts the CA (and the client pair)")
    check(tls_items(docs, mps, (mps.get("containers") or [{}])[0], secrets["client"], "the mount pod") ==
          sorted(["ca.crt"] + client), "the mount pod mounts the CA (and the client pair)")
    meta_client = {"ca_file": TLS_DIR + "/ca.crt", "server_name": meta_name}
    if mutual:
        meta_client.update(cert_file=TLS_DIR + "/client.crt", key_file=TLS_DIR + "/client.key")
    m = config(docs, prefix + "-meta", "meta.yaml").get("tls", {})
    want = {"cert_file": TLS_DIR + "/meta.crt", "key_file": TLS_DIR + "/meta.key"}
    if mutual:
        want["client_ca_file"] = TLS_DIR + "/ca.crt"
    check(m == want, "meta.yaml tls: %s (got %s)" % (want, m))
    w = config(docs, prefix + "-worker", "worker.yaml")
    check(w.get("tls") == {"cert_file": TLS_DIR + "/worker.crt", "key_file": TLS_DIR + "/worker.key"},
          "worker.yaml serves HTTPS with the workers' certificate (got %s)" % w.get("tls"))
    check(w.get("meta", {}).get("tls") == meta_client, "worker.yaml meta.tls (got %s)" % w.get("meta", {}).get("tls"))
    for cm in ("-node", "-controller"):
        c = config(docs, prefix + cm, "csi.yaml")
        check(c.get("meta", {}).get("tls") == meta_client, "%s csi.yaml meta.tls (got %s)" % (cm, c.get("meta")))
    f = config(docs, prefix + "-node", "fuse.yaml")
    check(f.get("meta", {}).get("tls") == meta_client, "fuse.yaml meta.tls (got %s)" % f.get("meta"))
    check(f.get("worker", {}).get("tls") == {"ca_file": TLS_DIR + "/ca.crt", "server_name": worker_name},
          "fuse.yaml checks every worker for %s (got %s)" % (worker_name, f.get("worker")))
    check(probe_command(wc) == ["/usr/bin/granary-probe", "--cacert", TLS_DIR + "/ca.crt",
                                "--server-name", worker_name, "https://127.0.0.1:7481/readyz"],
          "the worker's readiness probe speaks HTTPS and checks the name (got %s)" % probe_command(wc))
    check(wc.get("livenessProbe", {}).get("httpGet", {}).get("scheme") == "HTTPS",
          "the worker's liveness probe speaks HTTPS")
    wsm = one(docs, "ServiceMonitor", prefix + "-worker")["spec"]["endpoints"][0]
    check(wsm.get("scheme") == "https" and wsm.get("tlsConfig", {}).get("serverName") == worker_name and
          wsm.get("tlsConfig", {}).get("ca", {}).get("secret", {}).get("name") == secrets["client"],
          "the workers' ServiceMonitor scrapes over HTTPS with the CA and name (got %s)" % wsm)


tls_docs = load_all(sys.argv[7])
ROLES = ("meta", "worker", "client")
check_tls(tls_docs, "granary", {r: "granary-tls-" + r for r in ROLES}, True)
ts = {r: one(tls_docs, "Secret", "granary-tls-" + r).get("data", {}) for r in ROLES}
for r, want in (("meta", ["ca.crt", "meta.crt", "meta.key"]),
                ("worker", ["ca.crt", "worker.crt", "worker.key", "client.crt", "client.key"]),
                ("client", ["ca.crt", "client.crt", "client.key"])):
    check(sorted(ts[r]) == sorted(want),
          "the %s role's TLS Secret holds %s only (got %s)" % (r, want, sorted(ts[r])))
check(len({ts[r]["ca.crt"] for r in ROLES}) == 1 and ts["worker"]["client.key"] == ts["client"]["client.key"],
      "the three TLS Secrets carry one CA and one client pair")
# The one Secret of the charts before, for the rollout from them: the
# worker role's items (what the old pods on every node named), not meta's.
legacy = one(tls_docs, "Secret", "granary-tls").get("data", {})
check(legacy == ts["worker"], "granary-tls holds the worker role's items only (got %s)" % sorted(legacy))
pem = {k: base64.b64decode(v).decode("ascii", "replace") for r in ROLES for k, v in ts[r].items()}
check(len(pem) == 7 and all("BEGIN CERTIFICATE" in pem[k] for k in pem if k.endswith(".crt")) and
      all("PRIVATE KEY" in pem[k] for k in pem if k.endswith(".key")),
      "the TLS Secrets' items are PEM certificates and keys")
# A node's kubelet may read every Secret a pod of that node names, whole:
# no pod on every node (the DaemonSets' and the mount pods') names the
# Secret with meta's key.
holds_meta_key = {s["metadata"]["name"] for s in find(tls_docs, "Secret") if "meta.key" in s.get("data", {})}
mount_pod = json.loads(one(tls_docs, "ConfigMap", "granary-node")["data"]["mount-pod.json"])["spec"]
everywhere = [pod(d) for d in find(tls_docs, "DaemonSet")] + [mount_pod]
named = {v["secret"]["secretName"] for ps in everywhere for v in ps.get("volumes", []) if "secret" in v}
check(holds_meta_key == {"granary-tls-meta"} and not named & holds_meta_key,
      "no DaemonSet or mount pod names the Secret with meta's key (%s; they name %s)"
      % (sorted(holds_meta_key), sorted(named)))
own = load_all(sys.argv[8])
check(not [s for s in find(own, "Secret") if "tls" in s["metadata"]["name"]],
      "tls.existingSecret: the chart makes no TLS Secret")
check_tls(own, "granary", {r: "my-tls" for r in ROLES}, False)
roles = load_all(sys.argv[11])
check(not [s for s in find(roles, "Secret") if "tls" in s["metadata"]["name"]],
      "tls.existingSecrets: the chart makes no TLS Secret")
check_tls(roles, "granary", {r: "own-" + r for r in ROLES}, True)

# Egress: one policy per component, for egress only, to DNS, Granary's own
# pods on meta's and the workers' ports, the API server's and the store's
# CIDRs, and nothing else; none by default.
check(not [n for n in find(default, "NetworkPolicy") if n["metadata"]["name"].endswith("-egress")],
      "no egress NetworkPolicy by default")
for comp in ("controller", "worker", "node", "mount"):
    np = one(tls_docs, "NetworkPolicy", "granary-%s-egress" % comp).get("spec", {})
    check(np.get("policyTypes") == ["Egress"] and not np.get("ingress"),
          "egress policy %s is for egress only" % comp)
    check(np.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == comp,
          "egress policy %s selects the %s pods" % (comp, comp))
    rules = np.get("egress", [])
    tos = [(t, r.get("ports")) for r in rules for t in r.get("to", [])]
    dns = [p for t, p in tos if t.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}
           and t.get("namespaceSelector") == {}]
    check(dns == [[{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]],
          "egress policy %s: DNS on port 53 to the cluster DNS pods" % comp)
    own_pods = [p for t, p in tos if t.get("podSelector", {}).get("matchLabels") ==
                {"app.kubernetes.io/name": "granary", "app.kubernetes.io/instance": "granary"}]
    check(own_pods == [[{"protocol": "TCP", "port": 7400}, {"protocol": "TCP", "port": 7480}]],
          "egress policy %s: Granary's own pods on meta's and the workers' ports" % comp)
    cidrs = sorted((t["ipBlock"]["cidr"], str(p)) for t, p in tos if "ipBlock" in t)
    store = [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 80}]
    api = [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]
    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    check(cidrs == sorted([("10.20.0.0/16", str(store)), ("10.96.0.1/32", str(api)),
                           ("192.0.2.7/32", str(store)), ("169.254.20.10/32", str(dns_ports))]),
          "egress policy %s: the API server's, the store's and a node-local DNS cache's CIDRs only, "
          "each on its ports (got %s)" % (comp, cidrs))
    check(len(tos) == 6, "egress policy %s: nothing else (got %d peers)" % (comp, len(tos)))

print("%d checks passed, %d failed" % (passes, len(failures)))
sys.exit(1 if failures else 0)
PY
then
  ok "rendered objects"
else
  fail "rendered objects"
fi

# 5. manifests/ is a fresh render of the chart
if scripts/render-manifests.sh "$work/manifests" >"$work/render.out" 2>&1; then
  for f in namespace.yaml granary.yaml storageclass-example.yaml; do
    if cmp -s "manifests/$f" "$work/manifests/$f"; then
      ok "manifests/$f matches a fresh render"
    else
      diff -u "manifests/$f" "$work/manifests/$f" | head -40 >&2 || true
      fail "manifests/$f differs from a fresh render: run scripts/render-manifests.sh"
    fi
  done
  if grep -q '^kind: Secret' "$work/manifests/granary.yaml"; then
    fail "manifests/granary.yaml holds a Secret (a committed token)"
  else
    ok "manifests/granary.yaml holds no token"
  fi
else
  cat "$work/render.out" >&2
  fail "scripts/render-manifests.sh"
fi

echo "test_chart: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
