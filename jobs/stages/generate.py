"""Generation for the stages (decide, targets, evaluate and its probe pass): in the
driver's process, or on Ray actors so the driver only orchestrates.

`ModelPool` holds one model (an optional LoRA adapter merged in) on N actors with the
configured resources (`decide.num_actors`, `cpus_per_actor`, `gpus_per_actor`,
`resources_per_actor`: custom node resources such as an accelerator type); with 0 actors
it holds the model in this process (laptops, tests). Texts are cut into chunks of 4
batches, each chunk seeded by its offset, and chunks go round-robin to the actors: the
continuations are the same whichever process generated them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from jobs import events
from jobs.generation import GenerationConfig, HFEngine


@dataclass
class ActorSpec:
    """Where generation runs: 0 actors = this process."""

    num_actors: int = 0
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    resources_per_actor: dict[str, float] = field(default_factory=dict)


class ModelWorker:
    """One loaded model: a Ray actor in a pool, or the in-process model of a 0-actor pool."""

    def __init__(self, model: str, dtype: str, adapter: str | None = None, engine=None):
        if engine is None:
            from jobs.generation import load_causal_lm

            tokenizer, lm = load_causal_lm(model, dtype, adapter=adapter)
            engine = HFEngine(model, tokenizer=tokenizer, model=lm)
        self.engine = engine

    def where(self) -> dict:
        """The node and process that loaded the model (recorded in the artifacts' meta)."""
        import os
        import socket

        node = None
        try:
            import ray

            if ray.is_initialized():
                node = ray.get_runtime_context().get_node_id()
        except ImportError:
            pass
        return {"node_id": node, "pid": os.getpid(), "host": socket.gethostname()}

    def generate(self, texts: list[str], generation: dict) -> list[str]:
        return self.engine.generate(texts, GenerationConfig(**generation))

    def features(self, prompts: list[str], template: dict, batch_size: int):
        """Hidden states at t* per layer ([N, L + 1, H]) for the decision probes."""
        from jobs.evaluation.probes import pre_cot_features
        from jobs.templates import TemplateConfig

        return pre_cot_features(self.engine.model, self.engine.tokenizer, prompts, TemplateConfig(**template), batch_size)


class ModelPool:
    """A model on N Ray actors (or in this process): generate, probe features, placements."""

    def __init__(self, model: str, dtype: str, spec: ActorSpec, adapter: str | None = None, engine=None):
        self.spec = spec
        if spec.num_actors == 0:
            self.workers = [ModelWorker(model, dtype, adapter, engine)]
            self.remote = False
            return
        import ray

        if not ray.is_initialized():
            ray.init(log_to_driver=True)
        actor = ray.remote(ModelWorker).options(num_cpus=spec.cpus_per_actor, num_gpus=spec.gpus_per_actor,
                                                resources=dict(spec.resources_per_actor) or None)
        self.workers = [actor.remote(model, dtype, adapter) for _ in range(spec.num_actors)]
        self.remote = True

    def _call(self, worker, method: str, *args):
        return getattr(worker, method).remote(*args) if self.remote else getattr(worker, method)(*args)

    def placements(self) -> list[dict]:
        import ray

        return ray.get([w.where.remote() for w in self.workers]) if self.remote else [self.workers[0].where()]

    def generate(self, texts: list[str], gen: GenerationConfig, desc: str = "generate") -> list[str]:
        """Continuations of `texts` in order; progress per chunk in the events log."""
        chunk = gen.batch_size * 4
        starts = list(range(0, len(texts), chunk))
        subs = [asdict(GenerationConfig(**{**asdict(gen), "seed": gen.seed + s})) for s in starts]
        if not self.remote:
            from tqdm.auto import tqdm

            out: list[str] = []
            for s, sub in zip(tqdm(starts, desc=desc, unit="chunk", mininterval=1.0), subs):
                out += self.workers[0].generate(texts[s : s + chunk], sub)
                events.progress(desc, len(out), len(texts), "generations")
            return out
        import ray

        pending = {self.workers[i % len(self.workers)].generate.remote(texts[s : s + chunk], sub): s
                   for i, (s, sub) in enumerate(zip(starts, subs))}
        results: dict[int, list[str]] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                results[pending.pop(ref)] = ray.get(ref)
            events.progress(desc, sum(map(len, results.values())), len(texts), "generations")
        return [t for s in starts for t in results[s]]

    def features(self, prompts: list[str], template, batch_size: int):
        import numpy as np

        if not self.remote:
            return self.workers[0].features(prompts, asdict(template), batch_size)
        import ray

        n = len(self.workers)
        shards = [list(range(len(prompts)))[i::n] for i in range(n)]
        parts = ray.get([w.features.remote([prompts[j] for j in idx], asdict(template), batch_size)
                         for w, idx in zip(self.workers, shards) if idx])
        out = np.empty((len(prompts), *parts[0].shape[1:]), dtype=parts[0].dtype)
        for idx, part in zip([s for s in shards if s], parts):
            out[idx] = part
        return out

    def close(self) -> None:
        if self.remote:
            import ray

            for w in self.workers:
                ray.kill(w)
        self.workers = []


def generate_texts(model: str, dtype: str, texts: list[str], gen: GenerationConfig, num_actors: int = 0,
                   cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0, engine=None, desc: str = "generate",
                   resources: dict[str, float] | None = None, record: dict | None = None) -> list[str]:
    """Continuations of `texts` in order, in this process (`engine` when given) or on a
    pool of `num_actors` Ray actors. `record`, when given, receives the actors' placements."""
    if not texts:
        return []
    pool = ModelPool(model, dtype, ActorSpec(num_actors, cpus_per_actor, gpus_per_actor, resources or {}),
                     engine=engine)
    try:
        if record is not None and pool.remote:
            record["workers"] = pool.placements()
        return pool.generate(texts, gen, desc)
    finally:
        pool.close()
