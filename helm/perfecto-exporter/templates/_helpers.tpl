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

{{/* Where the config file and the Secrets are mounted in the container. */}}
{{- define "perfecto-exporter.dir" -}}
/etc/perfecto-exporter
{{- end }}

{{/*
The clouds to poll, as a list of {name, dir, settings, secretName, secretKey, securityToken}:
dir names the folder the token is mounted in, settings are the exporter's keys of a clouds entry
(every key of the item but the chart's own Secret keys). One cloud from perfecto.cloudName, or
perfecto.clouds; a cloud without existingSecret gets the chart's own Secret, one key per cloud.
*/}}
{{- define "perfecto-exporter.clouds" -}}
{{- $clouds := list }}
{{- $own := printf "%s-token" (include "perfecto-exporter.fullname" .) }}
{{- if .Values.perfecto.clouds }}
{{- range .Values.perfecto.clouds }}
{{- $secret := default $own .existingSecret }}
{{- $key := ternary (default "token" .existingSecretKey) (printf "%s-token" .name) (not (empty .existingSecret)) }}
{{- $settings := omit . "existingSecret" "existingSecretKey" "securityToken" }}
{{- $clouds = append $clouds (dict "name" .name "dir" .name "settings" $settings "secretName" $secret "secretKey" $key "securityToken" (default "" .securityToken)) }}
{{- end }}
{{- else }}
{{- $p := .Values.perfecto }}
{{- $secret := default $own $p.existingSecret }}
{{- $key := ternary $p.existingSecretKey "token" (not (empty $p.existingSecret)) }}
{{- $clouds = append $clouds (dict "name" $p.cloudName "dir" "default" "settings" (dict) "secretName" $secret "secretKey" $key "securityToken" $p.securityToken) }}
{{- end }}
{{- toYaml (dict "clouds" $clouds) }}
{{- end }}

{{/*
The exporter's YAML settings file: .Values.config as it is, and the settings the chart owns
(the cloud or clouds, and the files it mounts from Secrets), which the schema keeps out of config.
*/}}
{{- define "perfecto-exporter.configFile" -}}
{{- $dir := include "perfecto-exporter.dir" . }}
{{- $config := deepCopy (default dict .Values.config) }}
{{- $clouds := (include "perfecto-exporter.clouds" . | fromYaml).clouds }}
{{- if .Values.perfecto.clouds }}
{{- $entries := list }}
{{- range $clouds }}
{{- $entries = append $entries (merge (dict "token_file" (printf "%s/clouds/%s/token" $dir .dir)) .settings) }}
{{- end }}
{{- $_ := set $config "clouds" $entries }}
{{- else }}
{{- with .Values.perfecto.cloudName }}
{{- $_ := set $config "cloud_name" . }}
{{- end }}
{{- with .Values.perfecto.executionsUrl }}
{{- $_ := set $config "executions_url" . }}
{{- end }}
{{- with .Values.perfecto.licensesUrl }}
{{- $_ := set $config "licenses_url" . }}
{{- end }}
{{- with .Values.perfecto.reportingUrl }}
{{- $_ := set $config "reporting_url" . }}
{{- end }}
{{- $_ := set $config "security_token_file" (printf "%s/clouds/default/token" $dir) }}
{{- end }}
{{- if .Values.webhook.enabled }}
{{- $_ := set $config "webhook_token_file" (printf "%s/webhook/token" $dir) }}
{{- $_ := set $config "stop_ledger" (printf "%s/stops.sqlite" (include "perfecto-exporter.ledgerDir" .)) }}
{{- if not (hasKey $config "stop_dry_run") }}
{{- /* a first deployment shows what it would stop; real stops are a second, explicit step */}}
{{- $_ := set $config "stop_dry_run" true }}
{{- end }}
{{- end }}
{{- if .Values.webConfig.existingSecret }}
{{- $_ := set $config "web_config_file" (printf "%s/web/web.yml" $dir) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Where the stop ledger's volume is mounted (the webhook's caps and memory, see webhook.persistence). */}}
{{- define "perfecto-exporter.ledgerDir" -}}
/var/lib/perfecto-exporter/ledger
{{- end }}

