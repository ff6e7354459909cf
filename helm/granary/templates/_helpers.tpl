{{/*
Names, labels and the daemons' configuration files, shared by every template.
*/}}

{{/* The CSI driver name: fixed, it is what granary-csi answers in GetPluginInfo. */}}
{{- define "granary.driverName" -}}
csi.granary.io
{{- end -}}

{{- define "granary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name, at most 52 characters so that "-controller" and
the like still fit in 63.
*/}}
{{- define "granary.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "granary.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Kubernetes recommended labels. Call with (dict "ctx" $ "component" "node").
*/}}
{{- define "granary.labels" -}}
helm.sh/chart: {{ include "granary.chart" .ctx }}
{{ include "granary.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: granary
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{/* Selector labels: never change them on upgrade (selectors are immutable). */}}
{{- define "granary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "granary.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* Labels of objects that belong to no one component (CSIDriver, Secret). */}}
{{- define "granary.commonLabels" -}}
{{ include "granary.labels" (dict "ctx" . "component" "") }}
{{- end -}}

{{- define "granary.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "granary.sidecarImage" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/*
A size as the daemons read it: the Kubernetes spellings 4Ki/4Mi/100Gi/1Ti
become 4KiB/4MiB/100GiB/1TiB; everything else passes unchanged (the daemons
accept B, K, KiB, KB, M, MiB, MB, ... in any case).
*/}}
{{- define "granary.size" -}}
{{- $s := toString . | trim -}}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)? ?[KkMmGgTt][Ii]$" $s -}}
{{- printf "%sB" $s -}}
{{- else -}}
{{- $s -}}
{{- end -}}
{{- end -}}

{{- define "granary.metaServiceName" -}}
{{- printf "%s-meta" (include "granary.fullname" .) -}}
{{- end -}}

{{/*
Where the node plugin, workers and FUSE daemons reach granary-meta: one
value (meta.address), the chart's Service by default.
*/}}
{{- define "granary.metaAddress" -}}
{{- if .Values.meta.address -}}
{{- .Values.meta.address -}}
{{- else -}}
{{- printf "%s.%s.svc:%d" (include "granary.metaServiceName" .) .Release.Namespace (int .Values.meta.port) -}}
{{- end -}}
{{- end -}}

{{/*
Where the controller reaches granary-meta: the Service, as every component
does, since the meta that leads (holds the Lease) may be another replica's.
*/}}
{{- define "granary.controllerMetaAddress" -}}
{{- include "granary.metaAddress" . -}}
{{- end -}}

{{/* meta's data_dir, in the controller pod. */}}
{{- define "granary.metaDataDir" -}}
/var/lib/granary/meta
{{- end -}}

{{/*
The controller's state_dir: it writes each provisioner secret there as a
credentials file and registers the file's path with meta as the dataset's
credentials_ref, so meta mounts the same volume at the same path.
*/}}
{{- define "granary.controllerStateDir" -}}
/var/lib/granary/csi
{{- end -}}

{{/* The node plugin's files inside its pod. */}}
{{- define "granary.fuseConfigFile" -}}
/etc/granary/fuse.yaml
{{- end -}}

