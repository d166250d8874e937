"""The fleet's language and brain, free of I/O: wire protocol, telemetry shapes, rollout and analysis logic."""
