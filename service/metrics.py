"""The service's Prometheus metrics, through `ray.serve.metrics` (Ray exports them on each
node's metrics port with the deployment and replica as tags; Ray prefixes names with `ray_`):

    presafe_jobs{status}                         gauge: jobs in the store per status
    presafe_job_queue_length                     gauge: QUEUED jobs waiting for admission
    presafe_classify_decisions{model, outcome}   counter: decisions served by /v1/classify
                                                 (outcome refuse | comply); the refuse rate
                                                 per model, and its drift, is what to watch
    presafe_classifier_load_seconds{model}       histogram: time to load a classifier into a replica

The job gauges are set by the scheduler pass (`JobService.schedule`, every
`queue.interval_s` and at once on a submit); every ingress replica sets them to the same
store counts, so aggregate them with max, not sum. `ServiceMetrics` is a plain object
over a backend with Counter / Gauge / Histogram classes: Ray's by default (they work
without a running Serve, recording nothing), a recording fake in tests.
"""

from __future__ import annotations

from pathlib import Path

from service.schemas import JobStatus

LOAD_SECONDS_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


class ServiceMetrics:
    def __init__(self, backend=None):
        if backend is None:
            from ray.serve import metrics as backend
        self.jobs = backend.Gauge("presafe_jobs", description="Jobs in the job store, per status.",
                                  tag_keys=("status",))
        self.queue_length = backend.Gauge("presafe_job_queue_length",
                                          description="Jobs QUEUED, waiting for the scheduler to admit them.")
        self.decisions = backend.Counter("presafe_classify_decisions",
                                         description="Decisions served by /v1/classify, per model and outcome.",
                                         tag_keys=("model", "outcome"))
        self.load_seconds = backend.Histogram("presafe_classifier_load_seconds",
                                              description="Seconds to load a classifier into a replica.",
                                              boundaries=LOAD_SECONDS_BOUNDARIES, tag_keys=("model",))

    def job_counts(self, counts: dict[str, int]) -> None:
        """Set the job gauges from the store's counts per status (absent statuses are 0)."""
        for status in JobStatus:
            self.jobs.set(counts.get(status.value, 0), tags={"status": status.value})
        self.queue_length.set(counts.get(JobStatus.QUEUED.value, 0))

    def classified(self, model: str, decisions) -> None:
        """Count one request's decisions (objects with a `.decision`) under its model id."""
        outcomes: dict[str, int] = {}
        for d in decisions:
            outcomes[d.decision] = outcomes.get(d.decision, 0) + 1
        for outcome, n in outcomes.items():
            self.decisions.inc(n, tags={"model": model, "outcome": outcome})

    def model_loaded(self, path: str, seconds: float) -> None:
        self.load_seconds.observe(seconds, tags={"model": model_tag(path)})


def model_tag(path: str) -> str:
    """A classifier folder as a short tag: a job's classifier (`.../jobs/<id>/classifier`)
    is its job id, the same id /v1/classify names it by; any other folder its name."""
    p = Path(path)
    return p.parent.name if p.parent.parent.name == "jobs" else p.name
