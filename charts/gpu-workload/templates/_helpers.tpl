{{- define "gpu-workload.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release name alone when it already contains the chart name (helm install gpu-workload ...). */}}
{{- define "gpu-workload.fullname" -}}
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

{{- define "gpu-workload.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gpu-workload.labels" -}}
helm.sh/chart: {{ include "gpu-workload.chart" . }}
{{ include "gpu-workload.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: inference
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gpu-workload.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-workload.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gpu-workload.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpu-workload.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gpu-workload.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The address KEDA dials: the keda-gpu-scaler chart's Service. */}}
{{- define "gpu-workload.scalerAddress" -}}
{{- $s := .Values.scaledObject.scaler }}
{{- if $s.address }}
{{- $s.address }}
{{- else }}
{{- printf "%s.%s.svc.%s:%d" $s.serviceName $s.namespace .Values.clusterDomain (int $s.port) }}
{{- end }}
{{- end }}
