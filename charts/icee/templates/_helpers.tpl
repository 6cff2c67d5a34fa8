{{/*
Name helpers. Every object is named from the release so two releases can
share a cluster; the sandbox namespace is the one cluster-wide choice.
*/}}

{{/* icee.fullname: "<release>-icee", or the release name if it already says icee. */}}
{{- define "icee.fullname" -}}
{{- if contains "icee" .Release.Name -}}
{{- .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-icee" .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* icee.labels: the standard labels on every object. */}}
{{- define "icee.labels" -}}
app.kubernetes.io/name: icee
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* icee.selector COMPONENT: labels that select one component's pods. */}}
{{- define "icee.selector" -}}
app.kubernetes.io/name: icee
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* icee.image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "icee.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* icee.sandboxNamespace */}}
{{- define "icee.sandboxNamespace" -}}
{{- .Values.sandbox.namespace -}}
{{- end -}}

{{/* icee.sandboxServiceAccount: what sandbox pods run as (nothing is bound to it). */}}
{{- define "icee.sandboxServiceAccount" -}}
{{- printf "%s-sandbox" (include "icee.fullname" .) -}}
{{- end -}}

{{/* icee.tokensSecret: the Secret holding the API tokens. */}}
{{- define "icee.tokensSecret" -}}
{{- .Values.auth.tokens.existingSecret | default (printf "%s-tokens" (include "icee.fullname" .)) -}}
{{- end -}}

{{/* icee.maxLiveSessions: admission.maxLiveSessions, else the sandbox pod quota, else 100. */}}
{{- define "icee.maxLiveSessions" -}}
{{- if .Values.admission.maxLiveSessions -}}
{{- .Values.admission.maxLiveSessions -}}
{{- else if .Values.sandbox.quota.enabled -}}
{{- .Values.sandbox.quota.pods -}}
{{- else -}}
100
{{- end -}}
{{- end -}}

{{/* icee.env: settings shared by the api and the operator (both read ICEE_*). */}}
{{- define "icee.env" -}}
- name: ICEE_NAMESPACE
  value: {{ include "icee.sandboxNamespace" . | quote }}
{{- if .Values.languages }}
- name: ICEE_LANGUAGES_FILE
  value: /etc/icee/languages.yaml
{{- end }}
{{- $l := .Values.limits }}
- name: ICEE_MAXIMA
  value: {{ dict "limits" (dict "cpuMillis" $l.cpuMillis "memoryBytes" ($l.memoryBytes | int64) "pids" $l.pids "outputBytes" ($l.outputBytes | int64) "workspaceBytes" ($l.workspaceBytes | int64) "stdinBytes" ($l.stdinBytes | int64)) "timeouts" (dict "executionSeconds" $l.executionSeconds "idleSeconds" $l.idleSeconds) | toJson | quote }}
{{- end -}}

{{/* icee.podSecurity: the hardened pod and container security contexts. */}}
{{- define "icee.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}
{{- define "icee.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}
