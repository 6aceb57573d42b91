"""Who may see what: the one rule for models, used by the commands (over the log) and
the queries (over the read models)."""

from __future__ import annotations

__all__ = ["can_change_model", "can_read_model"]


def can_read_model(owner: str, visibility: str, user_id: str, is_admin: bool) -> bool:
    """A model is readable (and runnable) by its owner, an admin, or anyone if public."""
    return owner == user_id or is_admin or visibility == "public"


def can_change_model(owner: str, user_id: str, is_admin: bool) -> bool:
    """Changing a model (rename, visibility, delete, new versions) is for its owner or
    an admin, public or not."""
    return owner == user_id or is_admin
