"""Servers run as local processes on loopback: Prometheus (here), for rehearsal and tests."""
