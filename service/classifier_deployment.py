"""The classifier deployment: trained decision classifiers behind `@serve.batch`.

Concurrent /v1/classify requests are gathered (up to `max_batch_size` calls or
`batch_wait_timeout_s`) and scored in one forward pass per model by
`service.classifiers.ClassifierPool`, which loads each model once and keeps it (the
load time goes to `service.metrics`).
The forward pass runs in a worker thread so the replica keeps accepting (and batching)
requests meanwhile. Autoscaling follows ongoing requests per replica.
"""

from __future__ import annotations

import asyncio

from ray import serve

from service.classifiers import ClassifierPool
from service.metrics import ServiceMetrics
from service.schemas import Decision

Call = tuple[str, list[str], list[str | None]]
"""(classifier folder, prompts, responses) of one request."""


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=64,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16,
                        "upscale_delay_s": 10, "downscale_delay_s": 60},
    health_check_period_s=5,
    health_check_timeout_s=10,
)
class Classifier:
    def __init__(self, capacity: int = 4, torch_threads: int | None = None):
        import torch

        # Ray caps a replica's torch threads at its CPU reservation (1 here). On a CPU node
        # with cores to spare, raise it; on a busy small node more threads only contend.
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.pool = ClassifierPool(capacity, metrics=ServiceMetrics())

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def classify(self, calls: list[Call]) -> list[list[Decision]]:
        return await asyncio.to_thread(self.pool.classify_many, calls)

    async def ping(self) -> str:
        return "ok"

    def check_health(self) -> None:
        # Serve restarts a replica whose health check raises; a loaded pool is all it needs.
        if self.pool is None:
            raise RuntimeError("classifier pool missing")
