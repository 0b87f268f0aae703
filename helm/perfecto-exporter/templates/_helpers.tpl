{{/* Chart name, truncated for label values. */}}
{{- define "perfecto-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "perfecto-exporter.fullname" -}}
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

{{- define "perfecto-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: only name and instance, so that upgrades never change them. */}}
{{- define "perfecto-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "perfecto-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "perfecto-exporter.labels" -}}
helm.sh/chart: {{ include "perfecto-exporter.chart" . }}
{{ include "perfecto-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: perfecto-exporter
{{- end }}

{{- define "perfecto-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "perfecto-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The clouds to poll, as a list of {name, executionsUrl, secretName, secretKey, securityToken}.
One cloud from perfecto.cloudName, or perfecto.clouds; a cloud without existingSecret gets the
chart's own Secret, with one key per cloud.
*/}}
{{- define "perfecto-exporter.clouds" -}}
{{- $clouds := list }}
{{- $own := printf "%s-token" (include "perfecto-exporter.fullname" .) }}
{{- if .Values.perfecto.clouds }}
{{- range .Values.perfecto.clouds }}
{{- $secret := default $own .existingSecret }}
{{- $key := ternary (default "token" .existingSecretKey) (printf "%s-token" .name) (not (empty .existingSecret)) }}
{{- $clouds = append $clouds (dict "name" .name "executionsUrl" (default "" .executionsUrl) "secretName" $secret "secretKey" $key "securityToken" (default "" .securityToken)) }}
{{- end }}
{{- else }}
{{- $p := .Values.perfecto }}
{{- $secret := default $own $p.existingSecret }}
{{- $key := ternary $p.existingSecretKey "token" (not (empty $p.existingSecret)) }}
{{- $clouds = append $clouds (dict "name" $p.cloudName "executionsUrl" $p.executionsUrl "secretName" $secret "secretKey" $key "securityToken" $p.securityToken) }}
{{- end }}
{{- toYaml (dict "clouds" $clouds) }}
{{- end }}

{{- define "perfecto-exporter.webhookSecretName" -}}
{{- default (printf "%s-webhook" (include "perfecto-exporter.fullname" .)) .Values.webhook.existingSecret }}
{{- end }}

{{- define "perfecto-exporter.webhookSecretKey" -}}
{{- ternary .Values.webhook.existingSecretKey "token" (not (empty .Values.webhook.existingSecret)) }}
{{- end }}
