{{/* Chart name, cut to 63 characters (DNS label). */}}
{{- define "rtdetr-edge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name, cut to 63 characters; the release name alone if it already contains the chart name. */}}
{{- define "rtdetr-edge.fullname" -}}
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

{{- define "rtdetr-edge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (never helm.sh/chart or versions). */}}
{{- define "rtdetr-edge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtdetr-edge.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rtdetr-edge.labels" -}}
helm.sh/chart: {{ include "rtdetr-edge.chart" . }}
{{ include "rtdetr-edge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: rtdetr-edge
{{- end }}

{{- define "rtdetr-edge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rtdetr-edge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository:tag, with the chart's appVersion as the default tag and an optional suffix. */}}
{{- define "rtdetr-edge.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- $suffix := index . 2 -}}
{{- $tag := default (printf "%s%s" $root.Chart.AppVersion $suffix) $image.tag -}}
{{- if $image.digest -}}
{{- printf "%s%s@%s" (ternary "" (printf "%s/" $image.registry) (empty $image.registry)) $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s%s:%s" (ternary "" (printf "%s/" $image.registry) (empty $image.registry)) $image.repository $tag -}}
{{- end -}}
{{- end }}

{{- define "rtdetr-edge.peeringName" -}}
{{- include "rtdetr-edge.fullname" . }}
{{- end }}

{{/* RBAC rules of the operator, each with the reason it exists (least privilege). */}}
{{- define "rtdetr-edge.rules" }}
# Watch RTDETRModels; patch them for kopf's finalizer and last-handled annotations.
- apiGroups: ["rtdetr.io"]
  resources: ["rtdetrmodels"]
  verbs: ["get", "list", "watch", "patch"]
# Children carry ownerReferences with blockOwnerDeletion (garbage collection waits for them):
# clusters enforcing OwnerReferencesPermissionEnforcement (OpenShift, hardened clusters) require
# update on the owner's finalizers subresource for that.
- apiGroups: ["rtdetr.io"]
  resources: ["rtdetrmodels/finalizers"]
  verbs: ["update"]
# Report phase, conditions, accuracy and endpoint.
- apiGroups: ["rtdetr.io"]
  resources: ["rtdetrmodels/status"]
  verbs: ["get", "patch", "update"]
# Create quantize/export Jobs and watch their outcome; delete the Jobs of a pipeline the spec
# moved on from (a spec edit must not keep a GPU busy for hours). The rest goes with the
# RTDETRModel through ownerReferences.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "delete"]
# Serving pods and their Service: server-side applied (patch) at every reconcile, which rolls
# out new models and settings and reverts hand edits of the fields the operator owns.
# Watched (only objects labelled managed-by rtdetr-edge-operator) to see drift without polling;
# get: before the first apply, to refuse taking over a same-named object someone else made.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# (the Service in front of them, applied and watched the same way)
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The HorizontalPodAutoscaler of serving.autoscaling: applied and watched as above (its
# status says whether it can read its metrics); deleted when autoscaling is turned off.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The serving pods' NetworkPolicy of serving.allowFrom: applied and watched as above; deleted
# when allowFrom is removed.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The pipeline's stage-config ConfigMap (named by the pipeline digest, deleted with its
# superseded Job) and the served-model ConfigMap serving pods swap models from (serving.rollout
# InPlace): applied and watched like the Deployment.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Watch our Jobs' and serving pods' states (why a pod cannot run, the pipeline's result summary
# in its termination message).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Read the last RTDETR_PROGRESS lines of a running Job's log (training progress in status).
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Kubernetes Events for every status transition.
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Read why a Job has no pod (its FailedCreate events: quota, Pod Security, a webhook), only then.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
{{- if gt (int .Values.operator.replicaCount) 1 }}
# kopf peering between operator replicas (one active, others standby).
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings", "clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
