"""Real backing services (Kafka, PostgreSQL, Redis) for tests and the local stack."""
