{{/* Labels every object carries. */}}
{{- define "strata.labels" -}}
app.kubernetes.io/name: strata-agent
app.kubernetes.io/part-of: strata
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "strata.selector" -}}
app.kubernetes.io/name: strata-agent
{{- end -}}

{{- define "strata.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "strata.gossipSecret" -}}
{{ .Values.gossip.existingSecret | default "strata-gossip" }}
{{- end -}}

{{- define "strata.cloudSecret" -}}
{{ .Values.cloudCredentials.existingSecret | default "strata-cloud-credentials" }}
{{- end -}}

{{/* The CNI network list: strata-cni, then the chained plugins. */}}
{{- define "strata.conflist" -}}
{{- $plugins := list (dict "type" "strata-cni" "socket" .Values.agent.cniSocket "timeoutSeconds" (int .Values.cni.timeoutSeconds)) -}}
{{- if .Values.cni.portmap -}}
{{- $plugins = append $plugins (dict "type" "portmap" "capabilities" (dict "portMappings" true) "snat" true) -}}
{{- end -}}
{{- if .Values.cni.bandwidth -}}
{{- $plugins = append $plugins (dict "type" "bandwidth" "capabilities" (dict "bandwidth" true)) -}}
{{- end -}}
{{- dict "cniVersion" .Values.cni.cniVersion "name" "strata" "plugins" $plugins | toPrettyJson -}}
{{- end -}}

{{/* The environment variable carrying flag $k: STRATA_ + upper snake case. */}}
{{- define "strata.envName" -}}
STRATA_{{ . | upper | replace "-" "_" }}
{{- end -}}

{{/* A flag value as a string; YAML numbers arrive as float64, which
     toString would print in exponent form. */}}
{{- define "strata.flagValue" -}}
{{- if kindIs "float64" . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- end -}}
