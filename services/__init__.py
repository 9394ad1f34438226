"""The five rtml services, one package each: ingest, features, inference, monitor, rollout."""
