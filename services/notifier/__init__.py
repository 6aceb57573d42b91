"""The notifier: the service that delivers events to webhook subscribers
(`clinai serve notifier`). The subscriptions' write side, signing and the SSRF guard are
domain rules (`services.domain`), shared with the API."""

from services.notifier.service import run_notifier

__all__ = ["run_notifier"]
