"""`clinai predict`: a model folder run here, without a server, in the process runtime's
sandbox (bubblewrap) and runner: example-model's typed inputs and output, the test
packages that crash or raise, inputs refused before anything runs, no bubblewrap."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests._infra import needs_bubblewrap
from tests.api._client import EXAMPLE_MODEL
from tests.cli.conftest import Clinai, png

PACKAGES = Path(__file__).resolve().parents[1] / "packages"


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: an environment is built once, then reused."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def sandboxed(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    needs_bubblewrap("clinai predict")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv("CLINAI_UNSAFE_NO_SANDBOX", raising=False)
    yield


@pytest.mark.sandbox
def test_example_model_runs_here_and_writes_its_output(
    sandboxed: None, clinai: Clinai, tmp_path: Path
) -> None:
    photo = png(tmp_path / "photo.png", (40, 30))
    out = tmp_path / "out"
    ran = clinai("predict", EXAMPLE_MODEL, f"input=@{photo}", "levels=4", "-o", out)
    assert ran.code == 0, ran
    assert '"width": 40' in ran.out and f"saved {out / 'grayscale.png'}" in ran.out
    with Image.open(out / "grayscale.png") as gray:
        assert gray.mode == "L" and len(gray.getcolors() or []) <= 4

    refused = clinai("predict", EXAMPLE_MODEL, f"input=@{photo}", "levels=1")
    assert refused.code == 1
    assert "input 'levels': expected an integer >= 2 and <= 256, got 1" in refused.err
    missing = clinai("predict", EXAMPLE_MODEL, "levels=4")
    assert missing.code == 1 and "input 'input' is required" in missing.err


@pytest.mark.sandbox
def test_a_typed_float_and_the_json_output(sandboxed: None, clinai: Clinai, tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"abc")
    ran = clinai(
        "predict", PACKAGES / "typed", f"image=@{data}", "scale=1", "mode=slow", "--json",
        "-o", tmp_path / "out",
    )  # fmt: skip
    assert ran.code == 0, ran
    document = json.loads(ran.out)
    result = document["result"]
    assert (result["scale"], result["scale_type"], result["mode"]) == (1.0, "float", "slow")
    assert result["image_name"] == "image-data.bin"  # named in the sandbox as the API names it
    assert document["outputs"] == [str(tmp_path / "out" / "reversed.bin")]
    assert (tmp_path / "out" / "reversed.bin").read_bytes() == b"cba"

    wrong = clinai("predict", PACKAGES / "typed", f"image=@{data}", "wrong=true")
    assert wrong.code == 1 and "does not match its declared Result" in wrong.err


@pytest.mark.sandbox
@pytest.mark.parametrize(
    ("package", "kind", "says"),
    [
        ("crash", "crashed", "the worker died during the job (exit code 3)"),
        ("raises", "model_error", "ValueError: this model always fails"),
    ],
)
def test_a_failing_package_says_how_it_failed(
    sandboxed: None, clinai: Clinai, tmp_path: Path, package: str, kind: str, says: str
) -> None:
    data = tmp_path / "data.txt"
    data.write_text("x")
    ran = clinai("predict", PACKAGES / package, f"input=@{data}", "-o", tmp_path / "out")
    assert ran.code == 1
    assert f"clinai predict: the job failed ({kind}):" in ran.err and says in ran.err
    assert not (tmp_path / "out").exists()


def test_without_bubblewrap_it_says_what_to_install(
    clinai: Clinai, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    monkeypatch.delenv("CLINAI_UNSAFE_NO_SANDBOX", raising=False)
    ran = clinai("predict", EXAMPLE_MODEL, "input=@nothing.png")
    assert ran.code == 1
    assert "bubblewrap is not installed" in ran.err and "apt-get install bubblewrap" in ran.err
