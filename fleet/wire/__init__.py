"""The wire protocol between hub and agents: everything the agent needs of `fleet`, nothing hub-only.

- `messages`: the pydantic payloads (versioned with ``schema_version``), their JSON / chunk codecs.
- `topics`: the versioned topic tree and device-id rules.
- `bundle`: the bundle manifest and file names inside a bundle.
- `acl`: which topics each broker user may read and write (one source for both brokers).
- `transport`: the small `Broker` protocol and an in-memory broker for unit tests.
- `mqtt`: the paho-mqtt adapter implementing `Broker` for real brokers.
- `mqtt_bulk`: one connection that reads one busy subscription (the hub's telemetry) in bulk.
- `sketches`: fixed histogram buckets and KLL feature sketches the agent fills.
"""
