{{- define "llmlab.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmlab.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Common labels; call with (dict "ctx" $ "component" "grader") */}}
{{- define "llmlab.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
app.kubernetes.io/name: {{ include "llmlab.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: llmlab
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llmlab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmlab.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llmlab.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "llmlab.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "llmlab.securityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}

{{- define "llmlab.rayHeadService" -}}
{{ include "llmlab.fullname" . }}-ray-head-svc
{{- end -}}

{{/* vLLM's --speculative-config as JSON, from the speculative values */}}
{{- define "llmlab.speculativeConfig" -}}
{{- $s := .Values.inference.speculative -}}
{{- $cfg := dict "method" $s.method "num_speculative_tokens" (int $s.numSpeculativeTokens) -}}
{{- if eq $s.method "ngram" -}}
{{- $_ := set $cfg "prompt_lookup_max" (int $s.promptLookupMax) -}}
{{- $_ := set $cfg "prompt_lookup_min" (int $s.promptLookupMin) -}}
{{- else -}}
{{- $_ := set $cfg "model" $s.draftModel -}}
{{- end -}}
{{- toJson $cfg -}}
{{- end -}}
