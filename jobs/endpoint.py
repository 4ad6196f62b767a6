"""A served model as a generation engine: any OpenAI-compatible server (vLLM, Ray Serve
LLM, TGI, a hosted API), so `presafe eval` judges a deployed model with the same stage
code, judges and attacks as a job's own models.

`api: completions` (default) sends the prompt text presafe rendered itself (templates,
CoT on/off, t*, attack prefills: everything as for a local model) to `/completions`;
`api: chat` sends the user prompt as one chat message to `/chat/completions` for servers
that only speak chat (CoT on/off and prefill attacks are then the server's business; a
`reasoning_content` field is put back as the think block).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from jobs.config import check
from jobs.errors import PresafeError
from jobs.generation import GenerationConfig


@dataclass
class EndpointConfig:
    """An OpenAI-compatible server to evaluate instead of a local model (`presafe eval
    --endpoint URL`)."""

    url: str = ""
    """Base URL, e.g. http://127.0.0.1:8000/v1. Empty = evaluate local models."""
    model: str = ""
    """The model name the server serves (the request's `model`)."""
    api: str = "completions"
    """completions (presafe renders every prompt) | chat (messages; the server renders)."""
    api_key_env: str = ""
    """Name of the environment variable holding the API key (never the key itself)."""
    timeout_s: float = 300.0
    concurrency: int = 8
    """Requests in flight at once."""

    def validate(self) -> None:
        check(not self.url or bool(re.match(r"https?://[^\s/]+", self.url)), "url",
              f"must be an http(s) URL, got {self.url!r}")
        check(not self.url or bool(self.model.strip()), "model", "name the served model")
        check(self.api in ("completions", "chat"), "api", "must be completions or chat")
        check(not self.api_key_env or bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env)), "api_key_env",
              "must be an environment variable name")
        check(0 < self.timeout_s <= 3600, "timeout_s", "must be in (0, 3600]")
        check(1 <= self.concurrency <= 256, "concurrency", "must be in [1, 256]")


class EndpointEngine:
    """GenerationEngine over HTTP: `texts` are rendered prompts (completions) or the user
    prompts themselves (chat)."""

    def __init__(self, cfg: EndpointConfig, stop: list[str] | None = None):
        import httpx

        self.cfg = cfg
        self.stop = stop or []
        headers = {}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise PresafeError(f"evaluate.endpoint.api_key_env: ${cfg.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(base_url=cfg.url.rstrip("/"), headers=headers, timeout=cfg.timeout_s)

    def _one(self, text: str, gen: GenerationConfig, seed: int) -> str:
        import httpx

        body: dict = {"model": self.cfg.model, "max_tokens": gen.max_new_tokens, "seed": seed,
                      "temperature": gen.temperature, "top_p": gen.top_p if gen.temperature > 0 else 1.0}
        if gen.top_k and gen.temperature > 0:
            body["top_k"] = gen.top_k  # vLLM's extension; ignored by servers without it
        if self.cfg.api == "completions":
            path, body = "/completions", {**body, "prompt": text, **({"stop": self.stop} if self.stop else {})}
        else:
            path, body = "/chat/completions", {**body, "messages": [{"role": "user", "content": text}]}
        try:
            r = self.client.post(path, json=body)
        except httpx.HTTPError as e:
            raise PresafeError(f"evaluate.endpoint.url: {self.cfg.url}{path}: {type(e).__name__}: {e}") from None
        if r.status_code != 200:
            raise PresafeError(f"evaluate.endpoint: {self.cfg.url}{path} answered {r.status_code}: {r.text[:300]}")
        try:
            choice = r.json()["choices"][0]
            if self.cfg.api == "completions":
                return choice["text"]
            msg = choice["message"]
            thinking = msg.get("reasoning_content") or ""
            return (f"{thinking}\n</think>\n\n" if thinking else "") + (msg.get("content") or "")
        except (ValueError, KeyError, IndexError, TypeError):
            raise PresafeError(f"evaluate.endpoint: {self.cfg.url}{path} did not answer in the OpenAI format: "
                               f"{r.text[:300]}") from None

    def generate(self, texts: list[str], cfg: GenerationConfig) -> list[str]:
        # One seed per request (the seed of the batch plus its index), as the local engine
        # seeds each batch: a rerun asks for the same samples.
        with ThreadPoolExecutor(self.cfg.concurrency) as pool:
            return list(pool.map(lambda it: self._one(it[1], cfg, cfg.seed * 100_003 + it[0]), enumerate(texts)))
