"""Start real NATS, Redis and PostgreSQL servers where none answer on the configured URLs."""
