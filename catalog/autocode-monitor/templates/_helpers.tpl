{{/* Names and labels shared by every manifest of the release. */}}
{{- define "autocode-monitor.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "autocode-monitor.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "autocode-monitor.labels" -}}
{{ include "autocode-monitor.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The compacted log the dashboard reads. */}}
{{- define "autocode-monitor.data" -}}
{{- if .Values.s3.enabled -}}
{{- printf "s3://%s%s" .Values.s3.workingDirectoryPath .Values.data.parquetPrefix -}}
{{- else -}}
{{- printf "/var/lib/autocode-monitor/%s" .Values.data.parquetPrefix -}}
{{- end -}}
{{- end -}}

{{/* Alert and drift bounds as JSON (AUTOCODE_MONITOR_SETTINGS). */}}
{{- define "autocode-monitor.settings" -}}
{{- $m := .Values.monitoring -}}
{{- $settings := dict "max_auto_rate_drop" $m.maxAutoRateDrop "max_latency_p99_ms" $m.maxLatencyP99Ms "drift_tests" (dict "alpha" $m.driftAlpha "min_ks" $m.driftMinKs "min_psi" $m.driftMinPsi) -}}
{{- if ne (toString $m.minAutoRate) "" -}}
{{- $_ := set $settings "min_auto_rate" $m.minAutoRate -}}
{{- end -}}
{{- toJson $settings -}}
{{- end -}}
