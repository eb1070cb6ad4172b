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

{{- define "llmlab.resultKeySecret" -}}
{{ .Values.resultKeySecret | default (printf "%s-result-key" (include "llmlab.fullname" .)) }}
{{- end -}}

{{/* The result key: a volume, its mount and the variable that names the file (see resultKeySecret). */}}
{{- define "llmlab.resultKeyVolume" -}}
- name: result-key
  secret: {secretName: {{ include "llmlab.resultKeySecret" . }}, defaultMode: 0400}
{{- end -}}

{{- define "llmlab.resultKeyMount" -}}
- {name: result-key, mountPath: /etc/llmlab/result-key, readOnly: true}
{{- end -}}

{{- define "llmlab.resultKeyEnv" -}}
- {name: LLMLAB_RESULT_KEY_FILE, value: /etc/llmlab/result-key/key}
{{- end -}}

{{/* Pod-level security of pods that run learner code: bubblewrap needs user namespaces. */}}
{{- define "llmlab.learnerPodSecurityContext" -}}
{{- $ctx := deepCopy .Values.podSecurityContext }}
{{- if .Values.sandbox.bubblewrap.enabled }}
{{- $_ := set $ctx "seccompProfile" .Values.sandbox.bubblewrap.seccompProfile }}
{{- end }}
{{ toYaml $ctx }}
{{- end -}}

{{- define "llmlab.learnerPodExtras" -}}
{{- if .Values.sandbox.runtimeClassName }}
runtimeClassName: {{ .Values.sandbox.runtimeClassName }}
{{- end }}
{{- end -}}

{{/* AppArmor's default container profile forbids the mounts bubblewrap makes (annotation: Kubernetes 1.29+). */}}
{{- define "llmlab.learnerPodAnnotations" -}}
{{- if .Values.sandbox.bubblewrap.enabled }}
container.apparmor.security.beta.kubernetes.io/{{ .container }}: unconfined
{{- end }}
{{- end -}}

{{- define "llmlab.learnerEnv" -}}
{{- if .Values.sandbox.insecureNoSandbox }}
- {name: LLMLAB_INSECURE_NO_SANDBOX, value: "1"}
{{- end }}
{{- end -}}

{{/* Where the pretraining RayJob writes: a PersistentVolumeClaim when named, else scratch space. */}}
{{- define "llmlab.outputVolume" -}}
{{- /* a batch job's output volume: its claim, or an emptyDir that dies with the pod (arg: the output values) */ -}}
- name: output
{{- if .claimName }}
  persistentVolumeClaim: {claimName: {{ .claimName }}}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}
