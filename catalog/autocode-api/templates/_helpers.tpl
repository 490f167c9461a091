{{/* Names and labels shared by every manifest of the release. */}}
{{- define "autocode-api.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "autocode-api.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "autocode-api.labels" -}}
{{ include "autocode-api.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The model URI served: model.uri, else models:/<name>@<alias>. */}}
{{- define "autocode-api.modelUri" -}}
{{- if .Values.model.uri -}}
{{- .Values.model.uri -}}
{{- else -}}
{{- printf "models:/%s@%s" .Values.model.name .Values.model.alias -}}
{{- end -}}
{{- end -}}

{{/* s3://<bucket/prefix/><s3Prefix> when the prediction log is shipped, else empty. */}}
{{- define "autocode-api.logS3Uri" -}}
{{- if and .Values.s3.enabled .Values.predictionLog.shipToS3 -}}
{{- printf "s3://%s%s" .Values.s3.workingDirectoryPath .Values.predictionLog.s3Prefix -}}
{{- end -}}
{{- end -}}

{{- /* The Secret holding the server's variables: yours (security.existingSecret) or the chart's */}}
{{- define "autocode-api.credentialsSecret" -}}
{{- default (include "autocode-api.fullname" .) .Values.security.existingSecret -}}
{{- end -}}
