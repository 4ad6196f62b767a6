"""A service many users share, as plain objects (no Ray, no Serve): ownership, the job
queue and its scheduler, limits, path confinement, the submit race, token reload, the
body limit and readiness. The same behaviour over real HTTP: tests/test_service.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from fastapi import HTTPException
from fastapi.testclient import TestClient

from jobs.config import from_dict
from jobs.errors import ConfigError
from jobs.pipeline_config import PipelineConfig
from service.api import create_api
from service.auth import Authenticator, Principal
from service.classifiers import ModelRegistry, UnknownModel
from service.job_service import JobConflict, JobService
from service.launcher import DriverState
from service.limits import check_limits, demand
from service.path_policy import confine_config
from service.schemas import JobCreate, JobStatus
from service.settings import JobLimits, PathPolicy, ServiceSettings, hash_token
from service.store import JobNotFound, JobStore

ROOT = Path(__file__).resolve().parents[1]
ALICE, BOB, ADMIN = Principal("alice"), Principal("bob"), Principal("root", admin=True)


def smoke() -> dict:
    return yaml.safe_load((ROOT / "jobs/configs/smoke.yaml").read_text())


class FakeLauncher:
    """The Ray Jobs API as a dict: submit makes a job RUNNING; tests set states by hand."""

    def __init__(self):
        self.states: dict[str, DriverState] = {}
        self.submitted: list[tuple[str, float]] = []
        self.stopped: list[str] = []
        self.res: tuple[dict, dict] | None = None

    def submit(self, sid, config_path, env=None, num_cpus=0.0):
        assert Path(config_path).is_file()
        self.submitted.append((sid, num_cpus))
        self.states[sid] = DriverState(JobStatus.RUNNING)

    def state(self, sid):
        return self.states.get(sid, DriverState(None, "the Ray cluster has no record of this job"))

    def stop(self, sid):
        self.stopped.append(sid)
        if sid in self.states:
            self.states[sid] = DriverState(JobStatus.CANCELLED)
        return True

    def resources(self):
        return self.res

    def logs(self, sid):
        return "line\n"

    def finish(self, job_id: str, status=JobStatus.SUCCEEDED):
        self.states[f"presafe-{job_id}"] = DriverState(status)


def make(tmp_path, **settings) -> tuple[JobService, FakeLauncher]:
    s = ServiceSettings.model_validate({"storage_path": str(tmp_path / "storage"), **settings})
    launcher = FakeLauncher()
    return JobService(s, JobStore(s.db_url), launcher), launcher


def submit(jobs: JobService, who: Principal = ALICE, **kw):
    record, created = jobs.submit(JobCreate(config=smoke(), **kw), who)
    assert created
    return record


# -- ownership ------------------------------------------------------------------------------

def test_jobs_belong_to_their_principal_and_admins_see_all(tmp_path):
    jobs, launcher = make(tmp_path)
    a, b = submit(jobs, ALICE), submit(jobs, BOB)
    assert a.owner == "alice" and a.status == JobStatus.QUEUED
    assert jobs.get(a.id, ALICE).id == a.id
    for action in (lambda: jobs.get(a.id, BOB), lambda: jobs.cancel(a.id, BOB), lambda: jobs.resume(a.id, BOB),
                   lambda: jobs.logs(a.id, 10, BOB), lambda: jobs.report_dir(a.id, BOB)):
        with pytest.raises(JobNotFound, match=f"no job '{a.id}'"):  # the same words as a job that does not exist
            action()
    assert [r.id for r in jobs.list(None, 50, 0, BOB).items] == [b.id]
    assert jobs.list(None, 50, 0, BOB).total == 1
    assert {r.id for r in jobs.list(None, 50, 0, ADMIN).items} == {a.id, b.id}
    assert jobs.cancel(a.id, ADMIN).status == JobStatus.CANCELLED
    assert launcher.submitted == []  # cancelled while queued: never reached Ray


def test_idempotency_key_same_body_same_job_other_body_409(tmp_path):
    jobs, _ = make(tmp_path)
    first = submit(jobs, idempotency_key="k")
    again, created = jobs.submit(JobCreate(config=smoke(), idempotency_key="k"), ALICE)
    assert not created and again.id == first.id
    other = smoke()
    other["align"]["train"]["max_steps"] = 5
    with pytest.raises(JobConflict, match="different request body"):
        jobs.submit(JobCreate(config=other, idempotency_key="k"), ALICE)
    # keys are per principal: bob's "k" is his own job
    assert jobs.submit(JobCreate(config=other, idempotency_key="k"), BOB)[0].id != first.id


def test_priority_is_capped_by_the_token(tmp_path):
    jobs, _ = make(tmp_path)
    with pytest.raises(ConfigError, match="over this token's maximum of 0") as e:
        jobs.submit(JobCreate(config=smoke(), priority=3), ALICE)
    assert e.value.key == "priority"
    assert submit(jobs, Principal("vip", max_priority=5), priority=5).priority == 5


# -- the queue ------------------------------------------------------------------------------

def test_quota_admits_two_then_fifo_as_jobs_finish(tmp_path):
    jobs, launcher = make(tmp_path, queue={"max_running_per_owner": 2, "driver_num_cpus": 0.25})
    ids = [submit(jobs).id for _ in range(5)]
    other = submit(jobs, BOB).id
    assert jobs.schedule()["launched"] == 3  # alice's first two and bob's one
    assert [s for s, _ in launcher.submitted] == [f"presafe-{i}" for i in (ids[0], ids[1], other)]
    assert all(cpus == 0.25 for _, cpus in launcher.submitted)  # the driver reserves its CPU
    q = jobs.queue(ALICE)
    assert [e.id for e in q.items] == ids[2:] and [e.position for e in q.items] == [1, 2, 3] and q.total == 3
    assert "owner 'alice' has 2 job(s) running; its quota is 2" in q.items[0].reason
    assert jobs.get(ids[2], ALICE).queue_reason == q.items[0].reason
    assert jobs.queue(BOB).items == [] and jobs.queue(BOB).total == 3
    launcher.finish(ids[0])
    jobs.schedule()
    assert launcher.submitted[-1][0] == f"presafe-{ids[2]}"
    assert jobs.get(ids[0], ALICE).status == JobStatus.SUCCEEDED
    for i in ids[1:3]:
        launcher.finish(i)
    jobs.schedule()
    for i in ids[3:]:
        launcher.finish(i)
    jobs.schedule()
    assert [s for s, _ in launcher.submitted][3:] == [f"presafe-{i}" for i in ids[2:]]  # FIFO
    assert all(jobs.get(i, ALICE).status == JobStatus.SUCCEEDED for i in ids)


def test_priorities_first_fifo_within_one_and_token_quota(tmp_path):
    jobs, launcher = make(tmp_path, queue={"max_running_per_owner": 1})
    jobs.quota = lambda owner: 1
    vip = Principal("alice", max_priority=9)
    low = submit(jobs, vip).id
    high1, high2 = submit(jobs, vip, priority=9).id, submit(jobs, vip, priority=9).id
    assert [e.id for e in jobs.queue(vip).items] == [high1, high2, low]
    jobs.schedule()
    assert [s for s, _ in launcher.submitted] == [f"presafe-{high1}"]


def test_a_pass_records_all_its_admissions_before_the_first_ray_submit(tmp_path):
    """A submit to Ray takes a while: the pass claims every job it admits first, so the
    launch order in the records is the one decided from its single read of the queue."""
    jobs, launcher = make(tmp_path, queue={"max_running_per_owner": 3})
    ids = [submit(jobs).id for _ in range(3)]
    seen = []
    jobs.before_launch = lambda row: seen.append([jobs.store.get(i).status for i in ids])
    assert jobs.schedule()["launched"] == 3
    assert seen[0] == [JobStatus.PENDING.value] * 3  # all claimed when the first submit starts
    assert [s for s, _ in launcher.submitted] == [f"presafe-{i}" for i in ids]
    stamps = [jobs.store.get(i).launched_at for i in ids]
    assert stamps == sorted(stamps)


def test_resources_hold_the_queue_in_order(tmp_path):
    jobs, launcher = make(tmp_path, queue={"max_running_per_owner": 10, "driver_num_cpus": 1.0})
    launcher.res = ({"CPU": 2.0}, {"CPU": 1.5})  # a serve replica holds 0.5
    big = smoke()
    big["align"]["scale"] = {"num_workers": 2, "cpus_per_worker": 1.0}
    first, blocked, small = submit(jobs).id, jobs.submit(JobCreate(config=big), ALICE)[0].id, submit(jobs).id
    assert demand(from_dict(PipelineConfig, big), 1.0) == {"CPU": 3.0}
    jobs.schedule()
    assert [s for s, _ in launcher.submitted] == [f"presafe-{first}"]
    q = {e.id: e.reason for e in jobs.queue(ALICE).items}
    assert q[blocked] == "waiting for cluster resources: CPU 3 (0.5 free)"
    assert q[small] == f"behind job {blocked}, which waits for cluster resources"  # no overtaking
    launcher.finish(first)
    launcher.res = ({"CPU": 4.0}, {"CPU": 3.5})  # the autoscaler added a node
    jobs.schedule()
    assert [s for s, _ in launcher.submitted][1:] == [f"presafe-{blocked}"]  # small waits: 3 of 3.5 taken


def test_gpus_the_cluster_lacks_go_to_the_autoscaler_one_job_at_a_time(tmp_path):
    jobs, launcher = make(tmp_path, queue={"max_running_per_owner": 10, "driver_num_cpus": 0})
    launcher.res = ({"CPU": 8.0}, {"CPU": 8.0})  # no GPU node up yet
    gpu = smoke()
    gpu["align"]["scale"] = {"num_workers": 4, "use_gpu": True, "cpus_per_worker": 4.0}  # 16 CPUs: GPU nodes bring them
    a, b = (jobs.submit(JobCreate(config=gpu), ALICE)[0].id for _ in range(2))
    jobs.schedule()
    assert [s for s, _ in launcher.submitted] == [f"presafe-{a}"]
    assert "GPU 4 (none in the cluster yet" in jobs.queue(ALICE).items[0].reason


def test_the_queue_survives_a_restart(tmp_path):
    jobs, launcher = make(tmp_path, queue={"max_running_per_owner": 1})
    ids = [submit(jobs).id for _ in range(3)]
    jobs.schedule()
    launcher.finish(ids[0])
    again = JobService(jobs.settings, JobStore(jobs.settings.db_url), launcher)  # a new replica, same database
    assert [e.id for e in again.queue(ADMIN).items] == ids[1:]
    again.schedule()
    assert launcher.submitted[-1][0] == f"presafe-{ids[1]}"


def test_a_launch_happens_once_even_with_two_schedulers(tmp_path):
    jobs, launcher = make(tmp_path)
    job = submit(jobs)
    other = JobService(jobs.settings, JobStore(jobs.settings.db_url), launcher)
    row = jobs.store.get(job.id)
    assert jobs._launch(row) and not other._launch(row)
    assert len(launcher.submitted) == 1


def test_cancel_queued_then_resume_requeues_with_the_unused_submission(tmp_path):
    jobs, launcher = make(tmp_path)
    job = submit(jobs)
    assert jobs.cancel(job.id, ALICE).error == "cancelled while queued"
    back = jobs.resume(job.id, ALICE)
    assert back.status == JobStatus.QUEUED and back.submission_id == f"presafe-{job.id}" and back.error is None
    jobs.schedule()
    assert launcher.submitted == [(f"presafe-{job.id}", 1.0)]
    launcher.finish(job.id, JobStatus.FAILED)
    assert jobs.get(job.id, ALICE).status == JobStatus.FAILED
    assert jobs.resume(job.id, ALICE).submission_id == f"presafe-{job.id}-attempt2"  # it reached Ray: a new one


def test_deadline_stops_the_job_and_records_why(tmp_path):
    jobs, launcher = make(tmp_path, job_limits={"max_wall_clock_s": 60})
    job = submit(jobs)
    jobs.schedule()
    jobs.store.update(job.id, launched_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61))
    assert jobs.schedule()["stopped"] == 1
    rec = jobs.get(job.id, ALICE)
    assert rec.status == JobStatus.FAILED and launcher.stopped == [f"presafe-{job.id}"]
    assert "wall-clock limit of 60 s (job_limits.max_wall_clock_s)" in rec.error


# -- the submit race -------------------------------------------------------------------------

def test_a_read_between_record_and_launch_is_pending_never_failed(tmp_path):
    jobs, launcher = make(tmp_path)
    job = submit(jobs)
    seen = []
    jobs.before_launch = lambda row: seen.append(jobs.get(row.id, ALICE))  # Ray does not know it yet
    jobs.schedule()
    assert [r.status for r in seen] == [JobStatus.PENDING] and seen[0].error is None
    assert jobs.get(job.id, ALICE).status == JobStatus.RUNNING


def test_a_record_called_lost_is_corrected_when_ray_reports_the_job(tmp_path):
    jobs, launcher = make(tmp_path, queue={"launch_grace_s": 0})
    job = submit(jobs)
    jobs.schedule()
    sid = f"presafe-{job.id}"
    state = launcher.states.pop(sid)  # Ray's view is missing for a moment
    lost = jobs.get(job.id, ALICE)
    assert lost.status == JobStatus.FAILED and lost.error.startswith("driver lost")
    launcher.states[sid] = state
    back = jobs.get(job.id, ALICE)
    assert back.status == JobStatus.RUNNING and back.error is None and back.ended_at is None
    assert jobs.cancel(job.id, ALICE).status == JobStatus.CANCELLED and launcher.stopped == [sid]


def test_a_job_claimed_by_a_replica_that_died_before_the_submit_is_submitted_again(tmp_path):
    jobs, launcher = make(tmp_path)
    job = submit(jobs)
    jobs.store.transition(job.id, ("QUEUED",), status="PENDING",  # claimed 10 s ago, then the process died
                          launched_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10))
    assert jobs.get(job.id, ALICE).status == JobStatus.PENDING  # within the grace period
    jobs.schedule()
    assert launcher.submitted == [(f"presafe-{job.id}", 1.0)] and jobs.get(job.id, ALICE).status == JobStatus.RUNNING
    jobs.schedule()
    assert len(launcher.submitted) == 1


# -- limits and paths -----------------------------------------------------------------------

@pytest.mark.parametrize("key, value, limit", [
    ("align.train.max_steps", 10**12, "max_steps"),
    ("align.scale.num_workers", 10000, "max_workers"),
    ("decide.num_actors", 17, "max_workers"),
    ("evaluate.max_new_tokens", 100_000, "max_new_tokens"),
    ("seeds", list(range(6)), "max_seeds"),
    ("align.sweep.weight", [0.0, 0.1, 0.2, 0.3, 0.4], "max_sweep_points"),
])
def test_over_a_limit_names_the_key_and_the_limit(key, value, limit):
    cfg = smoke()
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    if key == "align.sweep.weight":
        cfg["align"]["sweep"]["layers"] = ["early", "middle", "late", "4"]
    limits = JobLimits(max_sweep_points=16)
    with pytest.raises(ConfigError, match=rf"over this service's limit of .* \(job_limits.{limit}\)") as e:
        check_limits(from_dict(PipelineConfig, cfg), limits)
    assert e.value.key == (key if key != "align.sweep.weight" else "align.sweep")


def test_gpu_and_sample_limits():
    cfg = smoke()
    cfg["align"]["scale"] = {"num_workers": 4, "use_gpu": True}
    with pytest.raises(ConfigError, match="job_limits.max_gpus"):
        check_limits(from_dict(PipelineConfig, cfg), JobLimits(max_gpus=2))
    cfg = smoke()
    cfg["evaluate"]["decodings"][1]["samples"] = 64
    with pytest.raises(ConfigError, match=r"evaluate.decodings\[1\].samples: 64"):
        check_limits(from_dict(PipelineConfig, cfg), JobLimits())


def _confine(cfg: dict, policy: dict, tmp_path, data_roots=()) -> PipelineConfig:
    c = from_dict(PipelineConfig, {**cfg, "storage_path": str(tmp_path / "s"), "job_id": "j1"})
    confine_config(c, list(data_roots), PathPolicy.model_validate(policy))
    return c


@pytest.mark.parametrize("key, value", [
    ("model", "/etc"), ("model", "../../models/x"), ("model", "evil-org/backdoor"),
    ("decide.safe_model", "/tmp"), ("signals.train.model.backbone", "someone/else"),
    # names no file system holds: a ConfigError, never a 500 (found by the OpenAPI fuzz)
    ("model", "~nosuchuser/models"), ("model", "models/a\x00b"), ("model", "/" + "a" * 5000),
])
def test_model_paths_are_confined(tmp_path, key, value):
    cfg = smoke()
    node = cfg
    *parents, last = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    with pytest.raises(ConfigError, match="not an allowed model") as e:
        _confine(cfg, {"hub_models": ["deepseek-ai/*"]}, tmp_path)
    assert e.value.key == key


def test_allowed_models_pass_and_local_ones_become_absolute(tmp_path):
    root = tmp_path / "models"
    (root / "mine").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    cfg = smoke()
    cfg["model"] = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    cfg["decide"]["safe_model"] = "mine"
    cfg["evaluate"]["judges"] = [{"kind": "guard_model", "path": "mine", "preset": "llama_guard_3"},
                                 {"kind": "classifier", "path": "signals"}]
    c = _confine(cfg, {"hub_models": ["deepseek-ai/*"], "model_roots": [str(root)]}, tmp_path)
    assert c.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" and c.decide.safe_model == str(root / "mine")
    assert c.evaluate.judges[0].path == str(root / "mine") and c.evaluate.judges[1].path == "signals"
    cfg["decide"]["safe_model"] = "escape"  # a symlink out of the root
    with pytest.raises(ConfigError, match="decide.safe_model"):
        _confine(cfg, {"hub_models": ["deepseek-ai/*"], "model_roots": [str(root)]}, tmp_path)
    cfg = smoke()
    del cfg["signals"]["train"]
    cfg["signals"]["classifier"] = "runs/quickstart/classifier"
    with pytest.raises(ConfigError, match="signals.classifier"):
        _confine(cfg, {}, tmp_path)


def test_hub_datasets_need_the_allow_list(tmp_path):
    cfg = smoke()
    cfg["prompts"]["harmful"] = [{"path": "hf:walledai/AdvBench", "format": "advbench"}]
    with pytest.raises(ConfigError, match="hub dataset is not allowed") as e:
        _confine(cfg, {}, tmp_path)
    assert e.value.key == "prompts.harmful[0].path"
    _confine(cfg, {"hub_datasets": ["walledai/*"]}, tmp_path)


@pytest.mark.parametrize("path", ["~nosuchuser/x.jsonl", "a\x00b.jsonl", "x" * 5000 + ".jsonl"])
def test_unusable_data_paths_are_a_config_error(tmp_path, path):
    cfg = smoke()
    cfg["prompts"]["harmful"] = [{"path": path, "format": "advbench"}]
    with pytest.raises(ConfigError) as e:
        _confine(cfg, {}, tmp_path, data_roots=[str(tmp_path)])
    assert e.value.key == "prompts.harmful[0].path"


@pytest.mark.parametrize("value, ok", [
    ("ckpt", True),
    ("s3://team-bucket/presafe/run1", True),
    ("s3://team-bucket/presafe/run1?endpoint_override=evil.example:9000", False),
    ("s3://team-bucket/other", False),
    ("s3://team-bucket/presafe/../other", False),
    ("gs://elsewhere/x", False),
    ("/tmp/anywhere", False),
    ("../../x", False),
    ("/tmp/a\x00b", False),
])
def test_checkpoint_storage_is_the_job_folder_or_allow_listed(tmp_path, value, ok):
    cfg = smoke()
    cfg["align"]["scale"] = {"storage_path": value}
    policy = {"storage_uris": ["s3://team-bucket/presafe"]}
    if ok:
        c = _confine(cfg, policy, tmp_path)
        if value == "ckpt":
            assert c.align.scale.storage_path == str(tmp_path / "s" / "jobs" / "j1" / "ckpt")
    else:
        with pytest.raises(ConfigError, match="align.scale.storage_path") as e:
            _confine(cfg, policy, tmp_path)
        assert e.value.key == "align.scale.storage_path"


@pytest.mark.parametrize("ds, key", [
    ({"tensorboard": {"enabled": True, "output_path": "/tmp/x"}}, "tensorboard"),
    ({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "/"}}},
     "zero_optimization.offload_param.nvme_path"),
    ({"wandb": {"enabled": True, "project": "p"}}, "wandb"),
])
def test_deepspeed_keys_that_write_or_reach_out_need_the_operator(tmp_path, ds, key):
    cfg = smoke()
    cfg["align"]["scale"] = {"deepspeed": ds}
    with pytest.raises(ConfigError) as e:
        _confine(cfg, {}, tmp_path)
    assert e.value.key == f"align.scale.deepspeed.{key}"
    _confine(cfg, {"deepspeed_keys": [key.split(".")[0]]}, tmp_path)
    cfg["align"]["scale"] = {"deepspeed": {"zero_optimization": {"stage": 2}, "gradient_clipping": 1.0}}
    _confine(cfg, {}, tmp_path)


def test_eval_adapters_and_endpoints_are_confined(tmp_path):
    root = tmp_path / "models"
    (root / "mine").mkdir(parents=True)
    base = {"kind": "eval", "storage_path": str(tmp_path), "job_id": "e", "model": "embedded:tiny-random-lm",
            "evaluate": {"enabled": True, "judges": [{"kind": "string_match"}],
                         "harmful": [{"path": "builtin:demo-harmful-heldout", "format": "builtin"}]}}
    policy = PathPolicy(model_roots=[str(root)], endpoints=["http://vllm.internal:8000/v1"])
    cfg = from_dict(PipelineConfig, {**base, "evaluate": {**base["evaluate"], "adapters": ["mine"]}})
    confine_config(cfg, [], policy)
    assert cfg.evaluate.adapters == [str((root / "mine").resolve())]
    for adapters in (["/etc"], ["../../x"]):
        cfg = from_dict(PipelineConfig, {**base, "evaluate": {**base["evaluate"], "adapters": adapters}})
        with pytest.raises(ConfigError) as e:
            confine_config(cfg, [], policy)
        assert e.value.key == "evaluate.adapters[0]"
    ok = {"url": "http://vllm.internal:8000/v1", "model": "m"}
    cfg = from_dict(PipelineConfig, {**base, "evaluate": {**base["evaluate"], "endpoint": ok}})
    confine_config(cfg, [], policy)
    for url in ("http://169.254.169.254/latest", "http://vllm.internal:8000/v1/../../admin", "http://evil:8000/v1"):
        cfg = from_dict(PipelineConfig, {**base, "evaluate": {**base["evaluate"], "endpoint": {**ok, "url": url}}})
        with pytest.raises(ConfigError, match="is not an allowed endpoint") as e:
            confine_config(cfg, [], policy)
        assert e.value.key == "evaluate.endpoint.url"


def test_tracking_uri_only_from_the_operators_list(tmp_path):
    cfg = smoke()
    _confine({**cfg, "tracking": {"uri": ""}}, {}, tmp_path)  # the job folder's own store
    for uri in ("file:/etc/presafe", "http://attacker.example:5000"):
        with pytest.raises(ConfigError, match="not one of this service's tracking URIs") as e:
            _confine({**cfg, "tracking": {"uri": uri}}, {}, tmp_path)
        assert e.value.key == "tracking.uri"
    _confine({**cfg, "tracking": {"uri": "http://mlflow.internal:5000"}},
             {"tracking_uris": ["http://mlflow.internal:5000"]}, tmp_path)


def test_every_path_like_config_key_has_a_rule():
    """A new path-like key in the job config must get a rule in service.path_policy (or be
    added here with why it is safe): this lists every string field whose name says path."""
    import dataclasses
    import re
    import typing

    seen = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kinds = [hints[f.name], *typing.get_args(hints[f.name])]
            kinds += [b for a in kinds for b in typing.get_args(a)]
            nested = [k for k in kinds if dataclasses.is_dataclass(k)]
            for k in nested:
                walk(k, f"{prefix}{f.name}.")
            if not nested and str in kinds and re.search(r"path|dir|model|classifier|backbone|file|uri|url|adapter", f.name):
                seen.append(prefix + f.name)

    walk(PipelineConfig, "")
    ruled = {
        "storage_path", "model", "decide.safe_model", "signals.classifier", "signals.train.model.backbone",
        "evaluate.judges.path", "evaluate.adapters",  # service.path_policy.model_keys
        "evaluate.endpoint.url",  # confine_endpoint: paths.endpoints
        "evaluate.endpoint.model",  # a name the endpoint serves, sent in the request body: no file, no host
        "align.scale.storage_path", "signals.train.scale.storage_path",  # confine_storage
        "signals.train.output_dir",  # replaced by the pipeline with <job_dir>/classifier
        "tracking.uri",  # paths.tracking_uris
        *(f"{s}.path" for s in ("prompts.harmful", "prompts.benign", "signals.train.data.sources", "targets.refusal_source",
                                "signals.train.data.hard_negatives",
                                "signals.train.data.validation", "signals.train.data.test", "evaluate.harmful",
                                "evaluate.benign", "evaluate.reasoning")),  # data_policy
    }
    assert set(seen) <= ruled, sorted(set(seen) - ruled)


# -- tokens, body limit, readiness, classifiers -----------------------------------------------

def test_tokens_file_changes_apply_without_a_restart(tmp_path):
    f = tmp_path / "tokens.yaml"
    f.write_text(yaml.safe_dump([{"name": "a", "sha256": hash_token("t-a")}, {"name": "b", "sha256": hash_token("t-b")}]))
    auth = Authenticator(ServiceSettings(storage_path=str(tmp_path), tokens_file=str(f)))
    assert auth.owner("Bearer t-a", "jobs:read") == "a"
    f.write_text(yaml.safe_dump([{"name": "b", "sha256": hash_token("t-b"), "scopes": ["admin"]}]))
    with pytest.raises(HTTPException, match="unknown or revoked"):
        auth.owner("Bearer t-a", "jobs:read")
    assert auth.principal("Bearer t-b", "jobs:write").admin  # admin implies every scope
    f.write_text("- {name: b, sha256: nope}\n")  # broken: fail closed
    with pytest.raises(HTTPException, match="unknown or revoked"):
        auth.owner("Bearer t-b", "jobs:read")


def _api(tmp_path, ready=None, **settings):
    jobs, launcher = make(tmp_path, tokens=[{"name": "alice", "sha256": hash_token("t-alice")}], **settings)

    async def classify(path, prompts, responses):
        return []

    async def ready_fn():
        return ready or {"store": "ok"}

    app = create_api(jobs.settings, jobs, ModelRegistry(jobs.settings, jobs.store), classify, ready_fn)
    return TestClient(app, headers={"Authorization": "Bearer t-alice"}), jobs


def test_body_limit_counts_bytes_read_chunked_or_not(tmp_path):
    client, jobs = _api(tmp_path, limits={"request_max_bytes": 100_000})

    def chunks():
        for _ in range(100):
            yield b" " * 100_000  # 10 MB, no Content-Length

    r = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit of 100000 bytes" in r.json()["detail"]
    r = client.post("/v1/jobs", json={"config": smoke()})
    assert r.status_code == 201 and r.json()["status"] == "QUEUED"


def test_pagination_is_bounded_and_readyz_hides_errors(tmp_path):
    client, _ = _api(tmp_path, ready={"store": "error: OperationalError: password for db is hunter2"})
    for params in ({"offset": 2**64}, {"offset": 10**7}, {"limit": 10**30}):
        r = client.get("/v1/jobs", params=params)
        assert r.status_code == 422, (params, r.text)
    r = client.get("/v1/readyz", headers={"Authorization": ""})
    assert r.status_code == 503 and r.json()["checks"] == {"store": "error"} and "hunter2" not in r.text
    r = client.get("/v1/queue")
    assert r.status_code == 200 and r.json() == {"items": [], "total": 0}


def test_classifiers_belong_to_their_owner_until_promoted(tmp_path):
    jobs, _ = make(tmp_path)
    a = submit(jobs, ALICE)
    folder = Path(a.job_dir) / "classifier"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"threshold": 0.5}))
    registry = ModelRegistry(jobs.settings, jobs.store, ttl_s=0)
    assert [m.id for m in registry.models(ALICE).items] == [a.id] and registry.models(BOB).items == []
    assert registry.resolve(a.id, ALICE)[0] == a.id
    with pytest.raises(UnknownModel, match="not found"):
        registry.resolve(a.id, BOB)
    assert registry.models(ALICE).default is None  # the newest job's classifier is nobody's default
    p = registry.promote(a.id, "root")
    assert p.promoted_by == "root" and p.model == a.id
    assert registry.resolve(None, BOB) == (a.id, str(folder))
    assert registry.models(BOB).items[0].promoted and registry.models(BOB).default == a.id


def test_an_older_database_gets_the_queue_columns(tmp_path):
    import sqlite3

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE jobs (id VARCHAR PRIMARY KEY, owner VARCHAR(64), name VARCHAR(200), "
                "idempotency_key VARCHAR(200), status VARCHAR NOT NULL, config JSON NOT NULL, submission_id VARCHAR "
                "NOT NULL, job_dir TEXT NOT NULL, stage VARCHAR, error TEXT, summary JSON NOT NULL, created_at "
                "DATETIME NOT NULL, updated_at DATETIME NOT NULL, started_at DATETIME, ended_at DATETIME)")
    con.execute("INSERT INTO jobs VALUES ('j1', 'a', NULL, NULL, 'SUCCEEDED', '{}', 'presafe-j1', '/x', NULL, NULL, "
                "'{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00', NULL, NULL)")
    con.commit()
    con.close()
    store = JobStore(f"sqlite:///{db}")
    row = store.get("j1")
    assert row.priority == 0 and row.request_sha256 is None and row.launched_at is None
    assert store.queued() == [] and store.promotions() == []
