{{/*
Chart name, truncated to 63 characters because some Kubernetes name fields are limited to that (DNS-1123 label).
*/}}
{{- define "keda-gpu-scaler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. If the release name already contains the chart name it is used as is,
so `helm install keda-gpu-scaler ...` gives objects named `keda-gpu-scaler`, which is the name the
scalerAddress in the docs and keda/ examples assumes.
*/}}
{{- define "keda-gpu-scaler.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the node-local (NVML DaemonSet) objects; 58 + "-node" stays within 63. */}}
{{- define "keda-gpu-scaler.nodeFullname" -}}
{{- printf "%s-node" (include "keda-gpu-scaler.fullname" . | trunc 58 | trimSuffix "-") }}
{{- end }}

{{- define "keda-gpu-scaler.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels, on every object. */}}
{{- define "keda-gpu-scaler.labels" -}}
helm.sh/chart: {{ include "keda-gpu-scaler.chart" . }}
{{ include "keda-gpu-scaler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keda
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: immutable on a Deployment once created, so they hold only name and instance.
The component label tells the central Deployment from the node-local DaemonSet.
*/}}
{{- define "keda-gpu-scaler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keda-gpu-scaler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keda-gpu-scaler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keda-gpu-scaler.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "keda-gpu-scaler.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Secret holding tls.crt / tls.key / ca.crt: the cert-manager one, or the user's. */}}
{{- define "keda-gpu-scaler.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled }}
{{- default (printf "%s-tls" (include "keda-gpu-scaler.fullname" .)) .Values.tls.secretName }}
{{- else }}
{{- required "tls.secretName is required when tls.enabled=true and tls.certManager.enabled=false" .Values.tls.secretName }}
{{- end }}
{{- end }}

{{/* In-cluster DNS name KEDA dials; it must be in the server certificate's SANs. */}}
{{- define "keda-gpu-scaler.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "keda-gpu-scaler.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
Environment shared by the Deployment and the DaemonSet. Settings go in as the scaler's
KEDA_GPU_SCALER_* variables (its documented interface); the ConfigMap carries them and its
checksum annotation rolls the pods when a value changes.
*/}}
{{- define "keda-gpu-scaler.tlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: KEDA_GPU_SCALER_TLS__CERT_FILE
  value: /etc/keda-gpu-scaler/tls/tls.crt
- name: KEDA_GPU_SCALER_TLS__KEY_FILE
  value: /etc/keda-gpu-scaler/tls/tls.key
{{- if .Values.tls.clientAuth }}
- name: KEDA_GPU_SCALER_TLS__CLIENT_CA_FILE
  value: /etc/keda-gpu-scaler/tls/{{ .Values.tls.clientCaKey }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Probes. Kubelet's gRPC probe speaks plaintext only, so with TLS on the gRPC port the probes
move to the HTTP port's /healthz and /readyz, which report the same state.
*/}}
{{- define "keda-gpu-scaler.probes" -}}
{{- $p := .Values.probes }}
{{- if .Values.tls.enabled }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  {{- toYaml $p.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  {{- toYaml $p.readiness | nindent 2 }}
{{- else }}
livenessProbe:
  grpc:
    port: {{ .Values.containerPorts.grpc }}
    # "" is the server's overall health.
    service: ""
  {{- toYaml $p.liveness | nindent 2 }}
readinessProbe:
  grpc:
    port: {{ .Values.containerPorts.grpc }}
    # NOT_SERVING while sampling stalls: the pod leaves the Service and KEDA's round-robin
    # goes to a healthy replica.
    service: externalscaler.ExternalScaler
  {{- toYaml $p.readiness | nindent 2 }}
{{- end }}
{{- end }}

{{/*
ScaledObjects kept at once: config.maxEntries, or what resources.limits.memory holds after the
process (48 MiB) and the bodies (twice bodyBudgetBytes: what is kept of them, counted, and chunks
in flight), at 9 KiB per entry
(measured by the chaos benchmark; docs/deploy.md, "One scaler, many tenants").
*/}}
{{- define "keda-gpu-scaler.maxEntries" -}}
{{- if .Values.config.maxEntries -}}
{{ .Values.config.maxEntries | int64 }}
{{- else -}}
{{- $limit := toString (dig "limits" "memory" "256Mi" .Values.resources) -}}
{{- $mi := 0 -}}
{{- if hasSuffix "Gi" $limit -}}
{{- $mi = mul (trimSuffix "Gi" $limit | int64) 1024 -}}
{{- else if hasSuffix "Mi" $limit -}}
{{- $mi = trimSuffix "Mi" $limit | int64 -}}
{{- else -}}
{{- fail "resources.limits.memory: write it in Mi or Gi so the chart can derive config.maxEntries, or set config.maxEntries" -}}
{{- end -}}
{{- $bodies := div (mul 2 (.Values.config.bodyBudgetBytes | int64)) 1048576 -}}
{{- $free := sub (sub $mi 48) $bodies -}}
{{- if lt $free 16 -}}
{{- fail (printf "resources.limits.memory %s leaves no room for ScaledObjects after 48 MiB for the process and %d MiB for bodies: raise it or lower config.bodyBudgetBytes" $limit $bodies) -}}
{{- end -}}
{{ div (mul $free 1024) 9 }}
{{- end -}}
{{- end }}

{{- define "keda-gpu-scaler.volumes" -}}
{{- if .Values.config.stateFile }}
# Survives container restarts (not pod deletion): the last decisions, read back at start.
- name: state
  emptyDir:
    sizeLimit: 64Mi
{{- end }}
{{- if .Values.egress.caSecret }}
- name: egress-ca
  secret:
    secretName: {{ .Values.egress.caSecret }}
    defaultMode: 292
{{- end }}
{{- if .Values.configToml }}
- name: config
  configMap:
    name: {{ include "keda-gpu-scaler.fullname" . }}
    items:
      - key: config.toml
        path: config.toml
{{- end }}
{{- if .Values.tls.enabled }}
# A whole-Secret volume (not subPath) so rotated certificates reach the pod and the scaler
# re-reads them without a restart.
- name: tls
  secret:
    secretName: {{ include "keda-gpu-scaler.tlsSecretName" . }}
    # 0440 written in decimal: YAML 1.1 and 1.2 parsers read a leading-zero octal differently.
    defaultMode: 288
{{- end }}
{{- end }}

{{- define "keda-gpu-scaler.volumeMounts" -}}
{{- if .Values.config.stateFile }}
- name: state
  mountPath: /var/lib/keda-gpu-scaler
{{- end }}
{{- if .Values.egress.caSecret }}
- name: egress-ca
  mountPath: /etc/keda-gpu-scaler/egress-ca
  readOnly: true
{{- end }}
{{- if .Values.configToml }}
- name: config
  mountPath: /etc/keda-gpu-scaler/config
  readOnly: true
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/keda-gpu-scaler/tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "keda-gpu-scaler.args" -}}
- serve
{{- if .Values.configToml }}
- --config
- /etc/keda-gpu-scaler/config/config.toml
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
