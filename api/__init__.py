"""The Litestar API: REST for people and systems, WebSocket for SCADA monitors."""
