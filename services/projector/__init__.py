"""The projector and the rebuild as services (`clinai serve projector`, `clinai
projections ...`): wiring from the settings to `projections`."""

from services.projector.service import rebuild_command, run_projector, status_command

__all__ = ["rebuild_command", "run_projector", "status_command"]