{{- define "granary.tokenSecretName" -}}
{{- if .Values.clusterToken.existingSecret -}}
{{- .Values.clusterToken.existingSecret -}}
{{- else -}}
{{- printf "%s-cluster-token" (include "granary.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "granary.tokenSecretKey" -}}
{{- if .Values.clusterToken.existingSecret -}}
{{- .Values.clusterToken.existingSecretKey -}}
{{- else -}}
token
{{- end -}}
{{- end -}}

{{/* The token file, in every pod that mounts the cluster token. */}}
{{- define "granary.tokenDir" -}}
/etc/granary/token
{{- end -}}

{{- define "granary.tokenFile" -}}
{{- printf "%s/token" (include "granary.tokenDir" .) -}}
{{- end -}}

{{/* The token as a Secret volume: mode 0400, as the worker requires. */}}
{{- define "granary.tokenVolume" -}}
- name: cluster-token
  secret:
    secretName: {{ include "granary.tokenSecretName" . }}
    defaultMode: 0400
    items:
      - key: {{ include "granary.tokenSecretKey" . }}
        path: token
{{- end -}}

{{- define "granary.tokenVolumeMount" -}}
- name: cluster-token
  mountPath: {{ include "granary.tokenDir" . }}
  readOnly: true
{{- end -}}

{{/*
granary-meta's role keys (docs/security.md, "Who may call granary-meta"):
one Secret, keys "csi" and "worker". Each pod mounts only the keys of its
role; the mount role's key is the cluster token.
*/}}
{{- define "granary.metaKeysSecretName" -}}
{{- if .Values.metaKeys.existingSecret -}}
{{- .Values.metaKeys.existingSecret -}}
{{- else -}}
{{- printf "%s-meta-keys" (include "granary.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "granary.metaKeyDir" -}}
/etc/granary/meta-key
{{- end -}}

{{/* The file of one role's key: (include "granary.metaKeyFile" (dict "ctx" $ "role" "csi")). */}}
{{- define "granary.metaKeyFile" -}}
{{- printf "%s/%s" (include "granary.metaKeyDir" .ctx) .role -}}
{{- end -}}

{{/*
The Secret as a volume holding only the given roles' keys, mode 0400:
(include "granary.metaKeyVolume" (dict "ctx" $ "name" "meta-key" "roles" (list "csi"))),
and its mount (dict "ctx" $ "name" "meta-key") at granary.metaKeyDir.
*/}}
{{- define "granary.metaKeyVolume" -}}
- name: {{ .name }}
  secret:
    secretName: {{ include "granary.metaKeysSecretName" .ctx }}
    defaultMode: 0400
    items:
      {{- range .roles }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end -}}

{{- define "granary.metaKeyVolumeMount" -}}
- name: {{ .name }}
  mountPath: {{ include "granary.metaKeyDir" .ctx }}
  readOnly: true
{{- end -}}

{{/* The workers' ServiceAccount (serviceaccounts.yaml). */}}
{{- define "granary.workerServiceAccount" -}}
{{- printf "%s-worker" (include "granary.fullname" .) -}}
{{- end -}}

{{/*
The worker pod's own service account token, for granary-meta only
(audience worker.identityToken.audience): a projected volume the kubelet
rotates; the worker reads the file for every heartbeat and meta reviews it
(docs/security.md, "Who may call granary-meta").
*/}}
{{- define "granary.identityTokenDir" -}}
/var/run/secrets/granary/identity
{{- end -}}

{{- define "granary.identityTokenFile" -}}
{{- printf "%s/token" (include "granary.identityTokenDir" .) -}}
{{- end -}}

{{- define "granary.identityTokenVolume" -}}
- name: identity-token
  projected:
    defaultMode: 0400
    sources:
      - serviceAccountToken:
          path: token
          audience: {{ .Values.worker.identityToken.audience | quote }}
          expirationSeconds: {{ int .Values.worker.identityToken.expirationSeconds }}
{{- end -}}

{{- define "granary.identityTokenVolumeMount" -}}
- name: identity-token
  mountPath: {{ include "granary.identityTokenDir" . }}
  readOnly: true
{{- end -}}

{{/*
The cluster's store credentials (store.credentials): "true" when the worker
and meta get a credentials file, "" when not. Fails on a half-given pair.
*/}}
{{- define "granary.storeCredentials" -}}
{{- $c := .Values.store.credentials -}}
{{- if and $c.existingSecret (or $c.accessKeyID $c.secretAccessKey) -}}
{{- fail "store.credentials: give existingSecret or accessKeyID and secretAccessKey, not both" -}}
{{- end -}}
{{- if and (not $c.existingSecret) (or $c.accessKeyID $c.secretAccessKey) (not (and $c.accessKeyID $c.secretAccessKey)) -}}
{{- fail "store.credentials: accessKeyID and secretAccessKey go together" -}}
{{- end -}}
{{- if or $c.existingSecret $c.accessKeyID -}}
true
{{- end -}}
{{- end -}}

{{- define "granary.storeCredentialsSecretName" -}}
{{- if .Values.store.credentials.existingSecret -}}
{{- .Values.store.credentials.existingSecret -}}
{{- else -}}
{{- printf "%s-store-credentials" (include "granary.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
A pod annotation: changes when the chart's credentials or the Secret's name
change, so that the pods reading them roll (a Secret you manage yourself: roll
them with kubectl rollout restart after changing it).
*/}}
{{- define "granary.storeCredentialsChecksum" -}}
{{- $c := .Values.store.credentials -}}
{{- printf "%s\n%s\n%s" (include "granary.storeCredentialsSecretName" .) $c.accessKeyID $c.secretAccessKey | sha256sum -}}
{{- end -}}

{{/* The AWS shared-credentials file the initContainer writes. */}}
{{- define "granary.storeCredentialsDir" -}}
/etc/granary/store
{{- end -}}

{{- define "granary.storeCredentialsFile" -}}
{{- printf "%s/credentials" (include "granary.storeCredentialsDir" .) -}}
{{- end -}}

{{/*
The initContainer that turns the Secret's accessKeyID, secretAccessKey (and
sessionToken, when present) into an AWS shared-credentials file, profile
[default], mode 0400, in a memory-backed emptyDir. The values go from file
to file through shell builtins: never on a command line or in the
environment.
*/}}
{{- define "granary.storeCredentialsInitContainer" -}}
- name: store-credentials
  image: {{ include "granary.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - /bin/sh
    - -ec
    - |
      umask 077
      in=/etc/granary/store-secret
      out={{ include "granary.storeCredentialsFile" . }}
      for k in accessKeyID secretAccessKey; do
        [ -s "$in/$k" ] || { echo "store credentials: the Secret has no key $k" >&2; exit 1; }
      done
      line() { v=$(cat "$in/$1"); printf '%s = %s\n' "$2" "$v"; }
      {
        echo '[default]'
        line accessKeyID aws_access_key_id
        line secretAccessKey aws_secret_access_key
        if [ -s "$in/sessionToken" ]; then line sessionToken aws_session_token; fi
      } >"$out.tmp"
      chmod 0400 "$out.tmp"
      mv -f "$out.tmp" "$out"
  securityContext:
    privileged: false
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  volumeMounts:
    - name: store-secret
      mountPath: /etc/granary/store-secret
      readOnly: true
    - name: store-credentials
      mountPath: {{ include "granary.storeCredentialsDir" . }}
  resources:
    requests:
      cpu: 10m
      memory: 16Mi
    limits:
      memory: 64Mi
{{- end -}}

{{/* Its volumes: the Secret (mode 0400) and the file's emptyDir. */}}
{{- define "granary.storeCredentialsVolumes" -}}
- name: store-secret
  secret:
    secretName: {{ include "granary.storeCredentialsSecretName" . }}
    defaultMode: 0400
- name: store-credentials
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end -}}

{{/* The file, read-only, in the worker and meta containers. */}}
{{- define "granary.storeCredentialsVolumeMount" -}}
- name: store-credentials
  mountPath: {{ include "granary.storeCredentialsDir" . }}
  readOnly: true
{{- end -}}

{{/*
The store section every daemon shares. Call with (dict "ctx" $ "credentials"
true) for the daemons that read the cluster's credentials file (worker,
meta): they also get store.allowed_endpoints, the only endpoints besides
store.endpoint they read datasets at.
*/}}
{{- define "granary.storeConfig" -}}
{{- $v := .ctx.Values -}}
{{- $store := dict "region" $v.store.region -}}
{{- if $v.store.endpoint -}}
{{- $_ := set $store "endpoint" $v.store.endpoint -}}
{{- end -}}
{{- if and .credentials (include "granary.storeCredentials" .ctx) -}}
{{- $_ := set $store "credentials_file" (include "granary.storeCredentialsFile" .ctx) -}}
{{- end -}}
{{- if .credentials -}}
{{- $_ := set $store "allowed_endpoints" (join "," $v.store.allowedEndpoints) -}}
{{- end -}}
{{- toYaml $store -}}
{{- end -}}

{{/*
The daemons' YAML files, built from values: keys are those of each daemon's
--help (nested form), extraConfig merged over them.
*/}}
{{- define "granary.metaConfig" -}}
{{- /* datasets.clusterCredentials, one rule a line: "NAMESPACE SOURCE ...". */ -}}
{{- $rules := list -}}
{{- range .Values.datasets.clusterCredentials -}}
{{- $rules = append $rules (printf "%s %s" (default $.Release.Namespace .namespace) (join " " .sources)) -}}
{{- end -}}
{{- $c := dict
  "listen" (printf "0.0.0.0:%d" (int .Values.meta.port))
  "data_dir" (include "granary.metaDataDir" .)
  "heartbeat" (dict "interval" .Values.meta.heartbeat.interval "expiry" .Values.meta.heartbeat.expiry)
  "store" (include "granary.storeConfig" (dict "ctx" . "credentials" true) | fromYaml)
  "allowed_file_roots" (join "," .Values.fileRoots)
  "auth" (dict
    "csi_key_file" (include "granary.metaKeyFile" (dict "ctx" . "role" "csi"))
    "worker_key_file" (include "granary.metaKeyFile" (dict "ctx" . "role" "worker"))
    "mount_key_file" (include "granary.tokenFile" .))
  "kube" (dict
    "enabled" true
    "namespace" .Release.Namespace
    "lease" (printf "%s-meta" (include "granary.fullname" .))
    "driver" (include "granary.driverName" .)
    "cache_gate" .Values.datasets.cacheGate
    "worker_service_account" (include "granary.workerServiceAccount" .)
    "token_audience" .Values.worker.identityToken.audience)
  "datasets" (dict "cluster_credentials" (join "\n" $rules))
  "metrics" (dict "address" (printf "0.0.0.0:%d" (int .Values.metrics.metaPort)))
  "log" (dict "level" .Values.logLevel) -}}
{{- if .Values.tls.enabled -}}
{{- $dir := include "granary.tlsDir" . -}}
{{- $_ := set $c "tls" (dict "cert_file" (printf "%s/meta.crt" $dir) "key_file" (printf "%s/meta.key" $dir)) -}}
{{- if .Values.tls.mutual -}}
{{- $_ := set $c.tls "client_ca_file" (printf "%s/ca.crt" $dir) -}}
{{- end -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.meta.extraConfig)) -}}
{{- end -}}

{{/*
granary-worker. node_id ($(NODE_NAME)) and advertise_address ($(POD_IP):port)
are flags of the container: they differ per pod.
*/}}
{{- define "granary.workerConfig" -}}
{{- $c := dict
  "listen" (printf "0.0.0.0:%d" (int .Values.worker.port))
  "probe_listen" (printf "0.0.0.0:%d" (int .Values.worker.probePort))
  "meta" (dict
    "address" (include "granary.metaAddress" .)
    "key_file" (include "granary.metaKeyFile" (dict "ctx" . "role" "worker"))
    "identity_token_file" (include "granary.identityTokenFile" .))
  "cache" (dict
    "dir" .Values.cache.dir
    "capacity" (include "granary.size" .Values.cache.capacity)
    "block_size" (include "granary.size" .Values.cache.blockSize)
    "policy" .Values.cache.policy)
  "token_file" (include "granary.tokenFile" .)
  "store" (include "granary.storeConfig" (dict "ctx" . "credentials" true) | fromYaml)
  "allowed_file_roots" (join "," .Values.fileRoots)
  "http" (dict "dataset_writes" false)
  "log" (dict "level" .Values.logLevel) -}}
{{- /* Datasets come from granary-meta alone: a holder of the cluster token
       (every node's pods) can neither register one over HTTP, naming a
       credentials file of the worker's, nor drop one. */}}
{{- if .Values.tls.enabled -}}
{{- $dir := include "granary.tlsDir" . -}}
{{- $_ := set $c "tls" (dict "cert_file" (printf "%s/worker.crt" $dir) "key_file" (printf "%s/worker.key" $dir)) -}}
{{- $_ := set $c.meta "tls" (include "granary.metaTLSClient" . | fromYaml) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.worker.extraConfig)) -}}
{{- end -}}

{{/*
The node plugin: state_dir on a hostPath, fuse.yaml for every granary-fuse it
starts, staging and target paths only under the kubelet's directory.
*/}}
{{- define "granary.csiConfig" -}}
{{- $c := dict
  "endpoint" "unix:///csi/csi.sock"
  "meta" (dict "address" (include "granary.metaAddress" .) "key_file" (include "granary.metaKeyFile" (dict "ctx" . "role" "csi")))
  "state_dir" .Values.node.stateDir
  "fuse_binary" "/usr/bin/granary-fuse"
  "fuse_config" (include "granary.fuseConfigFile" .)
  "allowed_roots" (trimSuffix "/" .Values.node.kubeletDir)
  "allowed_file_roots" (join "," .Values.fileRoots)
  "mount_pod_template" (ternary (include "granary.mountPodTemplateFile" .) "" .Values.node.mountPods.enabled)
  "reattach_mounts" .Values.node.reattachMounts
  "log" (dict "level" .Values.logLevel) -}}
{{- if .Values.tls.enabled -}}
{{- $_ := set $c.meta "tls" (include "granary.metaTLSClient" . | fromYaml) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.node.extraConfig)) -}}
{{- end -}}

