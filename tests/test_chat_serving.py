"""Serving a job's models from the job service (POST / GET / DELETE /v1/jobs/{id}/serve) as
plain objects: the API with a recording deployer instead of Ray Serve (who may deploy, which
jobs and variants, the limits, the status), the chat app's owner restriction with a scripted
engine, the Ray deployer's arguments with `serve.run` patched, and the CLI. No Ray, no vLLM."""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clients import service_commands
from clients.cli import main
from clients.client import PresafeClient
from jobs.config import from_dict
from service.api import create_api
from service.auth import Authenticator, Principal
from service.chat_serving import DEPLOY_GRACE_S, ChatServing, RayChatDeployer
from service.classifiers import ModelRegistry
from service.job_service import JobService
from service.metrics import ServiceMetrics
from service.schemas import JobCreate
from service.settings import ServiceSettings, hash_token
from service.store import JobStore, served_models
from tests.test_metrics import FakeBackend
from tests.test_service_sharing import FakeLauncher, smoke

TOKENS = {"alice": "t-alice-0123456789", "bob": "t-bob-0123456789", "carol": "t-carol-0123456789",
          "root": "t-root-0123456789"}


class FakeDeployer:
    """Ray Serve as a dict of application states; tests set them by hand."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict]] = []
        self.states: dict[str, tuple[str | None, str]] = {}
        self.undeployed: list[str] = []
        self.fail: Exception | None = None
        self.starts = "DEPLOYING"

    def deploy(self, name, route_prefix, args):
        if self.fail is not None:
            raise self.fail
        self.calls.append((name, route_prefix, args))
        self.states[name] = (self.starts, "")

    def status(self, name):
        return self.states.get(name, (None, ""))

    def undeploy(self, name):
        self.undeployed.append(name)
        self.states.pop(name, None)


class Service:
    """The job API over a fake launcher and a fake deployer; `as_(name)` is a client with that token."""

    def __init__(self, tmp_path: Path, **serving):
        tokens = [{"name": n, "sha256": hash_token(t), **({"scopes": ["admin"]} if n == "root" else {})}
                  for n, t in TOKENS.items()]
        self.settings = ServiceSettings.model_validate({
            "storage_path": str(tmp_path / "storage"), "tokens": tokens, "tokens_file": str(tmp_path / "tokens.yaml"),
            "queue": {"max_running_per_owner": 10}, "serving": {"enabled": True, **serving}})
        self.launcher, self.deployer = FakeLauncher(), FakeDeployer()
        self.metrics = ServiceMetrics(FakeBackend)
        store = JobStore(self.settings.db_url)
        self.jobs = JobService(self.settings, store, self.launcher)
        self.serving = ChatServing(self.settings, store, self.jobs, self.deployer, self.metrics)

        async def classify(path, prompts, responses):
            return []

        async def ready():
            return {"store": "ok"}

        self.app = create_api(self.settings, self.jobs, ModelRegistry(self.settings, store), classify, ready,
                              metrics=self.metrics, serving=self.serving)

    def as_(self, name: str) -> TestClient:
        return TestClient(self.app, headers={"Authorization": f"Bearer {TOKENS[name]}"})

    def job(self, owner: str = "alice", finished: bool = True, variants=("adapter",), classifier: bool = False) -> str:
        """A job of `owner`, SUCCEEDED with config.json and the adapter folders `variants` (or RUNNING)."""
        record, _ = self.jobs.submit(JobCreate(config=smoke()), Principal(owner))
        self.jobs.schedule()
        if finished:
            self.launcher.finish(record.id)
        record = self.jobs.get(record.id, Principal(owner))
        folder = Path(record.job_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(record.config))
        for name in variants:
            (folder / name).mkdir()
            (folder / name / "adapter_config.json").write_text("{}")
        if classifier:
            (folder / "classifier").mkdir()
            (folder / "classifier" / "meta.json").write_text("{}")
        return record.id


def test_the_owner_deploys_a_finished_job_and_the_deployer_gets_its_folder_variant_and_route(tmp_path):
    svc = Service(tmp_path, chat={"engine": {"max_model_len": 2048}, "limits": {"max_tokens": 256}})
    job_id = svc.job(variants=("adapter", "adapter_lambda0"), classifier=True)
    r = svc.as_("alice").post(f"/v1/jobs/{job_id}/serve", json={"variant": "lambda0", "gate": "classify",
                                                                "thinking": "off"})
    assert r.status_code == 202, r.text
    rec = r.json()
    assert rec["status"] == "DEPLOYING" and rec["url"] == f"/chat/{job_id}/v1" and rec["owner"] == "alice"
    assert rec["models"] == [job_id, f"{job_id}:base", f"{job_id}:aligned", f"{job_id}:lambda0"]
    [(name, route, args)] = svc.deployer.calls
    assert name == f"presafe-chat-{job_id}" and route == f"/chat/{job_id}"
    config = args["config"]
    assert config["job"] == str(Path(svc.settings.storage_path) / "jobs" / job_id)
    assert (config["variant"], config["gate"], config["thinking"], config["owner"]) == (
        "lambda0", "classify", "off", "alice")
    assert config["engine"] == {"max_model_len": 2048} and config["limits"] == {"max_tokens": 256}  # serving.chat
    # the service's own tokens, so the same bearer tokens work on the chat routes
    assert config["tokens_file"] == str(tmp_path / "tokens.yaml") and config["auth_disabled"] is False
    assert {t["name"] for t in args["tokens"]} == set(TOKENS)
    from service.chat_deployment import ChatAppArgs  # what build_chat_app validates them with
    from service.chat import ServeModelConfig

    from_dict(ServeModelConfig, ChatAppArgs.model_validate(args).config)
    assert svc.metrics.served.values[("DEPLOYING",)] == 1
    # READY once Ray Serve says the application is RUNNING
    svc.deployer.states[name] = ("RUNNING", "")
    assert svc.as_("alice").get(f"/v1/jobs/{job_id}/serve").json()["status"] == "READY"
    # POST again: redeployed in place with the new options (the same app name, no second place taken)
    r = svc.as_("alice").post(f"/v1/jobs/{job_id}/serve", json={"variant": "base"})
    assert r.status_code == 202 and r.json()["variant"] == "base" and r.json()["status"] == "DEPLOYING"
    assert len(svc.deployer.calls) == 2 and svc.deployer.calls[1][0] == name
    assert svc.deployer.calls[1][2]["config"]["gate"] == "off"


def test_other_principals_get_404_and_admins_act_on_any_job(tmp_path):
    svc = Service(tmp_path)
    job_id = svc.job("alice")
    for method in ("post", "get", "delete"):
        kw = {"json": {}} if method == "post" else {}
        r = getattr(svc.as_("bob"), method)(f"/v1/jobs/{job_id}/serve", **kw)
        assert r.status_code == 404 and r.json()["detail"] == f"no job {job_id!r}", (method, r.text)
    assert svc.deployer.calls == []
    r = svc.as_("root").post(f"/v1/jobs/{job_id}/serve", json={})
    assert r.status_code == 202 and r.json()["owner"] == "alice"
    assert svc.deployer.calls[0][2]["config"]["owner"] == "alice"  # the job's owner uses it, not the admin only
    assert svc.as_("alice").get(f"/v1/jobs/{job_id}/serve").json()["variant"] == "aligned"
    assert svc.as_("root").delete(f"/v1/jobs/{job_id}/serve").json()["status"] == "DELETED"


def test_a_job_submitted_while_auth_was_disabled_is_served_to_admins_only(tmp_path):
    from service.auth import ANONYMOUS

    svc = Service(tmp_path)
    job_id = svc.job(ANONYMOUS)  # auth disabled at submit: every request was "anonymous"
    assert svc.as_("alice").post(f"/v1/jobs/{job_id}/serve", json={}).status_code == 404
    r = svc.as_("root").post(f"/v1/jobs/{job_id}/serve", json={})
    assert r.status_code == 202, r.text
    config = svc.deployer.calls[0][2]["config"]
    assert (config["owner"], config["admins_only"]) == ("", True)
    alice = svc.job("alice")
    svc.as_("alice").post(f"/v1/jobs/{alice}/serve", json={})
    assert svc.deployer.calls[1][2]["config"]["admins_only"] is False
    # and no token can be named after that principal, to own such jobs
    with pytest.raises(ValueError, match="'anonymous' is reserved"):
        ServiceSettings.model_validate({"tokens": [{"name": ANONYMOUS, "sha256": "0" * 64}]})


def test_an_unfinished_job_is_409_naming_its_state(tmp_path):
    svc = Service(tmp_path)
    job_id = svc.job(finished=False)
    r = svc.as_("alice").post(f"/v1/jobs/{job_id}/serve", json={})
    assert r.status_code == 409
    assert r.json()["detail"] == f"job {job_id} is RUNNING: only a SUCCEEDED job can be served"


def test_bad_requests_are_422_naming_the_field(tmp_path):
    svc = Service(tmp_path)
    job_id = svc.job(variants=("adapter",))  # smoke.yaml has the ablation: lambda0 is a variant, untrained here
    alice = svc.as_("alice")

    def error(body: dict) -> dict:
        r = alice.post(f"/v1/jobs/{job_id}/serve", json=body)
        assert r.status_code == 422, r.text
        return r.json()["detail"][0]

    e = error({"variant": "lambda0"})
    assert e["loc"] == ["body", "variant"]
    assert "'lambda0' is not a trained variant" in e["msg"] and "(servable: base, aligned)" in e["msg"]
    assert error({"variant": "../adapter"})["loc"] == ["body", "variant"]
    assert error({"variant": "x" * 101})["loc"] == ["body", "variant"]
    assert error({"gate": "always"})["loc"] == ["body", "gate"]
    assert error({"thinking": "maybe"})["loc"] == ["body", "thinking"]
    assert error({"replicas": 8})["loc"] == ["body", "replicas"]  # extra fields are refused
    e = error({"gate": "enforce"})  # the job trained no decision classifier
    assert e["loc"] == ["body", "gate"] and "needs a decision classifier" in e["msg"]
    assert svc.deployer.calls == [] and svc.serving.store.served() == []


def test_limits_per_principal_and_per_service_are_409_naming_the_setting(tmp_path):
    svc = Service(tmp_path, max_models=2, max_models_per_owner=1)
    a1, a2, b1, c1 = svc.job("alice"), svc.job("alice"), svc.job("bob"), svc.job("carol")
    assert svc.as_("alice").post(f"/v1/jobs/{a1}/serve", json={}).status_code == 202
    r = svc.as_("alice").post(f"/v1/jobs/{a2}/serve", json={})
    assert r.status_code == 409
    assert r.json()["detail"].startswith(f"alice serves 1 job(s) already ({a1}); the limit per principal is 1 "
                                         "(serving.max_models_per_owner)")
    assert svc.as_("bob").post(f"/v1/jobs/{b1}/serve", json={}).status_code == 202
    r = svc.as_("carol").post(f"/v1/jobs/{c1}/serve", json={})
    assert r.status_code == 409
    assert r.json()["detail"].startswith("the service serves its maximum of 2 model(s) at once (serving.max_models)")
    assert [c[0] for c in svc.deployer.calls] == [f"presafe-chat-{a1}", f"presafe-chat-{b1}"]  # refused: never deployed
    assert svc.as_("alice").post(f"/v1/jobs/{a1}/serve", json={"variant": "base"}).status_code == 202  # in place
    assert svc.as_("alice").delete(f"/v1/jobs/{a1}/serve").status_code == 200  # frees alice's place
    assert svc.as_("alice").post(f"/v1/jobs/{a2}/serve", json={}).status_code == 202
    assert {r.job_id for r in svc.serving.store.served()} == {a2, b1}


def test_delete_undeploys_and_the_job_is_no_longer_served(tmp_path):
    svc = Service(tmp_path)
    job_id = svc.job()
    alice = svc.as_("alice")
    r = alice.get(f"/v1/jobs/{job_id}/serve")
    assert r.status_code == 404 and "is not served (POST" in r.json()["detail"]
    alice.post(f"/v1/jobs/{job_id}/serve", json={})
    r = alice.delete(f"/v1/jobs/{job_id}/serve")
    assert r.status_code == 200 and r.json()["status"] == "DELETED"
    assert svc.deployer.undeployed == [f"presafe-chat-{job_id}"]
    assert alice.get(f"/v1/jobs/{job_id}/serve").status_code == 404
    assert alice.delete(f"/v1/jobs/{job_id}/serve").status_code == 404
    assert svc.metrics.served.values[("DEPLOYING",)] == 0


def test_status_follows_ray_serve_and_failures_are_recorded(tmp_path):
    svc = Service(tmp_path, max_models=5, max_models_per_owner=5)
    alice = svc.as_("alice")
    failed, gone, refused = svc.job(), svc.job(), svc.job()
    for job_id in (failed, gone):
        alice.post(f"/v1/jobs/{job_id}/serve", json={})
    svc.deployer.states[f"presafe-chat-{failed}"] = ("DEPLOY_FAILED", "vllm: out of memory")
    rec = alice.get(f"/v1/jobs/{failed}/serve").json()
    assert rec["status"] == "FAILED" and rec["error"] == "Ray Serve: DEPLOY_FAILED: vllm: out of memory"
    # an application Ray does not list: still DEPLOYING while another replica may be building it, then FAILED
    del svc.deployer.states[f"presafe-chat-{gone}"]
    assert alice.get(f"/v1/jobs/{gone}/serve").json()["status"] == "DEPLOYING"
    with svc.serving.store._engine.begin() as conn:  # age the record past the grace period
        old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=DEPLOY_GRACE_S + 1)
        conn.execute(served_models.update().where(served_models.c.job_id == gone).values(updated_at=old))
    rec = alice.get(f"/v1/jobs/{gone}/serve").json()
    assert rec["status"] == "FAILED" and "has no application" in rec["error"]
    # Ray Serve refusing the app: a FAILED record saying why, not a 500
    svc.deployer.fail = RuntimeError("no Serve controller")
    r = alice.post(f"/v1/jobs/{refused}/serve", json={})
    assert r.status_code == 202 and r.json()["status"] == "FAILED"
    assert r.json()["error"] == "Ray Serve did not accept the app: RuntimeError: no Serve controller"
    assert svc.metrics.served.values[("FAILED",)] == 3


def test_serving_off_by_default_is_a_clear_404(tmp_path):
    svc = Service(tmp_path)
    job_id = svc.job()
    svc.settings.serving.enabled = False
    for method in ("post", "get", "delete"):
        kw = {"json": {}} if method == "post" else {}
        r = getattr(svc.as_("alice"), method)(f"/v1/jobs/{job_id}/serve", **kw)
        assert r.status_code == 404 and "serving.enabled is false" in r.json()["detail"], (method, r.text)
    assert ServiceSettings().serving.enabled is False
    # serving.chat: ServeModelConfig fields, checked when the settings load; the per-job ones are the service's
    for chat, says in (({"port": 1}, "port: set by the service"), ({"engin": {}}, "did you mean 'engine'"),
                       ({"cpus": 0}, "cpus: must be > 0")):
        with pytest.raises(ValueError, match=says):
            ServiceSettings(serving={"chat": chat})
    # an API built without a deployer says so too
    app = create_api(svc.settings, svc.jobs, ModelRegistry(svc.settings, svc.jobs.store), None, None)
    r = TestClient(app).post(f"/v1/jobs/{job_id}/serve", json={}, headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    assert r.status_code == 404 and "does not serve models" in r.json()["detail"]


def test_the_chat_app_answers_only_the_jobs_owner_and_admins(tmp_path, tiny_lm_factory):
    from transformers import AutoTokenizer

    from service.chat import ChatService, ServedJob, ServeModelConfig, create_chat_api
    from tests.test_serve_model import ScriptedEngine

    svc = Service(tmp_path)
    job_id = svc.job()
    folder = Path(svc.settings.storage_path) / "jobs" / job_id
    model = tiny_lm_factory("r1")
    (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()),
                                                    "model": model}))
    engine = ScriptedEngine("x</think> 42")
    config = from_dict(ServeModelConfig, {"job": str(folder), "owner": "alice"})
    chat = ChatService(config, ServedJob.load(str(folder)), AutoTokenizer.from_pretrained(model), engine)
    app = create_chat_api(chat, Authenticator(svc.settings))
    ask = {"model": job_id, "messages": [{"role": "user", "content": "12 + 30?"}], "max_tokens": 8}

    def as_(name: str) -> TestClient:
        return TestClient(app, headers={"Authorization": f"Bearer {TOKENS[name]}"})

    for name in ("alice", "root"):
        assert as_(name).get("/v1/models").status_code == 200
        r = as_(name).post("/v1/chat/completions", json=ask)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "42", r.text
    for path, kw in (("/v1/models", {}), ("/v1/chat/completions", {"json": ask})):
        r = (as_("bob").post if kw else as_("bob").get)(path, **kw)
        assert r.status_code == 404 and r.json()["detail"] == f"no models of job {job_id!r} are served for this token"
    assert len(engine.calls) == 2  # bob's request never reached the engine
    assert TestClient(app).get("/v1/models").status_code == 401
    # admins only (a job without an owner, deployed by the service): bob is turned away, root is not
    admins = create_chat_api(ChatService(from_dict(ServeModelConfig, {"job": str(folder), "admins_only": True}),
                                         chat.served, chat.tokenizer, engine), Authenticator(svc.settings))
    for name, status in (("bob", 404), ("alice", 404), ("root", 200)):
        r = TestClient(admins).get("/v1/models", headers={"Authorization": f"Bearer {TOKENS[name]}"})
        assert r.status_code == status, (name, r.text)
    # without an owner (presafe serve-model), any token with scope classify
    open_app = create_chat_api(ChatService(from_dict(ServeModelConfig, {"job": str(folder)}), chat.served,
                                           chat.tokenizer, engine), Authenticator(svc.settings))
    assert TestClient(open_app).get("/v1/models", headers={"Authorization": f"Bearer {TOKENS['bob']}"}
                                    ).status_code == 200


def test_the_ray_deployer_runs_build_chat_app_with_the_service_args(monkeypatch):
    import ray.serve

    import service.chat_deployment

    built, ran = [], []
    monkeypatch.setattr(service.chat_deployment, "build_chat_app", lambda args: built.append(args) or "APP")
    monkeypatch.setattr(ray.serve, "run", lambda app, **kw: ran.append((app, kw)))
    deployer = RayChatDeployer()
    args = {"config": {"job": "/s/jobs/j1", "variant": "aligned", "owner": "alice"}, "tokens": []}
    deployer.deploy("presafe-chat-j1", "/chat/j1", args)
    deployer._threads["presafe-chat-j1"].join(10)
    assert built == [args] and ran == [("APP", {"name": "presafe-chat-j1", "route_prefix": "/chat/j1"})]

    def broken(args):
        raise FileNotFoundError("no config.json")

    monkeypatch.setattr(service.chat_deployment, "build_chat_app", broken)
    deployer.deploy("presafe-chat-j2", "/chat/j2", args)
    deployer._threads["presafe-chat-j2"].join(10)
    assert deployer.status("presafe-chat-j2") == ("DEPLOY_FAILED", "FileNotFoundError: no config.json")


def test_cli_serves_and_unserves_a_job(tmp_path, monkeypatch, capsys):
    svc = Service(tmp_path)
    job_id = svc.job(variants=("adapter", "adapter_lambda0"))
    monkeypatch.setattr(service_commands, "_client_factory",
                        functools.partial(PresafeClient, http=TestClient(svc.app, base_url="http://svc")))
    auth = ["--url", "http://svc", "--token", TOKENS["alice"]]
    assert main(["jobs", "serve", job_id, "--variant", "lambda0", "--thinking", "off", *auth]) == 0
    out = capsys.readouterr().out
    assert f"job {job_id}: DEPLOYING, variant lambda0 (gate off, thinking off)" in out
    assert f"OpenAI base URL: http://svc/chat/{job_id}/v1" in out
    svc.deployer.starts = "RUNNING"  # the redeploy is up by the first poll
    assert main(["jobs", "serve", job_id, "--wait", "--poll", "0.01", *auth]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"job {job_id}: READY"
    assert main(["jobs", "serve", job_id, "--variant", "sweep_x", *auth]) == 2
    assert "variant: 'sweep_x' is not a trained variant" in capsys.readouterr().err
    assert main(["jobs", "unserve", job_id, *auth]) == 0
    assert f"job {job_id}: its chat app is undeployed" in capsys.readouterr().out
    assert svc.deployer.undeployed == [f"presafe-chat-{job_id}"]
