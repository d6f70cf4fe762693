"""Field side: the barrier register map, Modbus/TCP client, codec and batching poller."""