{{/* The controller: meta over the pod's loopback, state_dir shared with meta. */}}
{{- define "granary.controllerConfig" -}}
{{- $c := dict
  "endpoint" "unix:///csi/csi.sock"
  "meta" (dict "address" (include "granary.controllerMetaAddress" .) "key_file" (include "granary.metaKeyFile" (dict "ctx" . "role" "csi")))
  "state_dir" (include "granary.controllerStateDir" .)
  "ready_needs_meta" false
  "datasets_namespace" .Release.Namespace
  "store" (dict "endpoint" .Values.store.endpoint "allowed_endpoints" (join "," .Values.store.allowedEndpoints))
  "allowed_file_roots" (join "," .Values.fileRoots)
  "log" (dict "level" .Values.logLevel) -}}
{{- if .Values.tls.enabled -}}
{{- $_ := set $c.meta "tls" (include "granary.metaTLSClient" . | fromYaml) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.controller.extraConfig)) -}}
{{- end -}}

{{/*
granary-fuse's settings common to every dataset on the node (fuse_config of
the node plugin); the node plugin adds mountpoint, dataset, init_state and
the node-stage credentials per NodeStageVolume. The cache directory is the
worker's, at the same path; the token file is the node plugin's (or the
mount pod's) mount of the cluster token, which is also the key of meta's
mount role.
*/}}
{{- define "granary.fuseConfig" -}}
{{- $c := dict
  "meta" (dict "address" (include "granary.metaAddress" .) "key_file" (include "granary.tokenFile" .))
  "cache" (dict
    "dir" .Values.cache.dir
    "capacity" (include "granary.size" .Values.cache.capacity)
    "block_size" (include "granary.size" .Values.cache.blockSize))
  "token_file" (include "granary.tokenFile" .)
  "store" (include "granary.storeConfig" (dict "ctx" .) | fromYaml)
  "log" (dict "level" .Values.logLevel) -}}
{{- if .Values.tls.enabled -}}
{{- $_ := set $c.meta "tls" (include "granary.metaTLSClient" . | fromYaml) -}}
{{- $_ := set $c "worker" (dict "tls" (dict "ca_file" (printf "%s/ca.crt" (include "granary.tlsDir" .)) "server_name" (include "granary.workerTLSName" .))) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.node.fuseConfig)) -}}
{{- end -}}

