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
clusterToken:
  existingSecret: team-granary-token
  existingSecretKey: hmac
meta:
  persistence:
    enabled: false
  extraConfig:
    heartbeat:
      expiry: 30s
worker:
  port: 7481
  extraConfig:
    fetch:
      max_inflight: 128
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

# 3. the schema refuses bad values
refuse() {
  local what=$1
  shift
  if render "$@" >/dev/null 2>"$work/refuse.err"; then
    fail "schema accepted $what"
  else
    ok "schema refuses $what: $(tr '\n' ' ' <"$work/refuse.err" | sed -n "s/.*\(at '[^']*'.*\)/\1/p" | cut -c1-90)"
  fi
}
refuse "an unknown key" --set cache.size=1Gi
refuse "cache.policy=fifo" --set cache.policy=fifo
refuse "cache.capacity=lots" --set cache.capacity=lots
refuse "a relative cache.dir" --set cache.dir=var/cache
refuse "privileged sidecars" --set sidecars.securityContext.privileged=true
refuse "a short cluster token" --set clusterToken.value=short
refuse "a source without s3://" --set storageClass.source=imagenet

# 4. the rendered objects
if python3 - "$work/default.yaml" "$work/custom.out.yaml" <<'PY'
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


def check_labels(docs):
    for d in docs:
        labels = d.get("metadata", {}).get("labels", {})
        for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                  "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of",
                  "app.kubernetes.io/version", "helm.sh/chart"):
            check(k in labels, "%s %s has label %s" % (d["kind"], d["metadata"]["name"], k))


def check_release(docs, prefix, cache_dir, capacity, block_size, kubelet, token_secret,
                  token_key, tolerations_exist):
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
    reg = container(ps, "node-driver-registrar")
    check(hostpath_mounted_at(ps, reg, kubelet + "/plugins_registry", "/registration"),
          "registrar mounts %s/plugins_registry" % kubelet)
    check("--kubelet-registration-path=%s/plugins/csi.granary.io/csi.sock" % kubelet in reg.get("args", []),
          "registrar registers %s/plugins/csi.granary.io/csi.sock" % kubelet)
    names = [c["name"] for c in ps.get("containers", [])]
    check(sorted(names) == ["granary-csi", "liveness-probe", "node-driver-registrar"],
          "node plugin containers are granary-csi, node-driver-registrar, liveness-probe: %s" % names)
    for c in ps.get("containers", []) + ps.get("initContainers", []):
        if c["name"] == "granary-csi":
            continue
        csc = c.get("securityContext", {})
        check(csc.get("privileged") is False, "sidecar %s is not privileged" % c["name"])
        check(not csc.get("capabilities", {}).get("add"), "sidecar %s adds no capabilities" % c["name"])
        check(all(m.get("mountPropagation", "None") != "Bidirectional" for m in c.get("volumeMounts", [])),
              "sidecar %s has no Bidirectional mount" % c["name"])
    check(ps.get("hostNetwork", False) is False, "node plugin is not on the host network")
    tok = volume(ps, "cluster-token").get("secret", {})
    check(tok.get("secretName") == token_secret, "node plugin token from Secret %s" % token_secret)
    check(tok.get("items", [{}])[0].get("key") == token_key, "token key %s" % token_key)
    check(tok.get("defaultMode") == 0o400, "token file mode 0400")

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
    check(wcfg.get("cache", {}).get("dir") == cache_dir, "worker.yaml cache.dir %s" % cache_dir)
    check(wcfg.get("cache", {}).get("capacity") == capacity,
          "worker.yaml cache.capacity %s (got %s)" % (capacity, wcfg.get("cache", {}).get("capacity")))
    check(wcfg.get("cache", {}).get("block_size") == block_size, "worker.yaml cache.block_size %s" % block_size)
    check(wcfg.get("token_file") == "/etc/granary/token/token", "worker.yaml token_file")
    check(mounts_at(wc, "/etc/granary/token"), "worker mounts the token dir")
    fcfg = config(docs, prefix + "-node", "fuse.yaml")
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
            ("storage.k8s.io", "volumeattachments"): {"get", "list", "watch"}}
    for k, verbs in need.items():
        check(verbs <= rules.get(k, set()), "controller ClusterRole: %s/%s %s" % (k[0] or "core", k[1], sorted(verbs)))
    for kind in ("ClusterRoleBinding", "ServiceAccount"):
        one(docs, kind, prefix + "-controller")
    one(docs, "ServiceAccount", prefix + "-node")

    # meta
    ss = one(docs, "StatefulSet", prefix + "-meta")
    check(ss.get("spec", {}).get("replicas") == 1, "meta StatefulSet has 1 replica")
    one(docs, "Service", prefix + "-meta")
    mcfg = config(docs, prefix + "-meta", "meta.yaml")
    check(str(mcfg.get("listen", "")).endswith(":7400"), "meta listens on 7400")
    addr = "%s-meta.granary-system.svc:7400" % prefix
    check(wcfg.get("meta", {}).get("address") == addr, "worker reaches meta at %s" % addr)
    check(fcfg.get("meta", {}).get("address") == addr, "fuse reaches meta at %s" % addr)
    check_labels(docs)
    return ss, wcfg, fcfg, mcfg


default = load_all(sys.argv[1])
custom = load_all(sys.argv[2])

# defaults
ss, wcfg, fcfg, mcfg = check_release(default, "granary", "/var/cache/granary", "100GiB", "4MiB",
                                     "/var/lib/kubelet", "granary-cluster-token", "token", True)
check(ss.get("spec", {}).get("volumeClaimTemplates", [{}])[0].get("metadata", {}).get("name") == "data",
      "meta keeps data_dir on a PVC by default")
sec = one(default, "Secret", "granary-cluster-token")
check(len(sec.get("data", {}).get("token", "")) > 64, "default render generates a token")
check(not find(default, "StorageClass"), "no StorageClass by default")
check(wcfg.get("cache", {}).get("policy") == "scan-resistant", "default policy scan-resistant")
check(wcfg.get("log", {}).get("level") == "info", "default log level info")
check(pod(one(default, "DaemonSet", "granary-node")).get("priorityClassName") == "system-node-critical",
      "node plugin system-node-critical by default")

# custom values
ss, wcfg, fcfg, mcfg = check_release(custom, "gran", "/mnt/nvme0/granary-cache", "750GiB", "8MiB",
                                     "/var/lib/k0s/kubelet", "team-granary-token", "hmac", False)
check(not find(custom, "Secret"), "existingSecret: the chart makes no Secret")
check(not ss.get("spec", {}).get("volumeClaimTemplates"), "persistence off: no PVC")
check("emptyDir" in volume(pod(ss), "data"), "persistence off: data_dir on an emptyDir")
check(wcfg.get("cache", {}).get("policy") == "lru", "custom policy lru")
check(wcfg.get("fetch", {}).get("max_inflight") == 128, "worker extraConfig merged")
check(wcfg.get("listen") == "0.0.0.0:7481", "worker port 7481")
check(wcfg.get("store", {}).get("endpoint") == "http://minio.storage.svc:9000", "store endpoint")
check(mcfg.get("heartbeat", {}).get("expiry") == "30s" and mcfg.get("heartbeat", {}).get("interval") == "5s",
      "meta extraConfig merged over the defaults")
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
