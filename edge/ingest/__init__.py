"""The twin-side receiver (`duet-edge ingest`): MQTT shared subscription → validate → de-duplicate → store."""