{{/* The CSI socket directory of the node plugin, on the host. */}}
{{- define "granary.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.node.kubeletDir) (include "granary.driverName" .) -}}
{{- end -}}

{{- define "granary.registrationDir" -}}
{{- printf "%s/plugins_registry" (trimSuffix "/" .Values.node.kubeletDir) -}}
{{- end -}}

{{/* The fileRoots host directories, read-only at the same path: volumes... */}}
{{- define "granary.fileRootVolumes" -}}
{{- range $i, $dir := .Values.fileRoots }}
- name: file-root-{{ $i }}
  hostPath:
    path: {{ $dir }}
    type: Directory
{{- end }}
{{- end -}}

{{/* ...and their mounts. */}}
{{- define "granary.fileRootVolumeMounts" -}}
{{- range $i, $dir := .Values.fileRoots }}
- name: file-root-{{ $i }}
  mountPath: {{ $dir }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The mount pod template (node.mountPods): the node plugin fills in the name,
the node, the volume and granary-mount's flags (csi/mountpod.h). No
privilege: the node plugin mounts and hands the descriptor over the keeper
socket in its volume's directory of the state directory. The daemon reads
the worker's cache directory, its node-stage credentials and init state
(its volume's directory, which the plugin puts in place of STATE/node) and
the fuse settings at the node plugin's paths; the cluster token is its key
for the workers and for meta's mount role (reads only), never the csi or
worker role's key. No other hostPath may hold STATE/node: it would show
every volume's directory to each pod, and the plugin refuses such a
template at start.
*/}}
{{- define "granary.mountPodTemplate" -}}
{{- $fullname := include "granary.fullname" . -}}
{{- $volumes := printf "%s/node" .Values.node.stateDir -}}
{{- if eq .Values.node.stateDir "/" -}}
{{- fail "node.stateDir: '/' is not a directory of its own; use one such as /var/lib/granary/csi" -}}
{{- end -}}
{{- range $key, $dir := dict "cache.dir" .Values.cache.dir "fileRoots" (join "," .Values.fileRoots) -}}
{{- if not $.Values.node.mountPods.enabled -}}{{- break -}}{{- end -}}
{{- range $raw := splitList "," $dir -}}
{{- $d := trimSuffix "/" $raw -}}
{{- if or (eq $raw "/") (and $d (or (eq $d $volumes) (hasPrefix (printf "%s/" $d) $volumes))) -}}
{{- fail (printf "%s: '%s' holds node.stateDir's node/ directory '%s', which mount pods must not see whole: choose directories apart" $key $raw $volumes) -}}
{{- end -}}
{{- end -}}
{{- end -}}
apiVersion: v1
kind: Pod
metadata:
  # The pods' name prefix: granary-csi takes at most 40 characters.
  name: {{ $fullname | trunc 34 | trimSuffix "-" }}-mount
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "granary.labels" (dict "ctx" . "component" "mount") | nindent 4 }}
spec:
  restartPolicy: Always
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    seccompProfile:
      type: RuntimeDefault
  dnsPolicy: ClusterFirst
  terminationGracePeriodSeconds: {{ .Values.node.mountPods.terminationGracePeriodSeconds }}
  {{- with .Values.node.mountPods.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.node.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: granary-mount
      image: {{ include "granary.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["/usr/bin/granary-mount"]
      args: ["--log.level={{ .Values.logLevel }}"]
      resources:
        {{- toYaml .Values.node.mountPods.resources | nindent 8 }}
      securityContext:
        privileged: false
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        {{- include "granary.fileRootVolumeMounts" . | nindent 8 }}
        - name: cache-dir
          mountPath: {{ .Values.cache.dir }}
          readOnly: true
        # The node plugin gives each pod its volume's directory of
        # STATE/node here, at that directory's own path, and no other.
        - name: state-dir
          mountPath: {{ .Values.node.stateDir }}/node
        - name: config
          mountPath: {{ include "granary.fuseConfigFile" . }}
          subPath: fuse.yaml
          readOnly: true
        {{- include "granary.tokenVolumeMount" . | nindent 8 }}
        {{- if $.Values.tls.enabled }}
        {{- include "granary.tlsVolumeMount" (dict "ctx" . "name" "tls") | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "granary.fileRootVolumes" . | nindent 4 }}
    - name: cache-dir
      hostPath:
        path: {{ .Values.cache.dir }}
        type: {{ .Values.cache.hostPathType }}
    - name: state-dir
      hostPath:
        path: {{ .Values.node.stateDir }}/node
        type: Directory
    - name: config
      configMap:
        name: {{ $fullname }}-node
    {{- include "granary.tokenVolume" . | nindent 4 }}
    {{- if $.Values.tls.enabled }}
    {{- include "granary.tlsVolume" (dict "ctx" . "name" "tls" "role" "client") | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "granary.mountPodTemplateFile" -}}
/etc/granary/mount-pod.json
{{- end -}}

{{/*
Prometheus' scrape annotations of a pod (metrics.annotations), for its
/metrics on port: (dict "ctx" . "port" N), with "https" true for a port
that speaks TLS (the workers' with tls.enabled).
*/}}
{{- define "granary.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.annotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- if .https }}
prometheus.io/scheme: https
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
TLS (tls.enabled; docs/security.md, "TLS"): the CA's certificate, meta's
certificate (its Service's names), the workers' certificate (one name for
every worker, which clients check while they dial a pod IP) and the client
certificate for meta's mutual TLS, in one Secret per role (meta, worker,
client; granary.tlsItems): a node's kubelet may read every Secret a pod of
that node names, whole, so meta's key is in no Secret the DaemonSets or
mount pods name. Each pod mounts its role's items under /etc/granary/tls.
(dict "ctx" . "role" ROLE): tls.existingSecrets.ROLE, else
tls.existingSecret (one Secret for every role), else the chart's.
*/}}
{{- define "granary.tlsSecretName" -}}
{{- $own := .ctx.Values.tls.existingSecrets | default dict -}}
{{- if index $own .role -}}
{{- index $own .role -}}
{{- else if .ctx.Values.tls.existingSecret -}}
{{- .ctx.Values.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-tls-%s" (include "granary.fullname" .ctx) .role -}}
{{- end -}}
{{- end -}}

{{/* The one TLS Secret of the charts before 0.2.3, which every role's pods
     named: kept, without meta's items, while node plugins of then may
     still start mount pods that name it (tls-secret.yaml). */}}
{{- define "granary.tlsLegacySecretName" -}}
{{- printf "%s-tls" (include "granary.fullname" .) -}}
{{- end -}}

{{/* Whether the chart makes the TLS Secrets: "true" or "". Refuses
     existingSecrets that name some roles but not all. */}}
{{- define "granary.tlsSecretsMade" -}}
{{- $own := .Values.tls.existingSecrets | default dict -}}
{{- $named := 0 -}}
{{- range $role := list "meta" "worker" "client" -}}
{{- if index $own $role -}}{{- $named = add1 $named -}}{{- end -}}
{{- end -}}
{{- if and (gt $named 0) (lt $named 3) -}}
{{- fail "tls.existingSecrets: name a Secret for each of meta, worker and client, or none" -}}
{{- end -}}
{{- if and (eq $named 0) (not .Values.tls.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "granary.tlsDir" -}}
/etc/granary/tls
{{- end -}}

{{- define "granary.metaTLSName" -}}
{{- printf "%s.%s.svc" (include "granary.metaServiceName" .) .Release.Namespace -}}
{{- end -}}

{{- define "granary.workerTLSName" -}}
{{- printf "%s-worker.%s.svc" (include "granary.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The items a role mounts: (dict "ctx" . "role" "meta"|"worker"|"client"). */}}
{{- define "granary.tlsItems" -}}
{{- $items := list "ca.crt" -}}
{{- if eq .role "meta" -}}
{{- $items = concat $items (list "meta.crt" "meta.key") -}}
{{- else if eq .role "worker" -}}
{{- $items = concat $items (list "worker.crt" "worker.key") -}}
{{- end -}}
{{- if and .ctx.Values.tls.mutual (ne .role "meta") -}}
{{- $items = concat $items (list "client.crt" "client.key") -}}
{{- end -}}
{{- toJson $items -}}
{{- end -}}

{{/* A pod's TLS volume, (dict "ctx" . "name" NAME "role" ROLE), and its
     mount; callers include them only with tls.enabled. */}}
{{- define "granary.tlsVolume" -}}
- name: {{ .name }}
  secret:
    secretName: {{ include "granary.tlsSecretName" (dict "ctx" .ctx "role" .role) }}
    defaultMode: 0400
    items:
      {{- range (include "granary.tlsItems" . | fromJsonArray) }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end -}}

{{- define "granary.tlsVolumeMount" -}}
- name: {{ .name }}
  mountPath: {{ include "granary.tlsDir" .ctx }}
  readOnly: true
{{- end -}}

{{/* A client's settings for meta (its meta.tls), as YAML. */}}
{{- define "granary.metaTLSClient" -}}
{{- $dir := include "granary.tlsDir" . -}}
{{- $c := dict "ca_file" (printf "%s/ca.crt" $dir) "server_name" (include "granary.metaTLSName" .) -}}
{{- if .Values.tls.mutual -}}
{{- $_ := set $c "cert_file" (printf "%s/client.crt" $dir) -}}
{{- $_ := set $c "key_file" (printf "%s/client.key" $dir) -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/* The worker's probe of its own /readyz, over HTTPS with TLS on. */}}
{{- define "granary.workerProbeCommand" -}}
{{- if .Values.tls.enabled -}}
{{- list "/usr/bin/granary-probe" "--cacert" (printf "%s/ca.crt" (include "granary.tlsDir" .)) "--server-name" (include "granary.workerTLSName" .) (printf "https://127.0.0.1:%d/readyz" (int .Values.worker.probePort)) | toJson -}}
{{- else -}}
{{- list "/usr/bin/granary-probe" (printf "http://127.0.0.1:%d/readyz" (int .Values.worker.probePort)) | toJson -}}
{{- end -}}
{{- end -}}
