{{/*
Names, labels and small computed values shared by every template. Everything a template needs
to agree on with another template (object names, selectors, the facade scheme) is defined once
here, so the Service cannot point at a port the Deployment does not open.
*/}}

{{- define "gpufleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gpufleet.fullname" -}}
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

{{- define "gpufleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gpufleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: gpufleet
{{- /* not "managed-by: gpufleet": that label marks the agent-token Secrets the operator owns */}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "controlplane"). */}}
{{- define "gpufleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpufleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "gpufleet.componentLabels" -}}
{{ include "gpufleet.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "gpufleet.controlplaneServiceAccount" -}}
{{- default (printf "%s-controlplane" (include "gpufleet.fullname" .)) .Values.operator.serviceAccount.name }}
{{- end }}

{{- define "gpufleet.agentServiceAccount" -}}
{{- default (printf "%s-agent" (include "gpufleet.fullname" .)) .Values.agent.serviceAccount.name }}
{{- end }}

{{/* The namespace of the hosts' heartbeat Leases (hostLeases.namespace). */}}
{{- define "gpufleet.hostLeaseNamespace" -}}
{{- .Values.hostLeases.namespace }}
{{- end }}

{{/* An image reference: the digest wins over the tag; the tag defaults to the appVersion. */}}
{{- define "gpufleet.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "gpufleet.facadeScheme" -}}
{{- if .Values.facade.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{- define "gpufleet.facadeServicePort" -}}
{{- if .Values.facade.service.port }}{{ .Values.facade.service.port }}{{ else if .Values.facade.tls.enabled }}443{{ else }}80{{ end }}
{{- end }}

{{- define "gpufleet.staticTokensSecret" -}}
{{- default (printf "%s-facade-tokens" (include "gpufleet.fullname" .)) .Values.facade.auth.static.existingSecret }}
{{- end }}

{{/*
Cross-value checks the JSON schema cannot express. A grace period under 4 heartbeat intervals
makes a host flap offline on one late heartbeat (Kubernetes uses 40 s against 10 s node leases).
*/}}
{{- define "gpufleet.validate" -}}
{{- $grace := float64 .Values.operator.gracePeriodSeconds }}
{{- $heartbeat := float64 .Values.agent.heartbeatIntervalSeconds }}
{{- if lt $grace (mulf 4 $heartbeat) }}
{{- fail (printf "operator.gracePeriodSeconds (%v) must be at least 4x agent.heartbeatIntervalSeconds (%v): hosts would flap offline on a single late heartbeat" .Values.operator.gracePeriodSeconds .Values.agent.heartbeatIntervalSeconds) }}
{{- end }}
{{- if lt (float64 .Values.agent.resyncIntervalSeconds) (float64 .Values.agent.sampleIntervalSeconds) }}
{{- fail "agent.resyncIntervalSeconds must not be shorter than agent.sampleIntervalSeconds" }}
{{- end }}
{{- if gt (int .Values.facade.pageSizeDefault) (int .Values.facade.pageSizeMax) }}
{{- fail "facade.pageSizeDefault must not exceed facade.pageSizeMax" }}
{{- end }}
{{- if and .Values.facade.tls.enabled (not .Values.facade.tls.secretName) }}
{{- fail "facade.tls.secretName is required when facade.tls.enabled is true (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and (not (include "gpufleet.facadeSidecar" .)) (eq (include "gpufleet.facadeServiceAccount" .) (include "gpufleet.controlplaneServiceAccount" .)) }}
{{- fail (printf "facade.serviceAccount.name (%s) must differ from the operator's ServiceAccount: with facade.layout=deployment the facade runs under an identity of its own; set facade.layout=sidecar to share the operator's" (include "gpufleet.facadeServiceAccount" .)) }}
{{- end }}
{{- if and (not .Values.operator.leaderElection) (gt (int .Values.controlPlane.replicas) 1) }}
{{- fail "operator.leaderElection=false needs controlPlane.replicas=1: several operators would act at once" }}
{{- end }}
{{- /* client-go's rule, also checked by the operator's settings: a leader stops writing (renew
deadline) before a standby may take its Lease (lease duration), and retries in between. */}}
{{- $lease := float64 .Values.operator.leaseDurationSeconds }}
{{- $renew := float64 .Values.operator.renewDeadlineSeconds }}
{{- $retry := float64 .Values.operator.retryPeriodSeconds }}
{{- if not (and (lt $retry $renew) (lt $renew $lease)) }}
{{- fail (printf "operator.retryPeriodSeconds (%v) < operator.renewDeadlineSeconds (%v) < operator.leaseDurationSeconds (%v) is required: a leader must stop writing before its Lease can be taken over" .Values.operator.retryPeriodSeconds .Values.operator.renewDeadlineSeconds .Values.operator.leaseDurationSeconds) }}
{{- end }}
{{- end }}

{{/* The container securityContext of every non-root container: nothing to escalate to. */}}
{{- define "gpufleet.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end }}
