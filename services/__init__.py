"""ClinAI's services (api, builder, executor, notifier), their shared plumbing and the CLI."""

__all__: list[str] = []
