"""Ingest: durable event intake, schema validation, normalization and dead letters."""
