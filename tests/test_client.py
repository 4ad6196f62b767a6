"""The REST client and the service commands of the CLI, against canned responses
(httpx.MockTransport): no server, no Ray."""

from __future__ import annotations

import functools
import json
import socket
import types

import httpx
import pytest

from clients import client as client_mod
from clients import service_commands
from clients.cli import main
from clients.client import (
    ApiError,
    AuthError,
    NotFound,
    PresafeClient,
    ServiceNotConfigured,
    ServiceUnavailable,
)
from jobs.errors import ConfigError, PresafeError
from service.schemas import (
    ClassifyResponse,
    Health,
    JobLogs,
    JobPage,
    JobRecord,
    JobReport,
    JobStatus,
    ModelList,
)

URL = "http://presafe.test:8000"
TOKEN = "psf_test_token"


def job(id="j1", status="RUNNING", **kw) -> dict:
    rec = {"id": id, "status": status, "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:06Z",
           "job_dir": f"/srv/presafe/jobs/{id}", "submission_id": f"raysubmit_{id}"}
    rec.update(kw)
    return rec


class FakeApi:
    """A MockTransport handler: routes (METHOD, path) to a response or a list of responses
    (served in order, the last one repeated) and records every request."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path)
        if key not in self.routes:
            return httpx.Response(404, json={"detail": f"no route {key}"})
        r = self.routes[key]
        if isinstance(r, list):
            r = r.pop(0) if len(r) > 1 else r[0]
        if callable(r):
            return r(request)
        status, body = r
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers={"content-type": "image/png"})
        return httpx.Response(status, json=body)

    def http(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))

    def body(self, i: int = -1) -> dict:
        return json.loads(self.requests[i].content)


@pytest.fixture(autouse=True)
def no_ambient_service(monkeypatch):
    """Nothing from the environment or a real `presafe up` state leaks into these tests."""
    monkeypatch.delenv("PRESAFE_URL", raising=False)
    monkeypatch.delenv("PRESAFE_TOKEN", raising=False)
    monkeypatch.setattr(client_mod, "_local_state", lambda: None)


def make(api: FakeApi, token: str | None = TOKEN) -> PresafeClient:
    return PresafeClient(URL, token, http=api.http())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the client ------------------------------------------------------------------------------

def test_submit_reads_yaml_applies_overrides_and_sends_the_key(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("model: embedded:demo-reasoner\nalign:\n  aux:\n    weight: 0.2\n  lr: 1.0e-4\n")
    api = FakeApi({("POST", "/v1/jobs"): (201, job("j1", "PENDING", name="try2", idempotency_key="k-1"))})
    with make(api) as c:
        rec = c.submit(cfg, ["align.aux.weight=0.5", "align.steps=7"], name="try2", idempotency_key="k-1")
    assert isinstance(rec, JobRecord) and rec.id == "j1" and rec.status is JobStatus.PENDING
    req = api.requests[0]
    assert req.url == f"{URL}/v1/jobs" and req.headers["authorization"] == f"Bearer {TOKEN}"
    body = api.body()
    assert body["config"] == {"model": "embedded:demo-reasoner", "align": {"aux": {"weight": 0.5}, "lr": 1e-4, "steps": 7}}
    assert body["name"] == "try2" and body["idempotency_key"] == "k-1"


def test_submit_replay_200_and_dict_config_is_not_mutated():
    api = FakeApi({("POST", "/v1/jobs"): (200, job("j1", "SUCCEEDED", idempotency_key="k"))})
    config = {"align": {"aux": {"weight": 0.2}}}
    rec = make(api).submit(config, ["align.aux.weight=0"], idempotency_key="k")
    assert isinstance(rec, JobRecord) and rec.id == "j1" and rec.status is JobStatus.SUCCEEDED
    assert api.body()["config"]["align"]["aux"]["weight"] == 0
    assert config["align"]["aux"]["weight"] == 0.2


def test_bad_arguments_raise_config_error_before_any_request(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("align:\n  lr: 0.1\n")
    api = FakeApi({})
    with pytest.raises(ConfigError, match="expected key=value"):
        make(api).submit(cfg, ["align.lr"])
    with pytest.raises(ConfigError, match="'lr' is not a section"):
        make(api).submit(cfg, ["align.lr.x=1"])
    with pytest.raises(ConfigError, match="config file not found"):
        make(api).submit(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid JobCreate: name: String should have at most 200"):
        make(api).submit(cfg, name="x" * 201)
    with pytest.raises(ConfigError, match=r"invalid ClassifyRequest: items\[0\]\.color: Extra inputs"):
        make(api).classify([{"prompt": "p", "color": "red"}])
    assert api.requests == []


@pytest.mark.parametrize("status,detail,token,exc,expected", [
    (401, "missing bearer token", None, AuthError, ["missing bearer token", "no token was sent", "HTTP 401"]),
    (401, "unknown token", TOKEN, AuthError, ["unknown token", "does not accept this token"]),
    (403, "token 'ci' lacks scope jobs:write", TOKEN, AuthError, ["lacks scope jobs:write", "lacks the scope"]),
    (404, "job 'nope' not found", TOKEN, NotFound, ["job 'nope' not found", "HTTP 404, POST /v1/jobs"]),
    (413, "too many items: 65 > 64", TOKEN, ApiError, ["too many items: 65 > 64", "HTTP 413"]),
    (422, [{"loc": ["body", "config", "align", "lr"], "msg": "must be > 0", "type": "value_error"},
           {"loc": ["body", "name"], "msg": "String should have at most 200 characters", "type": "string_too_long"},
           {"loc": ["query", "limit"], "msg": "too big", "type": "x"}],
     TOKEN, ApiError,
     ["config.align.lr: must be > 0; name: String should have at most 200 characters; query.limit: too big"]),
])
def test_error_statuses_map_to_exceptions_with_the_server_detail(status, detail, token, exc, expected):
    api = FakeApi({("POST", "/v1/jobs"): (status, {"detail": detail})})
    with pytest.raises(exc) as info:
        make(api, token).submit({"model": "x"})
    assert type(info.value) is exc and isinstance(info.value, PresafeError)
    assert info.value.status == status and info.value.detail == detail
    for text in expected:
        assert text in str(info.value)
    assert "\n" not in str(info.value)
    assert ("authorization" in api.requests[0].headers) == (token is not None)


def test_422_list_indices_and_report_409():
    api = FakeApi({("POST", "/v1/classify"): (422, {"detail": [
                       {"loc": ["body", "items", 3, "prompt"], "msg": "too long (9000 > 8000 characters)"},
                       {"loc": ["body", "config", "prompts", "harmful", "[0]", "path"], "msg": "not found"}]}),
                   ("GET", "/v1/jobs/j1/report"): (409, {"detail": "job j1 has no report yet (RUNNING)"})})
    c = make(api)
    with pytest.raises(ApiError, match=r"items\[3\]\.prompt: too long .*; config\.prompts\.harmful\[0\]\.path: not"):
        c.classify(["x"])
    with pytest.raises(ApiError, match="no report yet") as info:
        c.report("j1")
    assert info.value.status == 409


def test_connection_refused_is_service_unavailable_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with PresafeClient(url, TOKEN, timeout=2) as c, pytest.raises(ServiceUnavailable) as info:
        c.health()
    msg = str(info.value)
    assert msg.startswith(f"presafe service not reachable at {url}: ") and "presafe up" in msg
    assert info.value.exit_code == 1


def test_timeout_is_service_unavailable():
    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    c = PresafeClient(URL, TOKEN, http=httpx.Client(transport=httpx.MockTransport(slow)))
    with pytest.raises(ServiceUnavailable, match="timed out"):
        c.get("j1")


def test_url_and_token_from_env_then_local_state(monkeypatch):
    with pytest.raises(ServiceNotConfigured, match="presafe up"):
        PresafeClient()
    state = types.SimpleNamespace(url="http://127.0.0.1:8123", token="psf_local", dashboard_url="", storage_path="")
    monkeypatch.setattr(client_mod, "_local_state", lambda: state)
    c = PresafeClient()
    assert (c.url, c.token) == ("http://127.0.0.1:8123", "psf_local")
    # Another service's URL never gets the local token.
    assert PresafeClient("http://elsewhere:9000").token is None
    monkeypatch.setenv("PRESAFE_URL", "localhost:9000/v1/")
    monkeypatch.setenv("PRESAFE_TOKEN", "psf_env")
    c = PresafeClient()
    assert (c.url, c.token) == ("http://localhost:9000", "psf_env")
    assert PresafeClient(token="psf_arg").token == "psf_arg"


def test_read_methods_send_the_right_requests():
    api = FakeApi({
        ("GET", "/v1/jobs"): (200, {"items": [job("j1"), job("j2", "FAILED")], "total": 7, "limit": 2, "offset": 4}),
        ("GET", "/v1/jobs/j1/logs"): (200, {"job_id": "j1", "lines": ["a", "b"], "truncated": True}),
        ("DELETE", "/v1/jobs/j1"): (200, job("j1", "CANCELLED")),
        ("POST", "/v1/jobs/j1/resume"): (200, job("j1", "PENDING")),
        ("GET", "/v1/jobs/j1/report"): (200, {"job_id": "j1", "report": {"model": "m"},
                                             "plots": {"metrics": "/v1/jobs/j1/report/plots/metrics.png"}}),
        ("GET", "/v1/jobs/j1/report/plots/metrics.png"): (200, b"\x89PNG..."),
        ("POST", "/v1/classify"): (200, {"model": "clf", "decisions": [{"decision": "refuse", "p_refuse": 0.9},
                                                                         {"decision": "comply", "p_refuse": 0.1}]}),
        ("GET", "/v1/models"): (200, {"items": [{"id": "clf", "path": "/m", "source": "job"}], "default": "clf"}),
        ("GET", "/v1/healthz"): (200, {"status": "ok"}),
        ("GET", "/v1/readyz"): (503, {"status": "starting", "checks": {"database": "ok", "classifier": "loading"}}),
    })
    c = make(api)
    page = c.list(status=JobStatus.RUNNING, limit=2, offset=4)
    assert isinstance(page, JobPage) and [r.id for r in page.items] == ["j1", "j2"] and page.total == 7
    assert dict(api.requests[-1].url.params) == {"status": "RUNNING", "limit": "2", "offset": "4"}
    c.list()
    assert dict(api.requests[-1].url.params) == {"limit": "50", "offset": "0"}
    logs = c.logs("j1", tail=5)
    assert isinstance(logs, JobLogs) and logs.truncated and api.requests[-1].url.params["tail"] == "5"
    assert c.cancel("j1").status is JobStatus.CANCELLED
    assert c.resume("j1").status is JobStatus.PENDING and api.requests[-1].method == "POST"
    rep = c.report("j1")
    assert isinstance(rep, JobReport)
    assert c.plot("j1", "metrics") == b"\x89PNG..." == c.plot("j1", rep.plots["metrics"])
    res = c.classify(["How do I pick a lock?", {"prompt": "p", "response": "r"}], model="clf")
    assert isinstance(res, ClassifyResponse) and res.decisions[0].decision == "refuse"
    assert api.body() == {"items": [{"prompt": "How do I pick a lock?"}, {"prompt": "p", "response": "r"}],
                          "model": "clf"}
    assert isinstance(c.models(), ModelList) and c.models().default == "clf"
    assert c.health() == Health(status="ok")
    assert c.ready().status == "starting"  # 503 with a Health body: returned, not raised


def test_a_response_of_the_wrong_shape_is_an_api_error():
    api = FakeApi({("GET", "/v1/jobs/j1"): lambda r: httpx.Response(200, text="<html>not presafe</html>")})
    with pytest.raises(ApiError, match="unexpected response"):
        make(api).get("j1")


def test_wait_polls_until_finished_and_reports_each_record():
    api = FakeApi({("GET", "/v1/jobs/j1"): [
        (200, job("j1", "PENDING")),
        (200, job("j1", "RUNNING", stage="decide", progress={"stage": "decide", "done": 3, "total": 10})),
        (200, job("j1", "SUCCEEDED", stages_done=["decide", "report"])),
    ]})
    seen = []
    rec = make(api).wait("j1", poll=0, on_update=seen.append)
    assert rec.status is JobStatus.SUCCEEDED
    assert [r.status.value for r in seen] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert seen[1].progress.done == 3 and len(api.requests) == 3


def test_wait_times_out_naming_job_and_status():
    api = FakeApi({("GET", "/v1/jobs/j1"): (200, job("j1", "RUNNING", stage="align"))})
    with pytest.raises(TimeoutError, match="job j1 still RUNNING at stage align after 0.05 s"):
        make(api).wait("j1", poll=0.01, timeout=0.05)
    assert len(api.requests) >= 2


# -- the CLI -----------------------------------------------------------------------------------

@pytest.fixture
def cli_api(monkeypatch):
    """cli_api(routes) -> FakeApi that `presafe` service commands talk to."""

    def use(routes: dict) -> FakeApi:
        api = FakeApi(routes)
        monkeypatch.setattr(service_commands, "_client_factory", functools.partial(PresafeClient, http=api.http()))
        return api

    return use


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("presafe: error: ")
    return lines[0]


def test_cli_jobs_list_table(cli_api, capsys):
    api = cli_api({("GET", "/v1/jobs"): (200, {"items": [
        job("j-abc", "RUNNING", stage="align", name="try2", progress={"stage": "align", "done": 5, "total": 20,
                                                                       "unit": "steps"}),
        job("j-def", "SUCCEEDED")], "total": 2, "limit": 10, "offset": 0})})
    assert main(["jobs", "list", "--url", URL, "--token", TOKEN, "--status", "running", "--limit", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "STATUS", "STAGE", "PROGRESS", "CREATED", "NAME"]
    assert out[1].split()[:6] == ["j-abc", "RUNNING", "align", "5/20", "steps", "(25%)"] and "try2" in out[1]
    assert out[2].split()[:4] == ["j-def", "SUCCEEDED", "-", "-"]
    assert api.requests[0].url.params["status"] == "RUNNING"
    assert api.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_cli_submit_wait_succeeded(cli_api, tmp_path, capsys):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("align:\n  aux:\n    weight: 0.2\n")
    api = cli_api({("POST", "/v1/jobs"): (201, job("j1", "PENDING")),
                   ("GET", "/v1/jobs/j1"): [
                       (200, job("j1", "RUNNING", stage="decide", progress={"stage": "decide", "done": 4, "total": 8})),
                       (200, job("j1", "RUNNING", stage="align", stages_done=["decide"],
                                 progress={"stage": "align", "done": 30, "total": 60, "unit": "steps"})),
                       (200, job("j1", "SUCCEEDED", stages_done=["decide", "align", "report"],
                                 artifacts={"report": "report.md"}))]})
    rc = main(["jobs", "submit", str(cfg), "align.aux.weight=0.5", "--wait", "--poll", "0", "--url", URL,
               "--idempotency-key", "k1"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert out.splitlines()[0] == "j1"
    assert "job j1 SUCCEEDED" in out and "report: /srv/presafe/jobs/j1/report.md" in out
    assert "decide" in err and "4/8" in err and "30/60" in err and "done: decide" in err  # the tqdm bar
    assert api.body(0)["config"]["align"]["aux"]["weight"] == 0.5 and api.body(0)["idempotency_key"] == "k1"


def test_cli_submit_wait_failed_exits_1_with_the_error(cli_api, tmp_path, capsys):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("model: x\n")
    cli_api({("POST", "/v1/jobs"): (201, job("j1", "PENDING")),
             ("GET", "/v1/jobs/j1"): (200, job("j1", "FAILED", stage="signals",
                                               error="refusal rate 0.1 < refusal_floor 0.5"))})
    assert main(["jobs", "submit", str(cfg), "--wait", "--poll", "0", "--url", URL]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == "j1"
    assert "job j1 FAILED at stage signals: refusal rate 0.1 < refusal_floor 0.5" in err
    assert "Traceback" not in err


def test_cli_submit_validation_error_exits_2_with_field_path(cli_api, tmp_path, capsys):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("model: x\n")
    cli_api({("POST", "/v1/jobs"): (422, {"detail": [{"loc": ["body", "config", "align", "lr"],
                                                      "msg": "must be > 0", "type": "value_error"}]})})
    assert main(["jobs", "submit", str(cfg), "--url", URL]) == 2
    assert "config.align.lr: must be > 0" in one_error_line(capsys.readouterr().err)


def test_cli_auth_error_exits_2(cli_api, capsys):
    cli_api({("DELETE", "/v1/jobs/j1"): (403, {"detail": "token 'viewer' lacks scope jobs:write"})})
    assert main(["jobs", "cancel", "j1", "--url", URL, "--token", TOKEN]) == 2
    assert "lacks scope jobs:write" in one_error_line(capsys.readouterr().err)


def test_cli_server_side_failure_exits_1(cli_api, tmp_path, capsys):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("model: x\n")
    cli_api({("POST", "/v1/jobs"): (503, {"detail": "could not launch the job: Ray cluster not reachable"})})
    assert main(["jobs", "submit", str(cfg), "--url", URL]) == 1
    assert "Ray cluster not reachable (HTTP 503, POST /v1/jobs)" in one_error_line(capsys.readouterr().err)


def test_cli_unreachable_service_exits_1_in_one_line(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["jobs", "status", "j1", "--url", url]) == 1
    assert f"not reachable at {url}" in one_error_line(capsys.readouterr().err)
    assert main(["jobs", "list"]) == 1  # nothing configured at all
    assert "presafe up" in one_error_line(capsys.readouterr().err)


def test_cli_status_logs_cancel_report_classify(cli_api, capsys):
    cli_api({
        ("GET", "/v1/jobs/j1"): (200, job("j1", "RUNNING", stage="align", stages_done=["decide"],
                                          metrics={"align": {"loss": 0.123456, "step": 30}})),
        ("GET", "/v1/jobs/j1/logs"): (200, {"job_id": "j1", "lines": ["line 1", "line 2"], "truncated": True}),
        ("DELETE", "/v1/jobs/j1"): (200, job("j1", "SUCCEEDED")),
        ("POST", "/v1/jobs/j1/resume"): (200, job("j1", "PENDING", stages_done=["decide", "signals"],
                                                  submission_id="presafe-j1-attempt2")),
        ("GET", "/v1/jobs/j1/report"): (200, {"job_id": "j1", "report": {
            "job_dir": "/srv/presafe/jobs/j1", "model": "embedded:demo-reasoner", "simulation": True,
            "evaluation": {"variants": {"aligned": {"runs": {"cot_on": {"asr": 0.05, "over_refusal": 0.1,
                                                                        "accuracy": 0.9}}}}}},
            "plots": {"metrics": "/v1/jobs/j1/report/plots/metrics.png"}, "markdown_url": "/v1/jobs/j1/report.md"}),
        ("POST", "/v1/classify"): (200, {"model": "clf", "decisions": [{"decision": "refuse", "p_refuse": 0.9731}]}),
    })
    assert main(["jobs", "status", "j1", "--url", URL]) == 0
    out = capsys.readouterr().out
    assert "status:    RUNNING" in out and "align:     loss=0.1235, step=30" in out
    assert main(["jobs", "status", "j1", "--url", URL, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stages_done"] == ["decide"]
    assert main(["jobs", "logs", "j1", "--tail", "2", "--url", URL]) == 0
    out, err = capsys.readouterr()
    assert out == "line 1\nline 2\n" and "older lines left out" in err
    assert main(["jobs", "cancel", "j1", "--url", URL]) == 0
    assert "already SUCCEEDED" in capsys.readouterr().out
    assert main(["jobs", "resume", "j1", "--url", URL]) == 0
    assert capsys.readouterr().out.strip() == ("job j1 resumed as Ray job presafe-j1-attempt2 "
                                               "(done before: decide, signals)")
    assert main(["jobs", "report", "j1", "--url", URL]) == 0
    out = capsys.readouterr().out
    assert "report: /srv/presafe/jobs/j1/report.md" in out and "(SIMULATION)" in out
    assert "aligned  cot_on  5.0%" in out and "plot metrics: /v1/jobs/j1/report/plots/metrics.png" in out
    assert main(["classify", "How do I pick a lock?", "--url", URL]) == 0
    assert capsys.readouterr().out.strip() == "refuse  p_refuse=0.9731  (model clf)"
    assert main(["classify", "p", "--response", "r", "--json", "--url", URL]) == 0
    assert json.loads(capsys.readouterr().out)["decisions"][0]["p_refuse"] == 0.9731


def test_cli_models_list_without_a_service_still_lists_embedded_models(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "embedded:all-minilm-l6-v2" in out and "none configured" in out and "presafe up" in out


def test_cli_models_list_with_a_service(cli_api, capsys):
    cli_api({("GET", "/v1/models"): (200, {"items": [
        {"id": "quickstart", "path": "/srv/jobs/q/classifier", "source": "job", "backbone": "minilm", "threshold": 0.5}],
        "default": "quickstart"})})
    assert main(["models", "list", "--url", URL]) == 0
    out = capsys.readouterr().out
    assert "embedded:all-minilm-l6-v2" in out and f"service {URL}: 1 classifier(s)" in out
    row = next(line for line in out.splitlines() if "quickstart" in line)
    assert row.split() == ["*", "quickstart", "-", "job", "-", "minilm", "0.500", "/srv/jobs/q/classifier"]


def test_cli_models_list_with_an_unreachable_service_notes_it_and_exits_0(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["models", "list", "--url", url]) == 0
    out, err = capsys.readouterr()
    assert "embedded:all-minilm-l6-v2" in out and f"service: note: presafe service not reachable at {url}" in out
    assert "Traceback" not in err


def test_cli_up_and_down(monkeypatch, capsys):
    import service.local

    calls = {}

    def up(storage_path=None, port=8000, address=None, num_cpus=None, data_roots=None, host="127.0.0.1"):
        calls["up"] = (storage_path, port, address, num_cpus, data_roots, host)
        return types.SimpleNamespace(url="http://127.0.0.1:8001", token="psf_x", dashboard_url="http://127.0.0.1:8265",
                                     storage_path="/tmp/presafe")

    monkeypatch.setattr(service.local, "up", up)
    monkeypatch.setattr(service.local, "down", lambda: True)
    assert main(["up", "--port", "8001", "--storage", "/tmp/presafe", "--num-cpus", "2", "--data-root", "/d1",
                 "--data-root", "/d2", "--host", "0.0.0.0"]) == 0
    out = capsys.readouterr().out
    assert calls["up"] == ("/tmp/presafe", 8001, None, 2, ["/d1", "/d2"], "0.0.0.0")
    assert "export PRESAFE_URL=http://127.0.0.1:8001 PRESAFE_TOKEN=psf_x" in out
    assert "http://127.0.0.1:8265" in out
    assert main(["down"]) == 0
    assert "stopped" in capsys.readouterr().out


def test_cli_jobs_queue_and_promote(cli_api, capsys):
    cli_api({("GET", "/v1/queue"): (200, {"items": [
        {"position": 2, "id": "j-q", "owner": "alice", "priority": 0, "created_at": "2026-11-28T10:00:00Z",
         "reason": "owner 'alice' has 2 job(s) running; its quota is 2"}], "total": 3}),
        ("POST", "/v1/models/j-q/promote"): (200, {"model": "j-q", "promoted_by": "root",
                                                   "promoted_at": "2026-11-28T10:00:00Z"})})
    assert main(["jobs", "queue", "--url", URL]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["POS", "ID", "OWNER", "PRIORITY"] and out[1].split()[:4] == ["2", "j-q", "alice", "0"]
    assert "its quota is 2" in out[1] and out[-1] == "(3 queued in all)"
    assert main(["jobs", "promote", "j-q", "--url", URL]) == 0
    assert "j-q is the service's default classifier now (promoted by root" in capsys.readouterr().out


def test_cli_token_file_keeps_the_token_out_of_the_arguments(cli_api, tmp_path, capsys):
    api = cli_api({("GET", "/v1/queue"): (200, {"items": [], "total": 0})})
    (tmp_path / "tok").write_text("psf_secret\n")
    seen = {}
    real = service_commands._client_factory
    service_commands._client_factory = lambda url, token: seen.update(token=token) or real(url=url, token=token)
    try:
        assert main(["jobs", "queue", "--url", URL, "--token-file", str(tmp_path / "tok")]) == 0
    finally:
        service_commands._client_factory = real
    assert seen["token"] == "psf_secret" and api is not None


def test_tokens_add_list_revoke_edit_the_file_the_service_rereads(tmp_path, capsys):
    import argparse

    import yaml

    from service.auth import Authenticator
    from service.settings import ServiceSettings

    def tokens(*argv) -> int:
        parser = argparse.ArgumentParser()
        service_commands.add_parsers(parser.add_subparsers(dest="command"))
        return service_commands.tokens_command(parser.parse_args(["tokens", *argv]))

    f = tmp_path / "tokens.yaml"
    assert tokens("add", "alice", "--scopes", "jobs:read", "jobs:write", "--max-running", "3", "--file", str(f)) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("psf_") and token not in f.read_text() and (f.stat().st_mode & 0o777) == 0o600
    assert yaml.safe_load(f.read_text())[0]["max_running_jobs"] == 3
    auth = Authenticator(ServiceSettings(storage_path=str(tmp_path), tokens_file=str(f)))
    assert auth.owner(f"Bearer {token}", "jobs:write") == "alice"
    assert tokens("add", "bob", "--out", str(tmp_path / "bob.tok"), "--file", str(f)) == 0
    assert (tmp_path / "bob.tok").read_text().startswith("psf_") and "psf_" not in capsys.readouterr().out
    assert tokens("list", "--file", str(f)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["alice", "jobs:read,jobs:write", "3", "0"] and out[2].split()[0] == "bob"
    with pytest.raises(PresafeError, match="has a token already"):
        tokens("add", "alice", "--file", str(f))
    assert tokens("revoke", "alice", "--file", str(f)) == 0
    with pytest.raises(Exception, match="unknown or revoked"):
        auth.owner(f"Bearer {token}", "jobs:write")
    with pytest.raises(PresafeError, match="no token named 'alice'"):
        tokens("revoke", "alice", "--file", str(f))
