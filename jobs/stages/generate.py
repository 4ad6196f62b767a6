"""Generate continuations of rendered prompts in-process or on a Ray Data actor pool."""

from __future__ import annotations

from dataclasses import asdict

from jobs import events
from jobs.generation import GenerationConfig, HFEngine


class GenerateBatch:
    """A Ray Data actor: loads the model once, generates for each batch it receives."""

    def __init__(self, model: str, dtype: str, generation: dict):
        self.engine = HFEngine(model, dtype)
        self.cfg = GenerationConfig(**generation)

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        return {"i": batch["i"], "response": self.engine.generate(texts, self.cfg)}


def generate_texts(model: str, dtype: str, texts: list[str], gen: GenerationConfig, num_actors: int = 0,
                   cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0, engine=None, desc: str = "generate") -> list[str]:
    """Continuations of `texts` in order. num_actors = 0: in-process (or `engine` when
    given); N: Ray Data `map_batches` over an actor pool of N generation actors."""
    if not texts:
        return []
    if num_actors == 0:
        from tqdm.auto import tqdm

        engine = engine or HFEngine(model, dtype)
        out: list[str] = []
        # Chunks of a few batches keep the progress bar moving on long runs.
        chunk = gen.batch_size * 4
        for start in tqdm(range(0, len(texts), chunk), desc=desc, unit="chunk", mininterval=1.0):
            sub = GenerationConfig(**{**asdict(gen), "seed": gen.seed + start})
            out += engine.generate(texts[start : start + chunk], sub)
            events.progress(desc, len(out), len(texts), "generations")
        return out
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    ds = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
    ds = ds.map_batches(
        GenerateBatch,
        fn_constructor_kwargs={"model": model, "dtype": dtype, "generation": asdict(gen)},
        batch_size=gen.batch_size * 4,
        concurrency=num_actors,
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    rows = sorted(ds.take_all(), key=lambda r: int(r["i"]))
    return [str(r["response"]) for r in rows]
