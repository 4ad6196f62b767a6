"""The service's Prometheus metrics, on the plain objects behind the routes (no Ray, no
Serve): a recording backend stands in for ray.serve.metrics."""

from __future__ import annotations

import json
from collections import defaultdict

from fastapi.testclient import TestClient

from service.api import create_api
from service.auth import Principal
from service.classifiers import ClassifierPool, ModelRegistry
from service.job_service import JobService
from service.metrics import ServiceMetrics, model_tag
from service.schemas import Decision, JobCreate, JobStatus
from service.settings import ServiceSettings, hash_token
from service.store import JobStore
from tests.test_service_sharing import FakeLauncher, smoke


class _Metric:
    def __init__(self, name, description="", tag_keys=(), boundaries=None):
        self.name, self.tag_keys = name, tuple(tag_keys)
        self.values: dict[tuple, float] = defaultdict(float)
        self.observed: dict[tuple, list[float]] = defaultdict(list)

    def _key(self, tags):
        tags = tags or {}
        assert set(tags) == set(self.tag_keys), (self.name, tags)  # Ray rejects missing or unknown tags
        return tuple(tags[k] for k in self.tag_keys)

    def inc(self, value=1.0, tags=None):
        self.values[self._key(tags)] += value

    def set(self, value, tags=None):
        self.values[self._key(tags)] = value

    def observe(self, value, tags=None):
        self.observed[self._key(tags)].append(value)


class FakeBackend:
    Counter = Gauge = Histogram = _Metric


def test_ray_serve_metrics_are_the_default_backend_and_work_without_serve():
    m = ServiceMetrics()  # ray.serve.metrics outside a replica and without ray.init: records nowhere, raises nothing
    m.job_counts({"QUEUED": 2})
    m.classified("m1", [Decision(decision="refuse", p_refuse=0.9)])
    m.model_loaded("/s/jobs/j1/classifier", 0.3)


def test_scheduler_pass_sets_job_gauges_by_status_and_queue_length(tmp_path):
    metrics = ServiceMetrics(FakeBackend)
    s = ServiceSettings.model_validate({"storage_path": str(tmp_path / "storage"),
                                        "queue": {"max_running_per_owner": 1}})
    launcher = FakeLauncher()
    jobs = JobService(s, JobStore(s.db_url), launcher, metrics=metrics)
    ids = [jobs.submit(JobCreate(config=smoke()), Principal("alice"))[0].id for _ in range(3)]
    jobs.schedule()
    assert metrics.queue_length.values[()] == 2
    assert metrics.jobs.values[("QUEUED",)] == 2 and metrics.jobs.values[("PENDING",)] == 1
    assert metrics.jobs.values[("SUCCEEDED",)] == 0  # every status is set, absent ones to 0
    jobs.schedule()  # Ray says the launched one runs
    assert metrics.jobs.values[("RUNNING",)] == 1 and metrics.jobs.values[("PENDING",)] == 0
    launcher.finish(ids[0])
    jobs.schedule()  # finished: the next one is admitted
    assert metrics.jobs.values[("SUCCEEDED",)] == 1 and metrics.queue_length.values[()] == 1
    jobs.cancel(ids[2], Principal("alice"))
    jobs.schedule()
    assert metrics.queue_length.values[()] == 0 and metrics.jobs.values[("CANCELLED",)] == 1
    assert sum(metrics.jobs.values[(st.value,)] for st in JobStatus) == 3


def test_classify_route_counts_decisions_by_model_and_outcome(tmp_path):
    metrics = ServiceMetrics(FakeBackend)
    folder = tmp_path / "clf"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"threshold": 0.5}))
    s = ServiceSettings.model_validate({"storage_path": str(tmp_path / "storage"), "model_dirs": {"m1": str(folder)},
                                        "tokens": [{"name": "alice", "sha256": hash_token("t-alice")}]})
    jobs = JobService(s, JobStore(s.db_url), FakeLauncher())

    async def classify(path, prompts, responses):
        assert path == str(folder)
        return [Decision(decision="refuse" if "bomb" in p else "comply", p_refuse=0.5) for p in prompts]

    async def ready():
        return {"store": "ok"}

    app = create_api(s, jobs, ModelRegistry(s, jobs.store), classify, ready, metrics=metrics)
    client = TestClient(app, headers={"Authorization": "Bearer t-alice"})
    items = [{"prompt": "make a bomb"}, {"prompt": "bake bread"}, {"prompt": "a bomb again"}]
    for _ in range(2):
        assert client.post("/v1/classify", json={"model": "m1", "items": items}).status_code == 200
    assert metrics.decisions.values == {("m1", "refuse"): 4, ("m1", "comply"): 2}
    assert client.post("/v1/classify", json={"model": "nope", "items": items}).status_code == 404
    assert sum(metrics.decisions.values.values()) == 6  # a refused request decides nothing


def test_classifier_pool_observes_each_load_once(tmp_path, monkeypatch):
    import service.classifiers as classifiers

    loads = []
    monkeypatch.setattr(classifiers.DecisionClassifier, "load", staticmethod(lambda path, device=None: loads.append(path) or object()))
    metrics = ServiceMetrics(FakeBackend)
    pool = ClassifierPool(capacity=1, metrics=metrics)
    job_clf = str(tmp_path / "jobs" / "j20260101-ab" / "classifier")
    pool.get(job_clf)
    pool.get(job_clf)  # kept: no second load
    pool.get(str(tmp_path / "registered"))  # evicts the first (capacity 1)
    pool.get(job_clf)
    assert len(loads) == 3
    assert len(metrics.load_seconds.observed[("j20260101-ab",)]) == 2
    assert len(metrics.load_seconds.observed[("registered",)]) == 1
    assert all(s >= 0 for v in metrics.load_seconds.observed.values() for s in v)
    assert model_tag(job_clf) == "j20260101-ab"
