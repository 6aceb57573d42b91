"""One project error base (STYLE rule 5): every exception class ClinAI defines derives
from `events.ClinaiError`, which carries a message and a hint. `runner/` runs inside
the sandbox on the standard library alone and keeps its own."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from events import ClinaiError
from services.blobstore.base import BlobKeyError
from services.settings import SettingsError

_PACKAGES = ("events", "projections", "services")


def _project_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if info.name.endswith(".__main__"):
                continue  # runs its command when imported
            module = importlib.import_module(info.name)
            for _, value in inspect.getmembers(module, inspect.isclass):
                if issubclass(value, BaseException) and value.__module__ == info.name:
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def test_every_project_exception_derives_from_the_one_base() -> None:
    classes = _project_exceptions()
    assert len(classes) > 30  # the walk found them
    strays = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in classes
        if not issubclass(cls, ClinaiError)
    )
    assert strays == [], f"derive these from events.ClinaiError: {strays}"


def test_the_base_carries_message_and_hint() -> None:
    err = ClinaiError("the thing failed", hint="retry it")
    assert (str(err), err.message, err.hint) == ("the thing failed", "the thing failed", "retry it")
    assert ClinaiError().hint == ""


@pytest.mark.parametrize(
    "err",
    [SettingsError("CLINAI_X is bad"), BlobKeyError("../x", "no '..'")],
)
def test_errors_that_were_value_errors_still_are(err: Exception) -> None:
    # Callers that catch ValueError (argument checks) keep catching them.
    assert isinstance(err, ClinaiError)
    assert isinstance(err, ValueError)
