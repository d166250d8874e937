"""Exporters: one module per runtime format, each implementing the `Exporter` protocol."""
