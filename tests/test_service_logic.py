"""The service's plain objects without Ray or HTTP: data-root policy, event folding,
status mapping, auth."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from jobs.config import from_dict
from jobs.errors import ConfigError
from jobs.pipeline_config import PipelineConfig
from service.auth import Authenticator
from service.data_policy import confine_data_paths, data_sources
from service.job_service import _changes, new_job_id, summarize_events
from service.launcher import DriverState
from service.schemas import JobStatus
from service.settings import ServiceSettings, TokenSpec, hash_token
from service.store import JobRow


def _cfg(harmful_path: str) -> PipelineConfig:
    return from_dict(PipelineConfig, {
        "prompts": {"harmful": [{"path": harmful_path, "format": "csv", "harmful": True}],
                    "benign": [{"path": "builtin:demo-benign-train", "format": "builtin"}]},
        "evaluate": {"enabled": True, "harmful": [{"path": "hf:org/set", "format": "auto", "harmful": True}]}})


def test_data_sources_are_found_with_their_key_paths():
    keys = [k for k, _ in data_sources(_cfg("x.csv"))]
    assert keys == ["prompts.harmful[0]", "prompts.benign[0]", "evaluate.harmful[0]"]


def test_paths_inside_the_roots_pass_and_become_absolute(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "h.csv").write_text("goal\nx\n")
    cfg = _cfg("sub/h.csv")
    confine_data_paths(cfg, [str(tmp_path / "elsewhere"), str(root)])
    assert cfg.prompts.harmful[0].path == str((root / "sub" / "h.csv").resolve())
    assert cfg.prompts.benign[0].path == "builtin:demo-benign-train" and cfg.evaluate.harmful[0].path == "hf:org/set"


@pytest.mark.parametrize("path, why", [
    ("../secret.csv", "outside the service's data roots"),
    ("/etc/passwd", "outside the service's data roots"),
    ("link.csv", "outside the service's data roots"),       # a symlink that points out
    ("missing.csv", "not found under the data roots"),
])
def test_paths_outside_the_roots_are_refused_with_the_key(tmp_path, path, why):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "secret.csv").write_text("goal\nx\n")
    (root / "link.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(ConfigError, match=why) as e:
        confine_data_paths(_cfg(path), [str(root)])
    assert str(e.value).startswith("prompts.harmful[0].path:")


def test_no_data_roots_means_builtin_sets_only(tmp_path):
    with pytest.raises(ConfigError, match="reads no files"):
        confine_data_paths(_cfg(str(tmp_path / "a.csv")), [])


def test_events_fold_into_stage_progress_metrics_and_end():
    events = [
        {"event": "job_start"}, {"event": "stage_skip", "stage": "decide", "reason": "complete"},
        {"event": "stage_start", "stage": "align"},
        {"event": "progress", "stage": "align", "done": 3, "total": 6, "unit": "steps"},
        {"event": "metrics", "stage": "align", "metrics": {"loss": 1.5}},
        {"event": "metrics", "stage": "align", "metrics": {"loss": 0.9}},
    ]
    s = summarize_events(events)
    assert s["stage"] == "align" and s["stages_done"] == ["decide"]
    assert s["progress"] == {"stage": "align", "done": 3, "total": 6, "unit": "steps"}
    assert s["metrics"] == {"align": {"loss": 0.9}} and s["end"] is None
    events += [{"event": "stage_failed", "stage": "align", "error": "DataError: bad"},
               {"event": "job_end", "status": "FAILED", "stage": "align", "error": "DataError: bad"}]
    s = summarize_events(events)
    assert s["end"]["status"] == "FAILED" and s["stage"] == "align"
    # a resumed run starts a new job_start: the failure is forgotten, finished stages recounted
    s = summarize_events(events + [{"event": "job_start"}, {"event": "stage_skip", "stage": "decide"}])
    assert s["end"] is None and s["stages_done"] == ["decide"] and s["stage"] is None
    # the service's attempt marker (POST .../resume) forgets it at once, before the new driver starts
    s = summarize_events(events + [{"event": "attempt", "attempt": 2}])
    assert s["end"] is None and s["stage"] is None and s["stages_done"] == []


def _row(**kw) -> JobRow:
    base = {"id": "j1", "owner": "a", "name": None, "idempotency_key": None, "status": "RUNNING", "config": {},
                "submission_id": "presafe-j1", "job_dir": "/x", "stage": "align", "summary": {}}
    return JobRow(**{**base, **kw})


def test_status_changes_follow_ray_and_the_log():
    fail = {"stage": "align", "stages_done": [], "progress": None, "metrics": {}, "artifacts": {},
            "end": {"status": "FAILED", "error": "DataError: bad row", "stage": "align", "report": None}}
    ch = _changes(_row(), dict(fail), DriverState(JobStatus.FAILED, "exit code 1"))
    assert ch["status"] == "FAILED" and ch["error"] == "stage align failed: DataError: bad row" and ch["ended_at"]
    # Ray lost the driver (cluster replaced) and the log never ended: FAILED, saying so
    lost = {**fail, "end": None}
    ch = _changes(_row(), dict(lost), DriverState(None, "the Ray cluster has no record of this job"))
    assert ch["status"] == "FAILED" and ch["error"].startswith("driver lost: the Ray cluster has no record")
    # the driver was killed mid-stage (no job_end in the log): FAILED, naming the stage
    killed = {**fail, "end": None}
    ch = _changes(_row(), dict(killed), DriverState(JobStatus.FAILED, "Job entrypoint command failed with exit code -9"))
    assert ch["status"] == "FAILED"
    assert ch["error"] == ("the driver exited during stage align without finishing: "
                           "Job entrypoint command failed with exit code -9")
    # the log ended SUCCEEDED before Ray forgot it: trust the log
    ok = {**fail, "end": {"status": "SUCCEEDED", "error": None, "stage": None, "report": "/x/report.md"}}
    assert _changes(_row(), dict(ok), DriverState(None, ""))["status"] == "SUCCEEDED"
    # nothing new: no write
    same = {"stage": "align", "stages_done": [], "progress": None, "metrics": {}, "artifacts": {}, "end": None}
    assert _changes(_row(summary={k: v for k, v in same.items() if k != "end"}), dict(same),
                    DriverState(JobStatus.RUNNING)) == {}


def test_each_attempt_of_a_job_has_its_own_ray_submission_id():
    from service.launcher import attempt_of, submission_id_for

    for job_id in ("j20261128-a1234567", "j1"):  # a hex part that starts with "a" is not an attempt
        assert [attempt_of(submission_id_for(job_id, n)) for n in (1, 2, 13)] == [1, 2, 13]
    assert submission_id_for("j1") == "presafe-j1" and submission_id_for("j1", 2) == "presafe-j1-attempt2"


def test_job_ids_are_valid_pipeline_job_ids():
    ids = {new_job_id() for _ in range(50)}
    assert len(ids) == 50
    for i in ids:
        from_dict(PipelineConfig, {"job_id": i, "prompts": {"harmful": [{"path": "builtin:demo-harmful-train",
                                                                           "format": "builtin"}]}})


def test_auth_names_the_problem():
    auth = Authenticator(ServiceSettings(storage_path="/tmp/x", tokens=[
        TokenSpec(name="ro", sha256=hash_token("t-ro"), scopes=["jobs:read"])]))
    assert auth.owner("Bearer t-ro", "jobs:read") == "ro"
    for header, code, text in [(None, 401, "missing bearer token"), ("Basic abc", 401, "malformed"),
                               ("Bearer t-other", 401, "unknown or revoked"), ("Bearer t-ro", 403, "lacks scope")]:
        with pytest.raises(HTTPException) as e:
            auth.owner(header, "jobs:write")
        assert e.value.status_code == code and text in e.value.detail
    open_clf = Authenticator(ServiceSettings(storage_path="/tmp/x", classify_open=True))
    assert open_clf.owner(None, "classify") == "anonymous"
    with pytest.raises(HTTPException):
        open_clf.owner(None, "jobs:read")


def test_settings_reject_unknown_keys_and_bad_hashes():
    with pytest.raises(ValueError, match="storage_pth"):
        ServiceSettings.model_validate({"storage_pth": "/x"})
    with pytest.raises(ValueError, match="sha256"):
        TokenSpec(name="a", sha256="not-a-hash")


def test_model_registry_caches_its_listing_but_finds_a_new_job_at_once(tmp_path):
    import json
    import time

    from service.classifiers import ModelRegistry

    def publish(job_id: str) -> None:
        folder = tmp_path / "jobs" / job_id / "classifier"
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(json.dumps({"threshold": 0.5, "metrics": {}}))

    registry = ModelRegistry(ServiceSettings(storage_path=str(tmp_path)), ttl_s=3600)
    publish("j1")
    assert registry.resolve("j1")[0] == "j1"
    publish("j2")
    assert [m.id for m in registry._listing().items] == ["j1"]  # the cached listing: no disk scan per request
    time.sleep(0.3)  # a miss re-lists, at most 4 times a second
    assert registry.resolve("j2") == ("j2", str(tmp_path / "jobs" / "j2" / "classifier"))  # a miss re-lists
    assert {m.id for m in registry.models().items} == {"j1", "j2"}
    with pytest.raises(Exception, match="model 'j3' not found"):
        registry.resolve("j3")
    with pytest.raises(Exception, match="no default classifier"):  # never the newest by itself
        registry.resolve(None)


def test_launcher_entrypoint_frees_the_driver_from_the_supervisors_one_thread():
    """Ray's job supervisor (an actor without CPUs) has OMP_NUM_THREADS=1, which the driver
    would inherit; the entrypoint unsets it unless the service's job_env sets it."""
    import shlex

    from service.launcher import RayJobLauncher

    class FakeClient:
        def submit_job(self, **kw):
            self.kw = kw

    for env, unset in (({"HF_HUB_OFFLINE": "1"}, True), ({"OMP_NUM_THREADS": "8"}, False)):
        launcher = RayJobLauncher("http://ray:8265", python="/venv/bin/python", env=env)
        launcher._client = FakeClient()
        launcher.submit("presafe-j1", "/srv/jobs/j1/request.yaml", {"PRESAFE_JOB_ID": "j1"})
        kw = launcher._client.kw
        words = shlex.split(kw["entrypoint"])
        assert words[-5:] == ["/venv/bin/python", "-m", "jobs.pipeline", "--config", "/srv/jobs/j1/request.yaml"]
        assert (words[:3] == ["env", "-u", "OMP_NUM_THREADS"]) is unset
        assert kw["submission_id"] == "presafe-j1" and kw["runtime_env"]["env_vars"] == {**env, "PRESAFE_JOB_ID": "j1"}
