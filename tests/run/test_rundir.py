import pytest

from saeinverse import get_default_config
from saeinverse.errors import ArtifactError
from saeinverse.io import load_json, save_json
from saeinverse.run.rundir import MARKER, Run, digest


def _stage(run, name, stage_hash, calls, fail=False):
    def compute(folder):
        calls.append(name)
        save_json(folder / "out.json", {"value": len(calls)})
        if fail:
            raise RuntimeError("boom")
        return load_json(folder / "out.json")

    return run.run_stage(name, stage_hash, compute, lambda folder: load_json(folder / "out.json"))


def test_run_directory_has_config_and_meta(tmp_path):
    run = Run.create(get_default_config(), root=tmp_path / "r")
    assert (run.root / "config.yaml").exists()
    assert "torch" in load_json(run.root / "meta.json")["versions"]


def test_same_hash_is_reused_changed_hash_recomputed(tmp_path):
    run = Run.create(get_default_config(), root=tmp_path)
    calls = []
    first = _stage(run, "collect", "h1", calls)
    again = _stage(Run.create(get_default_config(), root=tmp_path), "collect", "h1", calls)
    assert calls == ["collect"] and again == first
    changed = _stage(run, "collect", "h2", calls)
    assert calls == ["collect", "collect"] and changed["value"] == 2
    assert run.stage_hash("collect") == "h2"


def test_crashed_stage_is_never_trusted(tmp_path):
    run = Run.create(get_default_config(), root=tmp_path)
    calls = []
    _stage(run, "s", "h", calls)
    with pytest.raises(RuntimeError):
        _stage(run, "s", "h2", calls, fail=True)
    assert not (run.stage_dir("s") / MARKER).exists()
    assert run.stage_hash("s") is None
    with pytest.raises(RuntimeError):  # the same hash again: the crashed attempt is not reused
        _stage(run, "s", "h2", calls, fail=True)
    assert calls == ["s", "s", "s"]


def test_force_recomputes(tmp_path):
    calls = []
    _stage(Run.create(get_default_config(), root=tmp_path), "s", "h", calls)
    _stage(Run.create(get_default_config(), root=tmp_path, force={"s"}), "s", "h", calls)
    _stage(Run.create(get_default_config(), root=tmp_path, force={"all"}), "s", "h", calls)
    _stage(Run.create(get_default_config(), root=tmp_path), "s", "h", calls)
    assert calls == ["s", "s", "s"]


def test_corrupt_marker_means_recompute_and_corrupt_artifact_is_clear(tmp_path):
    run = Run.create(get_default_config(), root=tmp_path)
    calls = []
    _stage(run, "s", "h", calls)
    (run.stage_dir("s") / MARKER).write_text("{not json")
    _stage(run, "s", "h", calls)
    assert calls == ["s", "s"]
    (run.stage_dir("s") / "out.json").write_text("{")
    with pytest.raises(ArtifactError, match="out.json"):
        load_json(run.stage_dir("s") / "out.json")


def test_digest_is_stable_and_sensitive():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    from saeinverse.io import atomic_open

    path = tmp_path / "x.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write("new")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_checkpoints_survive_a_dead_attempt_but_not_a_forced_one(tmp_path):
    from saeinverse.artifacts import CHECKPOINT_DIR

    run = Run.create(get_default_config(), root=tmp_path)
    seen = []

    def compute(folder, die=False):
        unit = folder / CHECKPOINT_DIR / "plan" / "unit-0.json"
        seen.append(unit.exists())
        save_json(unit, {"done": True})
        if die:
            raise KeyboardInterrupt  # killed mid-stage: the marker is never written
        save_json(folder / "out.json", {"value": 1})

    with pytest.raises(KeyboardInterrupt):
        run.run_stage("s", "h", lambda f: compute(f, die=True), lambda f: None)
    run.run_stage("s", "h", compute, lambda f: None)
    assert seen == [False, True]  # the rerun found the unit the dead attempt finished
    marker = load_json(run.stage_dir("s") / MARKER)
    assert set(marker["files"]) == {"out.json"}  # checkpoints are not part of the checksums
    forced = Run.create(get_default_config(), root=tmp_path, force={"s"})
    forced.run_stage("s", "h", compute, lambda f: None)
    assert seen == [False, True, False]  # a forced stage starts empty


def test_digest_is_the_one_hash(tmp_path):
    from saeinverse import io

    assert digest is io.digest
    assert digest({"a": 1, "b": [2]}) == digest({"b": [2], "a": 1}) != digest({"a": 2, "b": [2]})
    assert len(digest("x")) == 16
