"""example-model/: runs on the host test venv (it only needs Pillow and the runner),
passes package validation when zipped, and declares its typed inputs (one file, one
parameter) and its result."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from runner import File
from services.packages import PackageLimits, inspect_package
from services.packages._sources import check_predict
from services.packages.schema import CompiledInputs, InputsInvalidError

MODEL_DIR = Path(__file__).resolve().parent.parent / "example-model"


@pytest.fixture
def predict() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_model_predict", MODEL_DIR / "predict.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_converts_to_grayscale(predict: ModuleType, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    Image.new("RGB", (40, 30), (200, 50, 10)).save(src)
    out = tmp_path / "out"
    out.mkdir()
    predict.setup()
    result = predict.run(File(src), out)
    assert result == {
        "width": 40,
        "height": 30,
        "mode": "RGB",
        "format": "PNG",
        "grayscale": "grayscale.png",
    }
    with Image.open(out / "grayscale.png") as gray:
        assert gray.mode == "L" and gray.size == (40, 30) and gray.format == "PNG"
        expected = round(200 * 299 / 1000 + 50 * 587 / 1000 + 10 * 114 / 1000)
        assert abs(gray.getpixel((0, 0)) - expected) <= 1  # type: ignore[operator]


def test_levels_reduces_the_grey_levels(predict: ModuleType, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    Image.linear_gradient("L").save(src)
    predict.run(File(src), tmp_path, levels=4)
    with Image.open(tmp_path / "grayscale.png") as gray:
        assert sorted(c for _, c in gray.getcolors()) == [0, 64, 128, 192]  # type: ignore[union-attr]


def test_its_schema_is_one_file_and_one_parameter_and_a_declared_result(tmp_path: Path) -> None:
    schema = check_predict((MODEL_DIR / "predict.py").read_bytes())[1]
    assert schema is not None and schema.takes_output_dir
    image, levels = schema.params
    assert (image.name, image.kind, image.required) == ("input", "file", True)
    assert (levels.name, levels.kind, levels.default, levels.ge, levels.le) == (
        "levels",
        "int",
        256,
        2,
        256,
    )
    assert schema.output_name == "Result" and schema.output is not None
    assert [f.name for f in schema.output] == ["width", "height", "mode", "format", "grayscale"]
    compiled = CompiledInputs(schema)
    assert compiled.resolve({"input": "upload_1"}) == {"input": "upload_1", "levels": 256}
    with pytest.raises(InputsInvalidError, match="levels"):
        compiled.resolve({"input": "upload_1", "levels": 1})


def test_requirements_pin_the_locked_pillow() -> None:
    lock = (MODEL_DIR.parent / "requirements-dev.lock").read_text()
    pinned = next(line.split()[0] for line in lock.splitlines() if line.startswith("pillow=="))
    assert (MODEL_DIR / "requirements.txt").read_text().split() == [pinned]


def test_package_passes_validation(tmp_path: Path) -> None:
    zp = tmp_path / "example-model.zip"
    with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(MODEL_DIR.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, f"example-model/{path.relative_to(MODEL_DIR).as_posix()}")
    info = inspect_package(zp, PackageLimits())
    assert info.has_setup and info.stripped_prefix == "example-model"
    assert info.input_schema is not None
    assert {"predict.py", "requirements.txt"} <= {f.path for f in info.files}
    assert info.requirements == ("pillow==13.0.0",)
