"""Connections to the infrastructure every service opens from the settings: NATS and the
event store, the blob store, the signing key (`connections`), and the sandbox runtime
(`runtime_factory`)."""

__all__: list[str] = []