{{/*
With the webhook on, one pod acts: two would each have their own caps and ledger. The chart
refuses rather than render a second pod that doubles every cap.
*/}}
{{- define "perfecto-exporter.requireOneWebhookPod" -}}
{{- if and .Values.webhook.enabled (ne (int .Values.replicaCount) 1) }}
{{- fail (printf "webhook.enabled needs replicaCount: 1 (it is %d): one pod holds the stop caps and their ledger, and a second would double every cap; for more replicas, install a second release without the webhook" (int .Values.replicaCount)) }}
{{- end }}
{{- end }}

{{/* The container port: the port of config.listen_address, else the exporter's default. */}}
{{- define "perfecto-exporter.port" -}}
{{- with .Values.config.listen_address }}{{ regexFind "[0-9]+$" . }}{{ else }}9817{{ end }}
{{- end }}

{{- define "perfecto-exporter.webhookSecretName" -}}
{{- default (printf "%s-webhook" (include "perfecto-exporter.fullname" .)) .Values.webhook.existingSecret }}
{{- end }}

{{- define "perfecto-exporter.webhookSecretKey" -}}
{{- ternary .Values.webhook.existingSecretKey "token" (not (empty .Values.webhook.existingSecret)) }}
{{- end }}

{{/*
Fails the render when a pod would mount a Secret that nobody creates: every cloud needs a name and
either an existing Secret or a token the chart puts into its own Secret.
*/}}
{{- define "perfecto-exporter.requireCloud" -}}
{{- $p := .Values.perfecto }}
{{- if $p.clouds }}
{{- $missing := list }}
{{- range $p.clouds }}{{ if not (or .existingSecret .securityToken) }}{{ $missing = append $missing .name }}{{ end }}{{ end }}
{{- if $missing }}
{{- fail (printf "perfecto.clouds: no token for %s; give each cloud existingSecret (a Secret you create, the token under existingSecretKey, default token) or securityToken (the chart creates the Secret)" (join ", " $missing)) }}
{{- end }}
{{- else }}
{{- $secret := printf "perfecto.existingSecret (a Secret you create first: kubectl -n %s create secret generic perfecto-token --from-file=token=./perfecto-token, then --set perfecto.existingSecret=perfecto-token) or perfecto.securityToken (the chart creates the Secret)" .Release.Namespace }}
{{- if not $p.cloudName }}
{{- fail (printf "no cloud to poll: set perfecto.cloudName and its token, %s; or list several clouds in perfecto.clouds" $secret) }}
{{- else if not (or $p.existingSecret $p.securityToken) }}
{{- fail (printf "no token for cloud %s: set %s" $p.cloudName $secret) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Fails the render on values that would deploy a silently broken exporter: a listen address bound
to one host (the probes and the Service reach the pod's IP), or an AlertmanagerConfig that would
call a TLS-only exporter over plain HTTP, or without the CA to trust it.
*/}}
{{- define "perfecto-exporter.requireWorkingValues" -}}
{{- with .Values.config.listen_address }}
{{- if not (regexMatch "^(|0\\.0\\.0\\.0|\\[::\\]):[0-9]+$" .) }}
{{- fail (printf "config.listen_address %s binds one host: the probes and the Service reach the pod's own IP; keep the host empty (:%s)" . (regexFind "[0-9]+$" .)) }}
{{- end }}
{{- end }}
{{- if and .Values.webhook.enabled .Values.webhook.alertmanagerConfig.enabled .Values.webConfig.existingSecret (not .Values.webhook.alertmanagerConfig.tlsConfig) }}
{{- fail "webhook.alertmanagerConfig with webConfig: the exporter answers only TLS; set webhook.alertmanagerConfig.tlsConfig with the CA that signed its certificate (ca.secret.name and ca.secret.key)" }}
{{- end }}
{{- end }}

{{/* A label map as `key=value, ...`, for NOTES. */}}
{{- define "perfecto-exporter.labelList" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}{{ $pairs = append $pairs (printf "%s=%s" $k $v) }}{{ end }}
{{- join ", " $pairs }}
{{- end }}
