"""Starts, watches and stops pipeline drivers through the Ray Jobs API.

The service never trains in its own process: each job is `python -m jobs.pipeline
--config <job_dir>/request.yaml`, submitted as a Ray job whose submission id is derived
from the presafe job id (`submission_id_for`), so a retried submit finds the job it
already started instead of starting a second one.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from service.schemas import JobStatus

_RAY_TO_PRESAFE = {"PENDING": JobStatus.PENDING, "RUNNING": JobStatus.RUNNING, "SUCCEEDED": JobStatus.SUCCEEDED,
                   "FAILED": JobStatus.FAILED, "STOPPED": JobStatus.CANCELLED}


def submission_id_for(job_id: str, attempt: int = 1) -> str:
    """The Ray submission id of a job's n-th attempt (a resume is a new attempt)."""
    return f"presafe-{job_id}" if attempt == 1 else f"presafe-{job_id}-attempt{attempt}"


def attempt_of(submission_id: str) -> int:
    m = re.search(r"-attempt(\d+)$", submission_id)
    return int(m.group(1)) if m else 1


@dataclass
class DriverState:
    status: JobStatus | None
    """None: Ray does not know the submission (the cluster was replaced since)."""
    message: str = ""


class RayJobLauncher:
    """A thin shell over `ray.job_submission.JobSubmissionClient`."""

    def __init__(self, address: str | None, python: str = "python", env: dict[str, str] | None = None,
                 working_dir: str | None = None):
        self.address, self.python, self.env, self.working_dir = address, python, dict(env or {}), working_dir
        self._client = None

    @property
    def client(self):
        # Made on first use: the dashboard may come up after the service's replicas.
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        return self._client

    def submit(self, submission_id: str, config_path: str, extra_env: dict[str, str] | None = None,
               num_cpus: float = 0.0) -> None:
        """Start the driver; it reserves `num_cpus` (entrypoint_num_cpus) so Ray does not
        place more drivers and workers on a node than it has cores for."""
        runtime_env: dict = {"env_vars": {**self.env, **(extra_env or {})}}
        if self.working_dir:
            runtime_env["working_dir"] = self.working_dir
        entrypoint = f"{shlex.quote(self.python)} -m jobs.pipeline --config {shlex.quote(config_path)}"
        if "OMP_NUM_THREADS" not in runtime_env["env_vars"]:
            # Ray runs the entrypoint under its job supervisor, an actor without CPUs, whose
            # OMP_NUM_THREADS=1 the driver would inherit: torch in the driver (generation,
            # in-process training) would use one core. Unset it for the driver alone (Ray
            # Train workers and actors still get their own from their CPU reservations).
            entrypoint = f"env -u OMP_NUM_THREADS {entrypoint}"
        try:
            self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id, runtime_env=runtime_env,
                                   entrypoint_num_cpus=num_cpus, metadata={"presafe": "pipeline"})
        except RuntimeError as e:
            # A retried submit of a job that is already there: not an error, not a second job.
            if "already exists" not in str(e):
                raise

    def state(self, submission_id: str) -> DriverState:
        try:
            info = self.client.get_job_info(submission_id)
        except RuntimeError as e:
            if "does not exist" in str(e) or "404" in str(e):
                return DriverState(None, "the Ray cluster has no record of this job")
            raise
        return DriverState(_RAY_TO_PRESAFE[str(info.status.value)], info.message or "")

    def resources(self) -> tuple[dict[str, float], dict[str, float]] | None:
        """(total, available) resources of the Ray cluster this process is connected to
        (the service's own; None when not connected)."""
        import ray

        if not ray.is_initialized():
            return None
        return ray.cluster_resources(), ray.available_resources()

    def logs(self, submission_id: str) -> str:
        return self.client.get_job_logs(submission_id)

    def stop(self, submission_id: str) -> bool:
        return self.client.stop_job(submission_id)
