{{/*
The REST facade, defined once for both layouts (facade.layout):

  deployment (default)  pods of its own (templates/facade-deployment.yaml) under a ServiceAccount of
                        its own, bound only to the facade's roles (templates/rbac-facade.yaml);
  sidecar               a second container of the control-plane pod (templates/deployment.yaml),
                        holding that pod's ServiceAccount and so every right of the operator too.

Everything that must agree between the facade's pods, its Services, its PodDisruptionBudget, its
NetworkPolicy and its RBAC bindings (which pods, which identity) is decided here.
*/}}

{{- define "gpufleet.facadeSidecar" -}}
{{- if eq .Values.facade.layout "sidecar" }}true{{ end }}
{{- end }}

{{/* The component label of the pods that run the facade: its own, or the control plane's. */}}
{{- define "gpufleet.facadePodComponent" -}}
{{- if include "gpufleet.facadeSidecar" . }}controlplane{{ else }}facade{{ end }}
{{- end }}

{{/* The ServiceAccount of the facade's own pods (deployment layout). */}}
{{- define "gpufleet.facadeServiceAccount" -}}
{{- default (printf "%s-facade" (include "gpufleet.fullname" .)) .Values.facade.serviceAccount.name }}
{{- end }}

{{/* The identity the facade container runs as, in either layout: what its roles are bound to. */}}
{{- define "gpufleet.facadeIdentity" -}}
{{- if include "gpufleet.facadeSidecar" . }}
{{- include "gpufleet.controlplaneServiceAccount" . }}
{{- else }}
{{- include "gpufleet.facadeServiceAccount" . }}
{{- end }}
{{- end }}

{{/* Pod securityContext of the control-plane and facade pods: non-root, the runtime's seccomp profile. */}}
{{- define "gpufleet.nonRootPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The root filesystem is read-only; Python and aiohttp may still want a scratch /tmp (each
container of a pod mounts its own subPath). */}}
{{- define "gpufleet.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{/* The volumes only the facade container mounts (besides tmp): static tokens and TLS, when used. */}}
{{- define "gpufleet.facadeVolumes" -}}
{{- if eq .Values.facade.auth.mode "static" -}}
- name: static-tokens
  secret:
    secretName: {{ include "gpufleet.staticTokensSecret" . }}
    defaultMode: 0440
    items:
      - key: tokens
        path: tokens
{{- end }}
{{- if .Values.facade.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.facade.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* The facade container (`gpufleet facade`), as one item of a pod's containers list. */}}
{{- define "gpufleet.facadeContainer" -}}
{{- $scheme := include "gpufleet.facadeScheme" . | upper }}
{{- $static := eq .Values.facade.auth.mode "static" -}}
- name: facade
  image: {{ include "gpufleet.image" (dict "root" . "image" .Values.image) }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["facade"]
  env:
    - name: GPUFLEET_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: GPUFLEET_FACADE_PORT
      value: {{ .Values.facade.port | quote }}
    - name: GPUFLEET_AUTH_MODE
      value: {{ .Values.facade.auth.mode | quote }}
    - name: GPUFLEET_HOST_LEASE_NAMESPACE
      value: {{ include "gpufleet.hostLeaseNamespace" . | quote }}
    {{- if $static }}
    - name: GPUFLEET_STATIC_TOKENS_FILE
      value: /etc/gpufleet/auth/tokens
    {{- end }}
    {{- if .Values.facade.tls.enabled }}
    - name: GPUFLEET_TLS_CERT_FILE
      value: /etc/gpufleet/tls/tls.crt
    - name: GPUFLEET_TLS_KEY_FILE
      value: /etc/gpufleet/tls/tls.key
    {{- end }}
    - name: GPUFLEET_PAGE_SIZE_DEFAULT
      value: {{ .Values.facade.pageSizeDefault | quote }}
    - name: GPUFLEET_PAGE_SIZE_MAX
      value: {{ .Values.facade.pageSizeMax | quote }}
    - name: GPUFLEET_API_TIMEOUT_SECONDS
      value: {{ .Values.facade.apiTimeoutSeconds | quote }}
    - name: GPUFLEET_MAX_BODY_BYTES
      value: {{ .Values.facade.maxBodyBytes | int64 | quote }}
    - name: GPUFLEET_LOG_LEVEL
      value: {{ .Values.facade.logLevel | quote }}
    - name: GPUFLEET_LOG_FORMAT
      value: {{ .Values.facade.logFormat | quote }}
    {{- with .Values.facade.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: facade
      containerPort: {{ .Values.facade.port }}
      protocol: TCP
  readinessProbe:
    httpGet:
      path: /readyz
      port: facade
      scheme: {{ $scheme }}
    periodSeconds: 5
    timeoutSeconds: 3
    failureThreshold: 3
  livenessProbe:
    httpGet:
      path: /healthz
      port: facade
      scheme: {{ $scheme }}
    initialDelaySeconds: 10
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  resources:
    {{- toYaml .Values.facade.resources | nindent 4 }}
  securityContext:
    {{- include "gpufleet.restrictedContainer" . | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
      subPath: facade
    {{- if $static }}
    - name: static-tokens
      mountPath: /etc/gpufleet/auth
      readOnly: true
    {{- end }}
    {{- if .Values.facade.tls.enabled }}
    - name: tls
      mountPath: /etc/gpufleet/tls
      readOnly: true
    {{- end }}
{{- end }}

{{/* The ServiceMonitor endpoint of the facade's /metrics, as one item of an endpoints list. */}}
{{- define "gpufleet.facadeMetricsEndpoint" -}}
- port: facade-metrics
  path: /metrics
  scheme: {{ include "gpufleet.facadeScheme" . }}
  interval: {{ .Values.metrics.serviceMonitor.interval }}
  {{- if .Values.facade.tls.enabled }}
  tlsConfig:
    # the certificate names the facade Service, not the pod IPs Prometheus scrapes
    insecureSkipVerify: true
  {{- end }}
{{- end }}

{{/* The NetworkPolicy ingress rule of the facade port, as one item of an ingress list. */}}
{{- define "gpufleet.facadeIngress" -}}
- ports:
    - port: facade
      protocol: TCP
  {{- with .Values.networkPolicy.facadeFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
