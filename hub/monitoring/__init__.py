"""Monitoring: telemetry ingestion, drift and canary queries, Prometheus metrics and their REST API."""
