"""Generation for the stages (decide, targets, evaluate and its probe pass): in the
driver's process, or on Ray actors so the driver only orchestrates.

`ModelPool` holds one model on N actors with the configured resources (`decide.num_actors`,
`cpus_per_actor`, `gpus_per_actor`, `resources_per_actor`: custom node resources such as an
accelerator type); with 0 actors it holds the model in this process (laptops, tests).
The engine is `generation.engine`: `hf` merges a pool's LoRA adapter into the weights (one
pool per variant); `vllm` loads the base model once and applies any of the pool's
`adapters` per `generate` call, unmerged, so every variant shares one pool.

Texts are cut into chunks (4 batches for hf; `generation.vllm.max_num_seqs` sequences for
vllm, so continuous batching has work to choose from), each chunk seeded by its offset,
and chunks go round-robin to the actors: the continuations are the same whichever process
generated them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from jobs import events
from jobs.generation import EngineConfig, GenerationConfig


@dataclass
class ActorSpec:
    """Where generation runs: 0 actors = this process."""

    num_actors: int = 0
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    resources_per_actor: dict[str, float] = field(default_factory=dict)


class ModelWorker:
    """One loaded model: a Ray actor in a pool, or the in-process model of a 0-actor pool."""

    def __init__(self, model: str, dtype: str, adapter: str | None = None, engine=None,
                 engine_cfg: EngineConfig | None = None, adapters: list[str] | None = None):
        if engine is None:
            from jobs.generation import make_engine

            engine = make_engine(model, dtype, engine_cfg, adapter=adapter, adapters=adapters)
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

    def generate(self, texts: list[str], generation: dict, adapter: str | None = None) -> list[str]:
        if adapter is None:
            return self.engine.generate(texts, GenerationConfig(**generation))
        # only an engine that applies adapters per call (vLLM) is ever given one
        return self.engine.generate(texts, GenerationConfig(**generation), adapter=adapter)

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()

    def features(self, prompts: list[str], template: dict, batch_size: int):
        """Hidden states at t* per layer ([N, L + 1, H]) for the decision probes (HF engine only:
        vLLM exposes no hidden states; evaluate runs the probe pass on HF pools after vLLM's)."""
        from jobs.evaluation.probes import pre_cot_features
        from jobs.templates import TemplateConfig

        if not hasattr(self.engine, "model"):
            raise TypeError(f"{type(self.engine).__name__} has no hidden states: probe features need the hf engine")

        return pre_cot_features(self.engine.model, self.engine.tokenizer, prompts, TemplateConfig(**template), batch_size)


class ModelPool:
    """A model on N Ray actors (or in this process): generate, probe features, placements.

    `adapter`: the LoRA adapter every call uses (merged by hf; applied per call by vllm).
    `adapters` (vllm): more adapter folders a call may name (`generate(..., adapter=)`)."""

    def __init__(self, model: str, dtype: str, spec: ActorSpec, adapter: str | None = None, engine=None,
                 engine_cfg: EngineConfig | None = None, adapters: list[str] | None = None):
        self.spec = spec
        self.engine_cfg = engine_cfg or EngineConfig()
        self.vllm = engine is None and self.engine_cfg.engine == "vllm"
        self.adapter = adapter if self.vllm else None
        self.owned = engine is None
        if adapters and not self.vllm:
            raise ValueError("per-call adapters need generation.engine: vllm")
        if self.vllm:  # never merged: the pool's adapter is one of the engine's per-call adapters
            merged, adapters = None, [str(a) for a in dict.fromkeys([adapter, *(adapters or [])]) if a]
        else:
            merged, adapters = adapter, None
        if spec.num_actors == 0:
            self.workers = [ModelWorker(model, dtype, merged, engine, self.engine_cfg, adapters)]
            self.remote = False
            return
        import ray

        if not ray.is_initialized():
            ray.init(log_to_driver=True)
        actor = ray.remote(ModelWorker).options(num_cpus=spec.cpus_per_actor, num_gpus=spec.gpus_per_actor,
                                                resources=dict(spec.resources_per_actor) or None)
        self.workers = [actor.remote(model, dtype, merged, None, self.engine_cfg, adapters)
                        for _ in range(spec.num_actors)]
        self.remote = True

    def using(self, adapter: str | None) -> "ModelPool":
        """This pool's loaded model with `adapter` applied per call (vllm): a view that shares
        the workers; close the pool, never the view."""
        import copy

        if adapter is not None and not self.vllm:
            raise ValueError("per-call adapters need generation.engine: vllm")
        view = copy.copy(self)
        view.adapter = str(adapter) if adapter is not None else None
        return view

    def _call(self, worker, method: str, *args):
        return getattr(worker, method).remote(*args) if self.remote else getattr(worker, method)(*args)

    def placements(self) -> list[dict]:
        import ray

        return ray.get([w.where.remote() for w in self.workers]) if self.remote else [self.workers[0].where()]

    def generate(self, texts: list[str], gen: GenerationConfig, desc: str = "generate",
                 adapter: str | None = None) -> list[str]:
        """Continuations of `texts` in order; progress per chunk in the events log. `adapter`
        (vllm): the LoRA folder to apply instead of the pool's own."""
        if adapter is not None and not self.vllm:
            raise ValueError("per-call adapters need generation.engine: vllm")
        adapter = str(adapter) if adapter is not None else self.adapter
        chunk = self.engine_cfg.vllm.max_num_seqs if self.vllm else gen.batch_size * 4
        starts = list(range(0, len(texts), chunk))
        subs = [asdict(GenerationConfig(**{**asdict(gen), "seed": gen.seed + s})) for s in starts]
        if not self.remote:
            from tqdm.auto import tqdm

            out: list[str] = []
            for s, sub in zip(tqdm(starts, desc=desc, unit="chunk", mininterval=1.0), subs):
                out += self.workers[0].generate(texts[s : s + chunk], sub, adapter)
                events.progress(desc, len(out), len(texts), "generations")
            return out
        import ray

        pending = {self.workers[i % len(self.workers)].generate.remote(texts[s : s + chunk], sub, adapter): s
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
        elif self.owned:  # an engine the caller passed in is the caller's to close
            for w in self.workers:
                w.close()
        self.workers = []


def generate_texts(model: str, dtype: str, texts: list[str], gen: GenerationConfig, num_actors: int = 0,
                   cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0, engine=None, desc: str = "generate",
                   resources: dict[str, float] | None = None, record: dict | None = None,
                   engine_cfg: EngineConfig | None = None) -> list[str]:
    """Continuations of `texts` in order, in this process (`engine` when given) or on a
    pool of `num_actors` Ray actors, with the `engine_cfg` engine (default hf). `record`,
    when given, receives the actors' placements."""
    if not texts:
        return []
    pool = ModelPool(model, dtype, ActorSpec(num_actors, cpus_per_actor, gpus_per_actor, resources or {}),
                     engine=engine, engine_cfg=engine_cfg)
    try:
        if record is not None and pool.remote:
            record["workers"] = pool.placements()
        return pool.generate(texts, gen, desc)
    finally:
        pool.close()
