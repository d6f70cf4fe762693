"""The bridge service: Kafka commands to Modbus, confirmed outcomes to PostgreSQL and Redis."""
