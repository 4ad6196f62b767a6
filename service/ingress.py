"""The ingress deployment: serves `service.api.create_api` over HTTP.

It owns the job store and the Ray job launcher (plain objects) and talks to the
classifier deployment by handle. On start it re-syncs every unfinished job's record
with Ray, so a restarted service catches up with drivers that ran on without it, and
starts the scheduler: a thread that runs `JobService.schedule()` every
`queue.interval_s` seconds, or at once when a job is queued, so the queue (in the
store) moves on after a restart too. Each pass also sets the job gauges of
`service.metrics`; /v1/classify counts its decisions there. /v1/jobs/{id}/serve deploys a
job's chat app as its own Serve application on this cluster (service.chat_serving).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from ray import serve
from ray.serve.handle import DeploymentHandle

from jobs.errors import PresafeError
from service.api import create_api
from service.auth import Authenticator
from service.chat_serving import ChatServing, RayChatDeployer
from service.classifiers import ClassifierUnavailable, ModelRegistry
from service.job_service import JobService
from service.launcher import RayJobLauncher
from service.metrics import ServiceMetrics
from service.schemas import Decision
from service.settings import ServiceSettings
from service.store import JobStore

log = logging.getLogger("presafe.service")
CLASSIFY_TIMEOUT_S = 30.0


# On the head node (Ray's node:__internal_head__ resource): the dashboard's Jobs API, which
# the service submits jobs to, listens on the head's loopback only (docs/scaling.md).
@serve.deployment(ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}},
                  max_ongoing_requests=200, health_check_period_s=10)
@serve.ingress()
class Ingress:
    def __init__(self, classifier: DeploymentHandle, settings: dict):
        self.settings = ServiceSettings.model_validate(settings)
        self.store = JobStore(self.settings.db_url)
        launcher = RayJobLauncher(self.settings.ray_address, self.settings.job_entrypoint_python,
                                  self.settings.job_env, self.settings.job_working_dir)
        self.auth = Authenticator(self.settings)
        self._wake, self._stop = threading.Event(), threading.Event()
        self.metrics = ServiceMetrics()
        self.jobs = JobService(self.settings, self.store, launcher, quota=self._quota, wake=self._wake.set,
                               metrics=self.metrics)
        self.classifier = classifier
        self.serving = ChatServing(self.settings, self.store, self.jobs, RayChatDeployer(), self.metrics)
        try:
            log.info("presafe: re-synced %d unfinished job(s)", self.jobs.resync())
        except Exception:  # Ray's job API may still be starting: records catch up on read
            log.exception("presafe: re-sync on start-up failed")
        self._scheduler = threading.Thread(target=self._schedule_forever, name="presafe-scheduler", daemon=True)
        self._scheduler.start()

    def _quota(self, owner: str | None) -> int:
        """Jobs an owner may run at once: its token's max_running_jobs, else the default."""
        own = [t.max_running_jobs for t in self.auth.tokens if t.name == owner and t.max_running_jobs is not None]
        return max(own) if own else self.settings.queue.max_running_per_owner

    def _schedule_forever(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.jobs.schedule()
                if done["launched"] or done["stopped"]:
                    log.info("presafe: scheduler launched %d, stopped %d job(s)", done["launched"], done["stopped"])
            except Exception:  # noqa: BLE001 - a bad pass (database restart, Ray busy) must not end the loop
                log.exception("presafe: scheduler pass failed")
            self._wake.wait(self.settings.queue.interval_s)
            self._wake.clear()

    def __del__(self):
        self._stop.set()

    async def _classify(self, path: str, prompts: list[str], responses: list[str | None]) -> list[Decision]:
        try:
            return await asyncio.wait_for(self.classifier.classify.remote((path, prompts, responses)),
                                          timeout=CLASSIFY_TIMEOUT_S)
        except PresafeError as e:  # e.g. a model folder that does not load: the API reports the original error
            raise getattr(e, "cause", e) from None  # Ray wraps it in a RayTaskError carrying a traceback
        except Exception as e:  # replica died / restarting / overloaded: a clean 503, not a hang
            raise ClassifierUnavailable(f"the classifier deployment did not answer ({type(e).__name__}); "
                                        "retry shortly") from e

    async def _ready(self) -> dict[str, str]:
        checks = {}
        try:
            await asyncio.to_thread(self.store.list, None, 1, 0)
            checks["store"] = "ok"
        except Exception as e:  # noqa: BLE001 - reported as the check result
            log.error("presafe: readiness: store: %s: %s", type(e).__name__, e)
            checks["store"] = "error"
        try:
            checks["classifier"] = await asyncio.wait_for(self.classifier.ping.remote(), timeout=5)
        except Exception as e:  # noqa: BLE001 - reported as the check result
            log.error("presafe: readiness: classifier: %s", type(e).__name__)
            checks["classifier"] = "error"
        return checks

    def __serve_build_asgi_app__(self):
        return create_api(self.settings, self.jobs, ModelRegistry(self.settings, self.store), self._classify,
                          self._ready, self.auth, self.metrics, self.serving)
