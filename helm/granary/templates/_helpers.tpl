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

{{/* Where the node plugin, workers and FUSE daemons reach granary-meta. */}}
{{- define "granary.metaAddress" -}}
{{- printf "%s.%s.svc:%d" (include "granary.metaServiceName" .) .Release.Namespace (int .Values.meta.port) -}}
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

{{/* The store section every daemon shares. */}}
{{- define "granary.storeConfig" -}}
{{- $store := dict "region" .Values.store.region -}}
{{- if .Values.store.endpoint -}}
{{- $_ := set $store "endpoint" .Values.store.endpoint -}}
{{- end -}}
{{- toYaml $store -}}
{{- end -}}

{{/*
The daemons' YAML files, built from values: keys are those of each daemon's
--help (nested form), extraConfig merged over them.
*/}}
{{- define "granary.metaConfig" -}}
{{- $c := dict
  "listen" (printf "0.0.0.0:%d" (int .Values.meta.port))
  "data_dir" "/var/lib/granary/meta"
  "heartbeat" (dict "interval" .Values.meta.heartbeat.interval "expiry" .Values.meta.heartbeat.expiry)
  "store" (include "granary.storeConfig" . | fromYaml)
  "log" (dict "level" .Values.logLevel) -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.meta.extraConfig)) -}}
{{- end -}}

{{- define "granary.workerConfig" -}}
{{- $c := dict
  "listen" (printf "0.0.0.0:%d" (int .Values.worker.port))
  "meta" (dict "address" (include "granary.metaAddress" .))
  "cache" (dict
    "dir" .Values.cache.dir
    "capacity" (include "granary.size" .Values.cache.capacity)
    "block_size" (include "granary.size" .Values.cache.blockSize)
    "policy" .Values.cache.policy)
  "token_file" (include "granary.tokenFile" .)
  "store" (include "granary.storeConfig" . | fromYaml)
  "log" (dict "level" .Values.logLevel) -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.worker.extraConfig)) -}}
{{- end -}}

{{- define "granary.csiConfig" -}}
{{- $c := dict
  "endpoint" "unix:///csi/csi.sock"
  "meta" (dict "address" (include "granary.metaAddress" .))
  "state_dir" .Values.node.stateDir
  "fuse_binary" "/usr/bin/granary-fuse"
  "log" (dict "level" .Values.logLevel) -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.node.extraConfig)) -}}
{{- end -}}

{{- define "granary.controllerConfig" -}}
{{- $c := dict
  "endpoint" "unix:///csi/csi.sock"
  "meta" (dict "address" (include "granary.metaAddress" .))
  "log" (dict "level" .Values.logLevel) -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.controller.extraConfig)) -}}
{{- end -}}

{{/*
granary-fuse's settings common to every dataset on the node; the node plugin
adds mountpoint and dataset per NodeStageVolume.
*/}}
{{- define "granary.fuseConfig" -}}
{{- $c := dict
  "meta" (dict "address" (include "granary.metaAddress" .))
  "cache" (dict
    "dir" .Values.cache.dir
    "capacity" (include "granary.size" .Values.cache.capacity)
    "block_size" (include "granary.size" .Values.cache.blockSize))
  "store" (include "granary.storeConfig" . | fromYaml)
  "log" (dict "level" .Values.logLevel) -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.node.fuseConfig)) -}}
{{- end -}}

{{/* The CSI socket directory of the node plugin, on the host. */}}
{{- define "granary.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.node.kubeletDir) (include "granary.driverName" .) -}}
{{- end -}}

{{- define "granary.registrationDir" -}}
{{- printf "%s/plugins_registry" (trimSuffix "/" .Values.node.kubeletDir) -}}
{{- end -}}
