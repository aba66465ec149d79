"""The Grafana dashboard in the chart: its JSON, its queries, its ConfigMap."""
