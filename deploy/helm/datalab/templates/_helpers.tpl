{{/* Names and labels shared by every manifest of the release. */}}
{{- define "datalab.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "datalab.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "datalab.labels" -}}
{{ include "datalab.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "datalab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "datalab.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: the ServiceAccount to run as (serviceAccount.create is false)" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "datalab.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The platform's Service, as pods in other namespaces reach it. */}}
{{- define "datalab.serviceUrl" -}}
{{- $port := int .Values.service.port -}}
{{- printf "http://%s.%s.svc%s" (include "datalab.fullname" .) .Release.Namespace (ternary "" (printf ":%d" $port) (eq $port 80)) -}}
{{- end -}}

{{/* The host of publicUrl (the platform's Ingress host). */}}
{{- define "datalab.host" -}}
{{- (urlParse .Values.publicUrl).host | splitList ":" | first -}}
{{- end -}}

{{/*
The platform's datalab.yaml (docs/configuration.md), from the values; `config` is merged last.
Secrets are not here: the Deployment passes them as DATALAB_* variables from Secrets. Users'
services outlive the platform's pod (a restart or an upgrade re-attaches to them). The data
directory is a folder in the volume, not its root: the platform makes it and sets its mode
(0711), which it may not do on a volume's root (owned by root, group fsGroup).
*/}}
{{- define "datalab.config" -}}
{{- $v := .Values -}}
{{- $server := dict "host" "0.0.0.0" "port" 8000 "public_url" $v.publicUrl "trusted_proxies" $v.trustedProxies -}}
{{- $kubernetes := dict "access" $v.kubernetes.access "platform_namespace" .Release.Namespace "ingress_namespace" $v.kubernetes.ingressNamespace "rbac_user_prefix" $v.kubernetes.rbacUserPrefix -}}
{{- $urls := dict "platform" (default (include "datalab.serviceUrl" .) $v.kubernetes.serviceUrls.platform) -}}
{{- $service := printf "http://%s.%s.svc" (include "datalab.fullname" .) .Release.Namespace -}}
{{- if eq $v.storage.mode "embedded" }}{{ $_ := set $urls "s3" (printf "%s:%d" $service (int $v.storage.port)) }}{{ end -}}
{{- if eq $v.vault.mode "embedded" }}{{ $_ := set $urls "vault" (printf "%s:%d" $service (int $v.vault.port)) }}{{ end -}}
{{- with $v.kubernetes.serviceUrls.s3 }}{{ $_ := set $urls "s3" . }}{{ end -}}
{{- with $v.kubernetes.serviceUrls.vault }}{{ $_ := set $urls "vault" . }}{{ end -}}
{{- $_ := set $kubernetes "service_urls" $urls -}}
{{- $storage := dict "mode" $v.storage.mode -}}
{{- if eq $v.storage.mode "embedded" -}}
{{- $_ := set $storage "listen_address" "0.0.0.0" -}}
{{- $_ := set $storage "port" (int $v.storage.port) -}}
{{- $_ := set $storage "region" $v.storage.region -}}
{{- $_ := set $storage "bucket_mode" $v.storage.bucketMode -}}
{{- $_ := set $storage "shared_bucket" $v.storage.sharedBucket -}}
{{- with $v.storage.publicUrl }}{{ $_ := set $storage "public_url" . }}{{ end -}}
{{- end -}}
{{- if eq $v.storage.mode "external" -}}
{{- $_ := set $storage "endpoint_url" $v.storage.endpointUrl -}}
{{- $_ := set $storage "region" $v.storage.region -}}
{{- $_ := set $storage "web_identity" $v.storage.webIdentity -}}
{{- $_ := set $storage "bucket_mode" $v.storage.bucketMode -}}
{{- $_ := set $storage "shared_bucket" $v.storage.sharedBucket -}}
{{- with $v.storage.publicUrl }}{{ $_ := set $storage "public_url" . }}{{ end -}}
{{- with $v.storage.stsRoleArn }}{{ $_ := set $storage "sts_role_arn" . }}{{ end -}}
{{- end -}}
{{- $secrets := dict "mode" $v.vault.mode -}}
{{- if eq $v.vault.mode "embedded" -}}
{{- $_ := set $secrets "listen_address" "0.0.0.0" -}}
{{- $_ := set $secrets "port" (int $v.vault.port) -}}
{{- $_ := set $secrets "mount" $v.vault.mount -}}
{{- end -}}
{{- if eq $v.vault.mode "external" -}}
{{- $_ := set $secrets "address" $v.vault.address -}}
{{- $_ := set $secrets "mount" $v.vault.mount -}}
{{- $_ := set $secrets "web_identity" $v.vault.webIdentity -}}
{{- $_ := set $secrets "oidc_auth_mount" $v.vault.oidcAuthMount -}}
{{- $_ := set $secrets "oidc_role" $v.vault.oidcRole -}}
{{- end -}}
{{- $oidc := dict "enabled" $v.oidc.enabled -}}
{{- if $v.oidc.enabled -}}
{{- $_ := set $oidc "issuer_url" $v.oidc.issuerUrl -}}
{{- $_ := set $oidc "client_id" $v.oidc.clientId -}}
{{- $_ := set $oidc "scopes" $v.oidc.scopes -}}
{{- $_ := set $oidc "username_claim" $v.oidc.usernameClaim -}}
{{- $_ := set $oidc "groups_claim" $v.oidc.groupsClaim -}}
{{- $_ := set $oidc "admin_groups" $v.oidc.adminGroups -}}
{{- end -}}
{{- $config := dict
  "data_dir" "/var/lib/datalab/data"
  "instance_name" $v.instanceName
  "log_level" $v.logLevel
  "server" $server
  "region" (dict "domain" $v.servicesDomain)
  "backend" (dict "name" "kubernetes" "kubernetes" $kubernetes "stop_services_on_shutdown" false)
  "storage" $storage
  "secrets" $secrets
  "oidc" $oidc
-}}
{{- with $v.database.url }}{{ $_ := set $config "database_url" . }}{{ end -}}
{{- if and $v.oidc.enabled $v.oidc.providerName -}}
{{- $_ := set $config "branding" (dict "oidc_provider_name" $v.oidc.providerName) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $config (deepCopy $v.config)) -}}
{{- end -}}

{{/* DATALAB_* variables from Secrets: name, setting, Secret, key. */}}
{{- define "datalab.secretEnv" -}}
{{- $v := .Values -}}
{{- $entries := list -}}
{{- if $v.database.existingSecret -}}
{{- $entries = append $entries (list "DATALAB_DATABASE_URL" $v.database.existingSecret $v.database.urlKey) -}}
{{- end -}}
{{- if and (eq $v.storage.mode "external") $v.storage.existingSecret -}}
{{- $entries = append $entries (list "DATALAB_STORAGE__ACCESS_KEY_ID" $v.storage.existingSecret $v.storage.accessKeyIdKey) -}}
{{- $entries = append $entries (list "DATALAB_STORAGE__SECRET_ACCESS_KEY" $v.storage.existingSecret $v.storage.secretAccessKeyKey) -}}
{{- end -}}
{{- if and (eq $v.vault.mode "external") $v.vault.existingSecret -}}
{{- $entries = append $entries (list "DATALAB_SECRETS__TOKEN" $v.vault.existingSecret $v.vault.tokenKey) -}}
{{- end -}}
{{- if and $v.oidc.enabled $v.oidc.existingSecret -}}
{{- $entries = append $entries (list "DATALAB_OIDC__CLIENT_SECRET" $v.oidc.existingSecret $v.oidc.clientSecretKey) -}}
{{- end -}}
{{- if $v.sessionSecret.existingSecret -}}
{{- $entries = append $entries (list "DATALAB_SECURITY__SESSION_SECRET" $v.sessionSecret.existingSecret $v.sessionSecret.key) -}}
{{- end -}}
{{- if $v.admin.existingSecret -}}
{{- $entries = append $entries (list "DATALAB_ADMIN_PASSWORD" $v.admin.existingSecret $v.admin.passwordKey) -}}
{{- end -}}
{{- range $entries }}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ index . 1 | quote }}
      key: {{ index . 2 | quote }}
{{- end }}
{{- end -}}

{{/* The ports of the embedded S3 and OpenBao the Service and the pod expose: name, port. */}}
{{- define "datalab.embeddedPorts" -}}
{{- $ports := list -}}
{{- if eq .Values.storage.mode "embedded" }}{{ $ports = append $ports (list "s3" (int .Values.storage.port)) }}{{ end -}}
{{- if eq .Values.vault.mode "embedded" }}{{ $ports = append $ports (list "vault" (int .Values.vault.port)) }}{{ end -}}
{{- if and $ports (not .Values.persistence.enabled) -}}
{{- fail "storage.mode/vault.mode embedded keep their data in the platform's volume: set persistence.enabled" -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}
