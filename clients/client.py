"""The Python client of the presafe REST API (`/v1`): typed results, one-line errors.

    from clients.client import PresafeClient

    with PresafeClient() as c:                   # PRESAFE_URL / PRESAFE_TOKEN, else `presafe up`'s state
        job = c.submit("jobs/configs/quickstart.yaml", ["align.aux.weight=0.5"], name="try2")
        job = c.wait(job.id, on_update=lambda r: print(r.status, r.stage, r.progress))
        print(c.report(job.id).report["evaluation"])
        print(c.classify(["How do I pick a lock?"]).decisions[0])

Every method returns the API's own models (`service.schemas`). Every failure is a
`jobs.errors.PresafeError` with a one-line message: `ServiceUnavailable` (nothing answers
at the URL), `AuthError` (401/403), `NotFound` (404), `ApiError` (any other 4xx/5xx, with
`status` and the server's `detail`).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx
import yaml
from pydantic import ValidationError

from jobs.config import _apply_override
from jobs.errors import ConfigError, PresafeError
from service.schemas import (
    ClassifyItem,
    ClassifyRequest,
    ClassifyResponse,
    Health,
    JobCreate,
    JobLogs,
    JobPage,
    JobRecord,
    JobReport,
    JobStatus,
    ModelInfo,
    ModelList,
    ModelRegister,
    Promotion,
    QueuePage,
    ServeCreate,
    ServedRecord,
)

__all__ = ["ApiError", "AuthError", "NotFound", "PresafeClient", "ServiceNotConfigured", "ServiceUnavailable"]

_HINT = "start one with `presafe up` or set PRESAFE_URL"


class ServiceUnavailable(PresafeError):
    """Nothing answered at the service URL (connection refused, DNS, timeout)."""

    exit_code = 1  # the CLI's exit status: the request was fine, the service was not there

    def __init__(self, url: str, reason: str):
        super().__init__(f"presafe service not reachable at {url}: {reason}; {_HINT}")
        self.url = url
        self.reason = reason


class ServiceNotConfigured(ServiceUnavailable):
    """No URL: none given, no PRESAFE_URL, and no local service started by `presafe up`."""

    def __init__(self):
        PresafeError.__init__(self, "no presafe service configured: pass a URL (--url), set PRESAFE_URL "
                                    "(and PRESAFE_TOKEN), or start one with `presafe up`")
        self.url = None
        self.reason = "not configured"


class ApiError(PresafeError):
    """The service answered with an error status; `detail` is its `{"detail": ...}`."""

    def __init__(self, status: int, detail: Any, method: str = "", path: str = "", hint: str = ""):
        self.status = status
        self.detail = detail
        self.method = method
        self.path = path
        self.exit_code = 1 if status >= 500 else 2  # the CLI's: a request to fix, or a service in trouble
        where = f"HTTP {status}" + (f", {method} {path}" if method else "")
        super().__init__(f"{render_detail(detail)}{hint} ({where})")


class AuthError(ApiError):
    """401 (no token, or one the service does not know) or 403 (the token lacks a scope)."""


class NotFound(ApiError):
    """404: no such job, report plot or route."""


def render_detail(detail: Any) -> str:
    """The server's `detail` as one line; FastAPI's 422 list becomes "field.path: msg; ..."
    (the leading "body" of each `loc` is dropped; list indices print as `[i]`)."""
    if isinstance(detail, list):
        parts = []
        for err in detail:
            if not isinstance(err, dict):
                parts.append(str(err))
                continue
            loc = list(err.get("loc") or [])
            if loc and loc[0] == "body":
                loc = loc[1:]
            path = ""
            for part in loc:
                if isinstance(part, int):
                    part = f"[{part}]"
                path += f".{part}" if path and not str(part).startswith("[") else str(part)
            msg = str(err.get("msg", err))
            parts.append(f"{path}: {msg}" if path else msg)
        return "; ".join(parts) or "(no detail)"
    if detail is None or detail == "":
        return "(no detail)"
    return detail if isinstance(detail, str) else str(detail)


def _local_state():
    """What `presafe up` wrote (a `service.local.LocalService`), or None."""
    try:
        from service.local import read_state
    except ImportError:
        return None
    try:
        return read_state()
    except (OSError, ValueError, TypeError):  # an unreadable, half-written or stale state file: as if not up
        return None


def _normalize(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url.removesuffix("/v1")


def _read_config(config: dict | str | Path) -> tuple[dict, str]:
    """(config as a plain dict, its source name for messages). A str is a path."""
    if isinstance(config, dict):
        return copy.deepcopy(config), "<config>"
    source = str(config)
    p = Path(config)
    if not p.is_file():
        raise ConfigError(f"{source}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys, got {type(data).__name__}")
    return data, source


def _q(job_id: str) -> str:
    return quote(str(job_id), safe="")


def _body(model, data: dict, exclude_none: bool = False) -> dict:
    """A request body checked against its schema here, so a bad argument is a ConfigError
    naming the field rather than a round trip (or a pydantic traceback in the CLI)."""
    try:
        return model.model_validate(data).model_dump(mode="json", exclude_none=exclude_none)
    except ValidationError as e:
        raise ConfigError(f"invalid {model.__name__}: {render_detail(e.errors())}") from None


class PresafeClient:
    """A synchronous client of one presafe service.

    url: the service root (e.g. http://127.0.0.1:8000); default PRESAFE_URL, else the
    service `presafe up` started. token: the bearer token; default PRESAFE_TOKEN, else the
    local service's token (only when talking to that service). http: an `httpx.Client` to
    send requests with (tests pass a `fastapi.testclient.TestClient` or a client on an
    `httpx.MockTransport`); it is not closed by `close()`, and `timeout` does not apply to it.
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 http: httpx.Client | None = None):
        state = None
        if url is None and http is not None and str(http.base_url).strip("/"):
            url = str(http.base_url)
        if url is None:
            url = os.environ.get("PRESAFE_URL") or None
        if url is None:
            state = _local_state()
            url = state.url if state else None
        if not url:
            raise ServiceNotConfigured()
        self.url = _normalize(url)
        if token is None:
            token = os.environ.get("PRESAFE_TOKEN") or None
        if token is None:
            state = state or _local_state()
            if state is not None and _normalize(state.url) == self.url:
                token = state.token
        self.token = token
        self.timeout = timeout
        self._own_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PresafeClient(url={self.url!r}, token={'set' if self.token else None})"

    def _abs(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        if not path.startswith("/"):
            path = "/" + path
        if not path.startswith("/v1/"):
            path = "/v1" + path
        return self.url + path

    def _request(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                 ok: Iterable[int] = ()) -> httpx.Response:
        url = self._abs(path)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if params:
            params = {k: (v.value if isinstance(v, JobStatus) else v) for k, v in params.items() if v is not None}
        try:
            resp = self._http.request(method, url, params=params or None, json=json, headers=headers)
        except httpx.TimeoutException as e:
            raise ServiceUnavailable(self.url, f"timed out ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise ServiceUnavailable(self.url, str(e) or type(e).__name__) from None
        except httpx.InvalidURL as e:
            raise ConfigError(f"invalid presafe service URL {url!r}: {e}") from None
        if resp.is_success or resp.status_code in ok:
            return resp
        raise self._error(resp, method, httpx.URL(url).path)

    def _error(self, resp: httpx.Response, method: str, path: str) -> ApiError:
        try:
            body = resp.json()
            detail = body["detail"] if isinstance(body, dict) and "detail" in body else body
        except ValueError:
            detail = resp.text.strip()[:300] or resp.reason_phrase
        status = resp.status_code
        if status == 401:
            hint = ("; no token was sent: set PRESAFE_TOKEN or pass a token (--token)" if not self.token else
                    "; the service does not accept this token: check PRESAFE_TOKEN / --token")
            return AuthError(status, detail, method, path, hint)
        if status == 403:
            return AuthError(status, detail, method, path, "; the token lacks the scope this request needs")
        if status == 404:
            return NotFound(status, detail, method, path)
        return ApiError(status, detail, method, path)

    def _parse(self, model, resp: httpx.Response):
        try:
            return model.model_validate(resp.json())
        except ValueError as e:  # not JSON, or not the shape of `model` (pydantic's error is a ValueError)
            first = str(e).strip().splitlines()
            raise ApiError(resp.status_code, f"unexpected response from {self.url} (not a presafe "
                                             f"{model.__name__}): {first[0] if first else e}",
                           resp.request.method, resp.request.url.path) from None

    # -- jobs -----------------------------------------------------------------------------

    def submit(self, config: dict | str | Path, overrides: Iterable[str] = (), name: str | None = None,
               idempotency_key: str | None = None, priority: int = 0) -> JobRecord:
        """Submit a pipeline job; it starts QUEUED. `config` is a dict or a YAML file's path;
        `overrides` are `a.b=value` items applied as `presafe run` applies them (a bad one
        raises ConfigError). The service validates the config (ApiError 422 names the field;
        409 when `idempotency_key` was used before with another body)."""
        data, source = _read_config(config)
        for item in overrides:
            _apply_override(data, item, source)
        body = _body(JobCreate, {"config": data, "name": name, "idempotency_key": idempotency_key,
                                 "priority": priority})
        return self._parse(JobRecord, self._request("POST", "/jobs", json=body))

    def get(self, job_id: str) -> JobRecord:
        return self._parse(JobRecord, self._request("GET", f"/jobs/{_q(job_id)}"))

    def list(self, status: JobStatus | str | None = None, limit: int = 50, offset: int = 0) -> JobPage:
        params = {"status": status, "limit": limit, "offset": offset}
        return self._parse(JobPage, self._request("GET", "/jobs", params=params))

    def queue(self) -> QueuePage:
        """Your queued jobs (an admin's: all) in admission order, each with why it waits."""
        return self._parse(QueuePage, self._request("GET", "/queue"))

    def logs(self, job_id: str, tail: int = 200) -> JobLogs:
        return self._parse(JobLogs, self._request("GET", f"/jobs/{_q(job_id)}/logs", params={"tail": tail}))

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job; a finished job is returned unchanged."""
        return self._parse(JobRecord, self._request("DELETE", f"/jobs/{_q(job_id)}"))

    def resume(self, job_id: str) -> JobRecord:
        """Start a FAILED or CANCELLED job again (ApiError 409 otherwise): the stages it
        completed are skipped, the one that was cut off runs again."""
        return self._parse(JobRecord, self._request("POST", f"/jobs/{_q(job_id)}/resume"))

    def report(self, job_id: str) -> JobReport:
        """The job's report (ApiError 409 while it has none yet)."""
        return self._parse(JobReport, self._request("GET", f"/jobs/{_q(job_id)}/report"))

    def plot(self, job_id: str, name: str) -> bytes:
        """A report plot's PNG bytes. `name` is a key of `report(job_id).plots` (".png" is
        added when it has no extension) or one of its URLs."""
        if name.startswith(("/", "http://", "https://")):
            path = name
        else:
            path = f"/jobs/{_q(job_id)}/report/plots/{name if '.' in name else name + '.png'}"
        return self._request("GET", path).content

    def wait(self, job_id: str, poll: float = 2.0, timeout: float | None = None,
             on_update: Callable[[JobRecord], None] | None = None) -> JobRecord:
        """Poll the job until it is finished (SUCCEEDED, FAILED or CANCELLED) and return its
        last record; `on_update` gets every record polled (QUEUED, then PENDING, RUNNING). TimeoutError after `timeout` s."""
        start = time.monotonic()
        while True:
            rec = self.get(job_id)
            if on_update is not None:
                on_update(rec)
            if rec.status.finished:
                return rec
            elapsed = time.monotonic() - start
            if timeout is not None and elapsed >= timeout:
                stage = f" at stage {rec.stage}" if rec.stage else ""
                raise TimeoutError(f"job {job_id} still {rec.status.value}{stage} after {timeout:g} s")
            delay = poll if timeout is None else max(0.0, min(poll, timeout - elapsed))
            time.sleep(delay)

    # -- serving a job's models ---------------------------------------------------------

    def serve(self, job_id: str, variant: str = "aligned", gate: str = "off", thinking: str = "on") -> ServedRecord:
        """Deploy a SUCCEEDED job's models as an OpenAI-compatible chat app on the service
        (DEPLOYING; READY once its engine is up): `self.url + record.url` is the OpenAI base
        URL, and this client's token works there. ApiError 409 over the serving limits or for
        an unfinished job, 422 for a variant the job did not train, NotFound when the service
        does not serve models."""
        body = _body(ServeCreate, {"variant": variant, "gate": gate, "thinking": thinking})
        return self._parse(ServedRecord, self._request("POST", f"/jobs/{_q(job_id)}/serve", json=body))

    def serving(self, job_id: str) -> ServedRecord:
        """The job's chat app: DEPLOYING, READY or FAILED (NotFound when it is not served)."""
        return self._parse(ServedRecord, self._request("GET", f"/jobs/{_q(job_id)}/serve"))

    def unserve(self, job_id: str) -> ServedRecord:
        """Undeploy the job's chat app (the record comes back DELETED)."""
        return self._parse(ServedRecord, self._request("DELETE", f"/jobs/{_q(job_id)}/serve"))

    # -- models and classification -----------------------------------------------------

    def classify(self, items: Iterable[ClassifyItem | dict | str], model: str | None = None) -> ClassifyResponse:
        """Decide refuse/comply for each item: a ClassifyItem, a dict {prompt, response?},
        or a str (the prompt alone)."""
        items = [ClassifyItem(prompt=it) if isinstance(it, str) else it for it in items]
        body = _body(ClassifyRequest, {"items": items, "model": model}, exclude_none=True)
        return self._parse(ClassifyResponse, self._request("POST", "/classify", json=body))

    def models(self) -> ModelList:
        return self._parse(ModelList, self._request("GET", "/models"))

    def register_model(self, path: str, name: str | None = None) -> ModelInfo:
        """Register a trained classifier folder (a path on the service's machines, under its
        paths.model_roots) as a model you own; /v1/classify serves it at once (models:write)."""
        body = _body(ModelRegister, {"path": path, "name": name}, exclude_none=True)
        return self._parse(ModelInfo, self._request("POST", "/models", json=body))

    def promote(self, model_id: str) -> Promotion:
        """Make a classifier the service's default, servable to every caller (admin token)."""
        return self._parse(Promotion, self._request("POST", f"/models/{_q(model_id)}/promote"))

    # -- health -----------------------------------------------------------------------------

    def health(self) -> Health:
        return self._parse(Health, self._request("GET", "/healthz"))

    def ready(self) -> Health:
        """Readiness; a 503 whose body is a Health is returned (check `.status`), not raised."""
        resp = self._request("GET", "/readyz", ok=(503,))
        if resp.status_code == 503:
            try:
                return Health.model_validate(resp.json())
            except ValueError:
                raise self._error(resp, "GET", "/v1/readyz") from None
        return self._parse(Health, resp)
