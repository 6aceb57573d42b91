"""The builder against real NATS, a file blob store and the sandboxed process runtime."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from events import (
    BuildFailed,
    BuildLogAppended,
    BuildStarted,
    VersionBuilt,
    VersionUploaded,
)
from services.settings import Settings
from tests.services._support import (
    ModelPackage,
    events_of,
)
from tests.services.conftest import Rig, build_ended

TINY = {
    "predict.py": (
        "import os\n\n"
        "def run(input_path, output_dir):\n"
        "    open(os.path.join(output_dir, 'out.txt'), 'w').write('ok')\n"
        "    return {'ok': True}\n"
    ),
    "requirements.txt": "# nothing needed\n",
}


async def test_builds_a_tiny_package(tmp_path: Path, rig: Rig) -> None:
    rig.services.builder()
    package = ModelPackage(tmp_path, TINY)
    _, version_id, events = await rig.build(package)
    types = [type(e) for e in events]
    assert types[0] is VersionUploaded
    assert types[1] is BuildStarted
    assert types[-1] is VersionBuilt, events[-1]
    assert all(t is BuildLogAppended for t in types[2:-1]) and len(types) > 3
    chunks = [e for e in events if isinstance(e, BuildLogAppended)]
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert "smoke check" in "".join(c.text for c in chunks)
    built = events[-1]
    assert isinstance(built, VersionBuilt)
    assert built.runtime == "process" and built.artifact
    assert built.artifact_details["package_hash"] == package.info.package_hash
    assert built.reused_from is None
    assert built.causation_id == events[0].id and built.correlation_id == events[0].correlation_id
    assert built.log_key == f"logs/builds/{version_id}.log"
    assert b"smoke check" in await rig.blobs.get_bytes(built.log_key)


async def test_broken_requirements_fail_naming_the_pip_step(tmp_path: Path, rig: Rig) -> None:
    rig.services.builder()
    files = dict(TINY, **{"requirements.txt": "clinai-no-such-package==1.0\n"})
    _, _, events = await rig.build(ModelPackage(tmp_path, files))
    failed = events[-1]
    assert isinstance(failed, BuildFailed), failed
    assert "pip install" in failed.reason
    assert "clinai-no-such-package" in failed.log_tail
    assert failed.log_key is not None
    assert b"clinai-no-such-package" in await rig.blobs.get_bytes(failed.log_key)
    assert not any(isinstance(e, VersionBuilt) for e in events)


async def test_identical_package_reuses_the_artifact_without_building(
    tmp_path: Path, rig: Rig
) -> None:
    rig.services.builder()
    package = ModelPackage(tmp_path, TINY)
    model_id, first, history = await rig.build(package)
    original = history[-1]
    assert isinstance(original, VersionBuilt)

    again = ModelPackage(tmp_path, TINY)  # a new zip, same content
    assert again.info.package_hash == package.info.package_hash
    _, second = await rig.upload(again, model_id)
    await build_ended(rig.store, second)

    events = await events_of(rig.store, "version", second)
    # No BuildStarted, no log: nothing ran (how fast that is: bench.jobs, "identical re-upload").
    assert [type(e) for e in events] == [VersionUploaded, VersionBuilt]
    reused = events[-1]
    assert isinstance(reused, VersionBuilt)
    assert reused.reused_from == first
    assert reused.artifact == original.artifact
    assert reused.artifact_details == original.artifact_details


async def test_a_restarted_builder_reuses_builds_it_did_not_do(tmp_path: Path, rig: Rig) -> None:
    """The reuse index is read from the log, not kept in one process's memory."""
    rig.services.builder()
    package = ModelPackage(tmp_path, TINY)
    model_id, first = await rig.upload(package)
    await build_ended(rig.store, first)
    await rig.services.stop_all()

    rig.services.builder()
    _, _, history = await rig.build(package, model_id, wait_s=10.0)
    reused = history[-1]
    assert isinstance(reused, VersionBuilt) and reused.reused_from == first


def _host_paths(settings: Settings) -> list[str]:
    """Paths of the platform on this host that no build log may show."""
    data = Path(settings.data_dir)
    return [str(data), str(data.resolve()), sys.prefix, sys.executable, ".venv/"]


async def test_the_build_log_shows_what_ran_without_host_paths(
    tmp_path: Path, rig: Rig, settings: Settings
) -> None:
    rig.services.builder()
    # A requirement no index has: a fresh environment is made, then pip fails.
    broken = dict(TINY, **{"requirements.txt": f"clinai-no-such-{uuid.uuid4().hex[:8]}==1.0\n"})
    _, failing = await rig.upload(ModelPackage(tmp_path / "a", broken))
    # A package that builds: predict.py is smoke-checked.
    fine = dict(TINY, **{"build-id.txt": uuid.uuid4().hex})
    _, building = await rig.upload(ModelPackage(tmp_path / "b", fine))
    await build_ended(rig.store, failing)
    await build_ended(rig.store, building)

    logs = []
    for version_id in (failing, building):
        events = await events_of(rig.store, "version", version_id)
        chunks = "".join(e.text for e in events if isinstance(e, BuildLogAppended))
        end = events[-1]
        assert isinstance(end, BuildFailed | VersionBuilt), end
        assert end.log_key is not None
        stored = (await rig.blobs.get_bytes(end.log_key)).decode()
        tail = end.log_tail if isinstance(end, BuildFailed) else ""
        logs.append(chunks + stored + tail)
    failed_log, built_log = logs
    # Still says what was run, with paths relative to the package.
    assert "-m venv --without-pip <environment>" in failed_log
    assert "pip install" in failed_log and "-r requirements.txt" in failed_log
    assert "smoke check" in built_log
    for path in _host_paths(settings):
        assert path not in failed_log, path
        assert path not in built_log, path
