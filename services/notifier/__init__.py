"""The notifier: webhook subscriptions (write side), signing, the SSRF guard, and the
service that delivers events to subscribers (`clinai serve notifier`)."""

from services.notifier.commands import InvalidWebhookError, IssuedSecret, WebhookCommands
from services.notifier.service import run_notifier

__all__ = ["InvalidWebhookError", "IssuedSecret", "WebhookCommands", "run_notifier"]
