{{/*
Names, labels and the pieces every workload shares.
*/}}

{{- define "taskqueue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name, cut so that "-worker-<name>" still fits in 63 characters.
*/}}
{{- define "taskqueue.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 30 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "taskqueue.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "taskqueue.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskqueue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "taskqueue.labels" -}}
helm.sh/chart: {{ include "taskqueue.chart" . }}
{{ include "taskqueue.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskqueue
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "taskqueue.controlPlane.fullname" -}}
{{ include "taskqueue.fullname" . }}-control-plane
{{- end }}

{{- define "taskqueue.configMapName" -}}
{{ include "taskqueue.fullname" . }}-config
{{- end }}

{{/*
The Secret with REDIS_URL, DATABASE_URL, TQ_API_TOKENS and TQ_SECRET_KEY: the chart's own, or
existingSecret.
*/}}
{{- define "taskqueue.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "taskqueue.fullname" . }}
{{- end }}
{{- end }}

{{- define "taskqueue.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "taskqueue.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "taskqueue.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
A worker entry with workerDefaults filled in: an entry's field replaces the default, except in
autoscaling, keda and podDisruptionBudget, which are merged field by field. (hasKey, not sprig's merge, so that an
entry's false or 0 wins over a default.) Rendered as JSON; read it back with fromJson.
*/}}
{{- define "taskqueue.worker" -}}
{{- $worker := deepCopy .root.Values.workerDefaults }}
{{- range $key, $value := .worker }}
{{- if and (has $key (list "autoscaling" "keda" "podDisruptionBudget")) (kindIs "map" $value) }}
{{- $merged := deepCopy (get $worker $key) }}
{{- range $field, $setting := $value }}
{{- $_ := set $merged $field $setting }}
{{- end }}
{{- $_ := set $worker $key $merged }}
{{- else }}
{{- $_ := set $worker $key $value }}
{{- end }}
{{- end }}
{{- toJson $worker }}
{{- end }}

{{/*
The worker entries, filled in, after the checks a JSON schema cannot make.
*/}}
{{- define "taskqueue.workers" -}}
{{- $workers := list }}
{{- $names := list }}
{{- range .Values.workers }}
{{- $worker := include "taskqueue.worker" (dict "root" $ "worker" .) | fromJson }}
{{- if has $worker.name $names }}
{{- fail (printf "workers: the name %q is used twice; each entry becomes a Deployment named after it, so names must be unique" $worker.name) }}
{{- end }}
{{- if and $worker.autoscaling.enabled $worker.keda.enabled }}
{{- fail (printf "workers[%s]: autoscaling and keda are both enabled; KEDA makes its own HorizontalPodAutoscaler, so enable one of them" $worker.name) }}
{{- end }}
{{- if and $worker.autoscaling.enabled (not (dig "requests" "cpu" "" $worker.resources)) }}
{{- fail (printf "workers[%s]: autoscaling on CPU needs resources.requests.cpu (the HorizontalPodAutoscaler's target is a share of it)" $worker.name) }}
{{- end }}
{{- if lt (int $worker.autoscaling.maxReplicas) (int $worker.autoscaling.minReplicas) }}
{{- fail (printf "workers[%s]: autoscaling.maxReplicas (%v) is below minReplicas (%v)" $worker.name $worker.autoscaling.maxReplicas $worker.autoscaling.minReplicas) }}
{{- end }}
{{- if lt (int $worker.keda.maxReplicaCount) (int $worker.keda.minReplicaCount) }}
{{- fail (printf "workers[%s]: keda.maxReplicaCount (%v) is below minReplicaCount (%v)" $worker.name $worker.keda.maxReplicaCount $worker.keda.minReplicaCount) }}
{{- end }}
{{- $names = append $names $worker.name }}
{{- $workers = append $workers $worker }}
{{- end }}
{{- toJson (dict "workers" $workers) }}
{{- end }}

{{- define "taskqueue.worker.fullname" -}}
{{ include "taskqueue.fullname" .root }}-worker-{{ .worker.name }}
{{- end }}

{{- define "taskqueue.worker.selectorLabels" -}}
{{ include "taskqueue.selectorLabels" .root }}
app.kubernetes.io/component: worker
taskqueue/worker: {{ .worker.name }}
{{- end }}

{{/*
PromQL label matchers for the control plane's series: metrics.selector, or the ServiceMonitor's
job and namespace when it is on.
*/}}
{{- define "taskqueue.metricsSelector" -}}
{{- if .Values.metrics.selector }}
{{- .Values.metrics.selector }}
{{- else if .Values.metrics.serviceMonitor.enabled }}
{{- printf "job=%q,namespace=%q" (include "taskqueue.controlPlane.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
PromQL matchers for a worker's queues: queue=~"a|b", each name's regex characters escaped.
*/}}
{{- define "taskqueue.queueMatcher" -}}
{{- $escaped := list }}
{{- range .worker.queues }}
{{- $escaped = append $escaped (regexQuoteMeta . | replace "\\" "\\\\") }}
{{- end }}
{{- $matchers := list (printf "queue=~\"%s\"" (join "|" $escaped)) }}
{{- with include "taskqueue.metricsSelector" .root }}
{{- $matchers = append $matchers . }}
{{- end }}
{{- join "," $matchers }}
{{- end }}

{{/*
The environment every container reads from the Secret. "keys" lists which variables.
*/}}
{{- define "taskqueue.secretEnv" -}}
{{- $optional := list "TQ_API_TOKENS" "TQ_SECRET_KEY" }}
{{- $env := list }}
{{- range .keys }}
{{- $ref := dict "name" (include "taskqueue.secretName" $.root) "key" . }}
{{- if and $.root.Values.existingSecret (has . $optional) }}
{{- $_ := set $ref "optional" true }}
{{- end }}
{{- $env = append $env (dict "name" . "valueFrom" (dict "secretKeyRef" $ref)) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/*
The /tmp emptyDir: the root filesystem is read-only.
*/}}
{{- define "taskqueue.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "taskqueue.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
Pod fields every workload shares: account, pull secrets, security context.
*/}}
{{- define "taskqueue.podCommon" -}}
serviceAccountName: {{ include "taskqueue.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/*
A PodDisruptionBudget's minAvailable or maxUnavailable (minAvailable wins when set).
*/}}
{{- define "taskqueue.disruptionBudget" -}}
{{- if ne (toString .minAvailable) "" -}}
minAvailable: {{ .minAvailable }}
{{- else -}}
maxUnavailable: {{ .maxUnavailable }}
{{- end }}
{{- end }}

{{/*
Restart the pods when the ConfigMap or the chart's Secret changes. The Secret's checksum is over
the values it is made from: a generated TQ_SECRET_KEY is kept across upgrades anyway.
*/}}
{{- define "taskqueue.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.existingSecret }}
{{- $secretValues := list .Values.redis.url .Values.database.url .Values.auth.apiTokens .Values.auth.secretKey }}
checksum/secret: {{ toJson $secretValues | sha256sum }}
{{- end }}
{{- end }}
