{{- define "torchrollout.labels" -}}
app.kubernetes.io/name: torchrollout
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "torchrollout.selector" -}}
app.kubernetes.io/name: torchrollout
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
