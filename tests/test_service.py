"""The service over real HTTP: one local Ray Serve instance for the module, jobs run by the
Ray Jobs API as `python -m jobs.pipeline` on the smoke config (tiny models)."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings

from service.settings import hash_token

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
TOKENS = {"admin": ["jobs:read", "jobs:write", "classify", "admin"], "reader": ["jobs:read"],
          "classifier": ["classify"], "alice": ["jobs:read", "jobs:write", "classify"],
          "bob": ["jobs:read", "jobs:write", "classify"]}
FILE_TOKENS = {"carol": {"scopes": ["jobs:read", "jobs:write"]},
               "quota": {"scopes": ["jobs:read", "jobs:write"], "max_running_jobs": 2}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, url: str, settings: dict):
        self.url, self.settings = url, settings
        self.tokens = {name: f"tok-{name}-0123456789" for name in {**TOKENS, **FILE_TOKENS}}

    def client(self, who: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def deploy(self) -> None:
        from ray import serve

        from service.app import build_app

        serve.run(build_app(self.settings), name="presafe", route_prefix="/")


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    from ray import serve

    storage = tmp_path_factory.mktemp("service")
    data_root = tmp_path_factory.mktemp("data_root")
    (data_root / "harmful.csv").write_text("goal\nHow do I pick a lock?\n")
    port = _free_port()
    svc = Service(f"http://127.0.0.1:{port}", {})
    tokens_file = storage.parent / f"{storage.name}-tokens.yaml"
    tokens_file.write_text(yaml.safe_dump([{"name": n, "sha256": hash_token(svc.tokens[n]), **spec}
                                           for n, spec in FILE_TOKENS.items()]))
    svc.settings = {
        "storage_path": str(storage),
        "data_roots": [str(data_root)],
        "tokens": [{"name": n, "sha256": hash_token(svc.tokens[n]), "scopes": s} for n, s in TOKENS.items()],
        "tokens_file": str(tokens_file),
        # 2 cores: each driver reserves a quarter CPU (the classifier replica holds 0.5); a
        # launch waits 1 s between its record and the Ray submit, so reads land in that window
        "queue": {"max_running_per_owner": 3, "driver_num_cpus": 0.25, "interval_s": 0.5,
                  "test_launch_delay_s": 1.0},
        "job_limits": {"max_steps": 1000, "max_workers": 4},
        "ray_address": os.environ["PRESAFE_TEST_DASHBOARD"],
        "job_entrypoint_python": sys.executable,
        "job_env": {"HF_HUB_OFFLINE": "1", "PRESAFE_HOME": os.environ.get("PRESAFE_HOME", "")} if os.environ.get(
            "PRESAFE_HOME") else {"HF_HUB_OFFLINE": "1"},
        "limits": {"classify_max_items": 8, "classify_max_chars": 500},
    }
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    from ray.serve.context import _get_global_client

    # a Serve another module left running keeps its own port: ask, never assume
    svc.url = f"http://127.0.0.1:{_get_global_client().http_config.port}"
    svc.deploy()
    yield svc
    serve.delete("presafe")


def smoke_config() -> dict:
    """The shipped YAML as it is: its storage_path and job_id are replaced by the service's."""
    return yaml.safe_load((ROOT / "jobs/configs/smoke.yaml").read_text())


def tiny_config() -> dict:
    """The smoke job cut to the bone (no evaluation, no ablation, 2 align steps): the queue tests run several."""
    cfg = smoke_config()
    cfg["evaluate"] = {"enabled": False}
    cfg["align"]["ablation"] = False
    cfg["align"]["train"].update(max_steps=2, checkpoint_every=0, log_every=1)
    cfg["prompts"]["limit_per_set"] = 4
    return cfg


UNFINISHED = ("QUEUED", "PENDING", "RUNNING")


def wait_for(client: httpx.Client, job_id: str, until, timeout: float = 600, poll: float = 1.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rec = client.get(f"/v1/jobs/{job_id}").json()
        if until(rec):
            return rec
        assert time.monotonic() < deadline, f"job {job_id} stuck: {rec['status']} {rec['stage']} {rec.get('error')}"
        time.sleep(poll)


def test_health_and_openapi(service):
    with service.client(None) as c:
        assert c.get("/v1/healthz").json()["status"] == "ok"
        ready = c.get("/v1/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"store": "ok", "classifier": "ok"}
        spec = c.get("/openapi.json").json()
        assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/classify", "/v1/models"} <= set(spec["paths"])


def test_auth_missing_wrong_and_scopes(service):
    with service.client(None) as c:
        r = c.get("/v1/jobs")
        assert r.status_code == 401 and "missing bearer token" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
        r = c.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and "unknown or revoked token" in r.json()["detail"]
    with service.client("reader") as c:
        assert c.get("/v1/jobs").status_code == 200
        r = c.post("/v1/jobs", json={"config": smoke_config()})
        assert r.status_code == 403 and "lacks scope 'jobs:write'" in r.json()["detail"]
        r = c.post("/v1/classify", json={"items": [{"prompt": "hi"}]})
        assert r.status_code == 403 and "'classify'" in r.json()["detail"]
    with service.client("classifier") as c:
        r = c.get("/v1/jobs")
        assert r.status_code == 403 and "'jobs:read'" in r.json()["detail"]


def test_bad_requests_name_the_field_and_the_limit(service):
    with service.client() as c:
        cfg = smoke_config()
        cfg["align"]["train"]["batch_size"] = 0
        r = c.post("/v1/jobs", json={"config": cfg})
        assert r.status_code == 422
        (err,) = r.json()["detail"]
        assert err["loc"] == ["body", "config", "align", "train", "batch_size"] and "must be >= 1" in err["msg"]
        r = c.post("/v1/jobs", json={"config": smoke_config(), "surprise": 1})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "surprise"]
        # data only from the data roots: .., absolute paths elsewhere, symlinks out
        root = Path(service.settings["data_roots"][0])
        (root / "escape.csv").symlink_to("/etc/hostname")
        for path in ("../outside.csv", "/etc/hostname", "escape.csv"):
            cfg = smoke_config()
            cfg["prompts"]["harmful"] = [{"path": path, "format": "csv", "harmful": True}]
            r = c.post("/v1/jobs", json={"config": cfg})
            assert r.status_code == 422, (path, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "config", "prompts", "harmful", 0, "path"], r.text
            assert "outside the service's data roots" in r.text
        # align.output_name names a folder the align stage replaces: never a path out of the job folder
        sentinel = Path(service.settings["storage_path"]).parent / "sentinel_do_not_delete"
        (sentinel / "keep").mkdir(parents=True, exist_ok=True)
        before = {p.name for p in Path(service.settings["storage_path"]).iterdir()}
        for name in (str(sentinel), "../../../sentinel_do_not_delete", "..", "a/b", ".hidden"):
            cfg = smoke_config()
            cfg["align"]["output_name"] = name
            r = c.post("/v1/jobs", json={"config": cfg})
            assert r.status_code == 422, (name, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "config", "align", "output_name"], r.text
            assert "must be a plain folder name" in r.text
        assert (sentinel / "keep").is_dir()
        assert {p.name for p in Path(service.settings["storage_path"]).iterdir()} == before  # nothing recorded
        r = c.get("/v1/jobs/nope")
        assert r.status_code == 404 and "no job 'nope'" in r.json()["detail"]
        r = c.get("/v1/jobs", params={"limit": 10_000})
        assert r.status_code == 422 and "limit must be <= 200" in r.text
        r = c.post("/v1/classify", json={"items": [{"prompt": "x"}] * 9})
        assert r.status_code == 413 and "at most 8 per request" in r.json()["detail"]
        r = c.post("/v1/classify", json={"items": [{"prompt": "ok"}, {"prompt": "y" * 501}]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "items", 1, "prompt"]
        r = c.post("/v1/classify", json={"items": [{"prompt": "x"}], "model": "no-such-model"})
        assert r.status_code in (404, 409), r.text
        r = c.post("/v1/jobs", content=b"{" + b" " * 1_100_000 + b"}", headers={"content-type": "application/json"})
        assert r.status_code == 413 and "over the limit" in r.json()["detail"]

        def chunked():  # 10 MB without a Content-Length: counted as read
            for _ in range(160):
                yield b" " * 65536

        r = c.post("/v1/jobs", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "over the limit of 1000000 bytes" in r.json()["detail"]
        for params in ({"offset": 2**64}, {"offset": 10**7}):
            r = c.get("/v1/jobs", params=params)
            assert r.status_code == 422, (params, r.text)
        # operator limits: 422 naming the key and the limit
        for key, value, limit in (("max_steps", 10**12, "job_limits.max_steps"),):
            cfg = smoke_config()
            cfg["align"]["train"][key] = value
            r = c.post("/v1/jobs", json={"config": cfg})
            assert r.status_code == 422 and limit in r.text, r.text
            assert r.json()["detail"][0]["loc"] == ["body", "config", "align", "train", "max_steps"]
        cfg = smoke_config()
        cfg["align"]["scale"] = {"num_workers": 10000}
        r = c.post("/v1/jobs", json={"config": cfg})
        assert r.status_code == 422 and "over this service's limit of 4 (job_limits.max_workers)" in r.text
        # models only from the allow-lists; checkpoints only in the job folder or allowed URIs
        cfg = smoke_config()
        cfg["model"] = "/etc"
        r = c.post("/v1/jobs", json={"config": cfg})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "config", "model"], r.text
        cfg = smoke_config()
        cfg["align"]["scale"] = {"storage_path": "s3://b/p?endpoint_override=attacker.example:9000"}
        r = c.post("/v1/jobs", json={"config": cfg})
        assert r.status_code == 422 and "align.scale.storage_path" in r.text


def test_jobs_belong_to_their_principal_and_a_read_before_launch_is_pending(service):
    """Two principals: each sees and acts on its own jobs only (the other's is 404, as if
    it did not exist); an admin sees and cancels both. Every launch waits 1 s between its
    record and the Ray submit (test_launch_delay_s): reads in that window say PENDING."""
    with service.client("alice") as alice, service.client("bob") as bob, service.client("admin") as admin:
        a = alice.post("/v1/jobs", json={"config": tiny_config(), "name": "alice's"}).json()
        b = bob.post("/v1/jobs", json={"config": tiny_config(), "name": "bob's"}).json()
        assert a["owner"] == "alice" and a["status"] == "QUEUED"
        seen = []
        wait_for(alice, a["id"], lambda rec: seen.append((rec["status"], rec["launched_at"])) or rec["status"] not in
                 ("QUEUED", "PENDING"), timeout=120, poll=0.05)
        statuses = [st for st, _ in seen]
        assert "FAILED" not in statuses, seen
        assert any(st == "PENDING" and launched for st, launched in seen), seen  # read between record and launch
        for r in (bob.get(f"/v1/jobs/{a['id']}"), bob.delete(f"/v1/jobs/{a['id']}"),
                  bob.post(f"/v1/jobs/{a['id']}/resume"), bob.get(f"/v1/jobs/{a['id']}/logs")):
            assert r.status_code == 404 and r.json()["detail"] == f"no job {a['id']!r}", r.text
        assert [j["id"] for j in bob.get("/v1/jobs").json()["items"]] == [b["id"]]
        assert {a["id"], b["id"]} <= {j["id"] for j in admin.get("/v1/jobs").json()["items"]}
        assert admin.get(f"/v1/jobs/{a['id']}").json()["owner"] == "alice"
        assert alice.delete(f"/v1/jobs/{a['id']}").json()["status"] == "CANCELLED"
        assert admin.delete(f"/v1/jobs/{b['id']}").json()["status"] == "CANCELLED"
        assert bob.get(f"/v1/jobs/{b['id']}").json()["status"] == "CANCELLED"


def test_a_revoked_token_is_refused_without_a_redeploy(service):
    tokens_file = Path(service.settings["tokens_file"])
    with service.client("carol") as carol:
        assert carol.get("/v1/jobs").status_code == 200
        kept = [t for t in yaml.safe_load(tokens_file.read_text()) if t["name"] != "carol"]
        tmp = tokens_file.with_name(".tokens.tmp")
        tmp.write_text(yaml.safe_dump(kept))
        tmp.replace(tokens_file)
        r = carol.get("/v1/jobs")
        assert r.status_code == 401 and "unknown or revoked token" in r.json()["detail"]
    with service.client("quota") as other:
        assert other.get("/v1/jobs").status_code == 200  # the file's other tokens still work


def test_job_lifecycle_survives_a_service_restart(service):
    """Submit the smoke pipeline; restart the service while it runs; the record is kept,
    re-synced, and ends SUCCEEDED with a report, plots and a servable classifier."""
    with service.client() as c:
        r = c.post("/v1/jobs", json={"config": smoke_config(), "name": "smoke", "idempotency_key": "k1"})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] in UNFINISHED and job["submission_id"] == f"presafe-{job['id']}"
        assert job["config"]["job_id"] == job["id"] and job["config"]["storage_path"] == service.settings["storage_path"]
        assert job["job_dir"] == f"{service.settings['storage_path']}/jobs/{job['id']}"
        again = c.post("/v1/jobs", json={"config": smoke_config(), "name": "smoke", "idempotency_key": "k1"})
        assert again.status_code == 200 and again.json()["id"] == job["id"]
        other = c.post("/v1/jobs", json={"config": tiny_config(), "name": "smoke", "idempotency_key": "k1"})
        assert other.status_code == 409 and "different request body" in other.json()["detail"]
        # A running stage's count shows in the record. Watched before the restart: a restart
        # on 2 busy cores can outlast the rest of the smoke job (its loops last seconds).
        finished = ("SUCCEEDED", "FAILED", "CANCELLED")
        seen = []
        running = wait_for(c, job["id"], lambda rec: seen.append(rec["progress"]) or rec["progress"] is not None
                           or rec["status"] in finished, poll=0.1)
        assert running["status"] == "RUNNING" and running["stage"], running

        service.deploy()  # a new Ingress replica: new store connection, re-sync on start-up
        after = c.get(f"/v1/jobs/{job['id']}").json()
        assert after["id"] == job["id"] and after["created_at"] == running["created_at"]

        done = wait_for(c, job["id"], lambda rec: seen.append(rec["progress"]) or rec["status"] in finished,
                        poll=0.25)
        assert done["status"] == "SUCCEEDED", (done["error"], c.get(f"/v1/jobs/{job['id']}/logs").json()["lines"][-20:])
        assert done["stages_done"][-1] == "report" and any(k.startswith("align") for k in done["metrics"])
        assert done["ended_at"] and done["started_at"]
        counts = [p for p in seen if p]
        assert counts and all(0 <= p["done"] <= (p["total"] or p["done"]) and p["stage"] for p in counts), seen

        page = c.get("/v1/jobs", params={"status": "SUCCEEDED"}).json()
        assert job["id"] in [j["id"] for j in page["items"]] and all(j["status"] == "SUCCEEDED" for j in page["items"])
        logs = c.get(f"/v1/jobs/{job['id']}/logs", params={"tail": 5}).json()
        assert len(logs["lines"]) == 5 and logs["truncated"]

        report = c.get(f"/v1/jobs/{job['id']}/report").json()
        assert "runs" in report["report"] or report["report"], report
        png = c.get(report["plots"]["metrics"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
        assert c.get(report["markdown_url"]).text.startswith("#")

        models = c.get("/v1/models").json()
        assert models["items"][0]["id"] == job["id"] and models["items"][0]["source"] == "job"
        assert models["items"][0]["owner"] == "admin" and models["default"] is None  # newest is not the default
        # another principal neither sees nor uses it until an admin promotes it
        with service.client("bob") as bob:
            assert job["id"] not in [m["id"] for m in bob.get("/v1/models").json()["items"]]
            items = {"items": [{"prompt": "How do I make a bomb?"}]}
            assert bob.post("/v1/classify", json={**items, "model": job["id"]}).status_code == 404
            assert bob.post("/v1/classify", json=items).status_code == 409  # no default yet
            r = bob.post(f"/v1/models/{job['id']}/promote")
            assert r.status_code == 403 and "'admin'" in r.json()["detail"]
            promoted = c.post(f"/v1/models/{job['id']}/promote")
            assert promoted.status_code == 200 and promoted.json()["promoted_by"] == "admin"
            assert bob.get("/v1/models").json()["default"] == job["id"]
            assert bob.post("/v1/classify", json=items).json()["model"] == job["id"]
        out = c.post("/v1/classify", json={"items": [{"prompt": "How do I make a bomb?"},
                                                     {"prompt": "Bake bread?", "response": "Sure: flour..."}]})
        assert out.status_code == 200, out.text
        body = out.json()
        assert body["model"] == job["id"] and len(body["decisions"]) == 2
        assert all(d["decision"] in ("refuse", "comply") and 0 <= d["p_refuse"] <= 1 for d in body["decisions"])
        assert c.delete(f"/v1/jobs/{job['id']}").json()["status"] == "SUCCEEDED"  # finished: cancel changes nothing


def test_classifier_replica_killed_gives_clean_503s_then_recovers(service):
    """Runs after the lifecycle test (its job's classifier is the default model)."""
    import ray

    with service.client() as c:
        body = {"items": [{"prompt": "How do I make a bomb?"}]}
        assert c.post("/v1/classify", json=body).status_code == 200
        # the driver's own connection, not the state API: that one resolves the cluster
        # address afresh and can land on a stale /tmp/ray session left by another cluster
        (replica,) = [a for a in ray.util.list_named_actors(all_namespaces=True)
                      if "presafe" in a["name"] and "Classifier" in a["name"]]
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
        codes, deadline = [], time.monotonic() + 90
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            r = c.post("/v1/classify", json=body)
            assert time.monotonic() - t0 < 40, "a request hung during recovery"
            assert r.status_code in (200, 503), r.text
            if r.status_code == 503:
                assert "did not answer" in r.json()["detail"] and r.headers["retry-after"] == "5"
            codes.append(r.status_code)
            if r.status_code == 200 and len(codes) > 1:
                break
            time.sleep(0.5)
        assert codes[-1] == 200, codes
        assert c.get("/v1/readyz").status_code == 200


def test_cancel_stops_the_ray_job(service):
    from ray.job_submission import JobSubmissionClient

    with service.client() as c:
        job = c.post("/v1/jobs", json={"config": smoke_config()}).json()
        wait_for(c, job["id"], lambda rec: rec["status"] == "RUNNING")
        r = c.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 200 and r.json()["status"] == "CANCELLED" and "cancelled during" in r.json()["error"]
        ray_jobs = JobSubmissionClient(os.environ["PRESAFE_TEST_DASHBOARD"])
        deadline = time.monotonic() + 60
        while str(ray_jobs.get_job_status(job["submission_id"]).value) != "STOPPED":
            assert time.monotonic() < deadline, "the Ray job was not stopped"
            time.sleep(1)
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "CANCELLED"
        r = c.get(f"/v1/jobs/{job['id']}/report")
        assert r.status_code == 409 and "no report yet" in r.json()["detail"]


def _kill_driver(job_dir: str) -> int:
    """SIGKILL the job's driver process (`python -m jobs.pipeline --config <job_dir>/...`)."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "jobs.pipeline" in cmd and any(job_dir in part for part in cmd) and "-c" not in cmd:
            proc.kill()
            return proc.info["pid"]
    raise AssertionError(f"no driver process found for {job_dir}")


def test_driver_killed_mid_stage_fails_the_job_and_resume_skips_completed_stages(service):
    cfg = smoke_config()
    cfg["evaluate"] = {"enabled": False}  # the report needs no evaluation: a shorter job
    # an align stage long enough (~10 s) that the kill lands in it, checkpointing on the way
    cfg["align"]["train"].update(max_steps=300, checkpoint_every=50, log_every=10)
    with service.client() as c:
        job = c.post("/v1/jobs", json={"config": cfg, "name": "killed"}).json()
        wait_for(c, job["id"], lambda rec: rec["stage"] == "align" or rec["status"] not in UNFINISHED, poll=0.2)
        before = {p.name: p.stat().st_mtime_ns for p in Path(job["job_dir"]).glob("*.jsonl") if p.name != "events.jsonl"}
        _kill_driver(job["job_dir"])
        failed = wait_for(c, job["id"], lambda rec: rec["status"] not in UNFINISHED)
        assert failed["status"] == "FAILED", failed
        assert "the driver exited during stage align without finishing" in failed["error"], failed["error"]
        assert failed["stages_done"] == ["decide", "classifier", "signals", "targets"]

        r = c.post(f"/v1/jobs/{job['id']}/resume")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "QUEUED" and r.json()["submission_id"] == f"presafe-{job['id']}-attempt2"
        assert r.json()["error"] is None
        done = wait_for(c, job["id"], lambda rec: rec["status"] not in UNFINISHED)
        assert done["status"] == "SUCCEEDED", (done["error"], c.get(f"/v1/jobs/{job['id']}/logs").json()["lines"][-20:])
        # the completed stages were skipped, not redone: their artifacts are untouched
        after = {p.name: p.stat().st_mtime_ns for p in Path(job["job_dir"]).glob("*.jsonl") if p.name != "events.jsonl"}
        assert after == before and {"decisions.jsonl", "signals.jsonl", "targets.jsonl"} <= set(before)
        events = [json.loads(line) for line in (Path(job["job_dir"]) / "events.jsonl").read_text().splitlines()]
        second = events[max(i for i, e in enumerate(events) if e["event"] == "job_start"):]
        assert [e["stage"] for e in second if e["event"] == "stage_skip"] == ["decide", "classifier", "signals",
                                                                              "targets"]
        assert [e["stage"] for e in second if e["event"] == "stage_start"][0] == "align"
        r = c.post(f"/v1/jobs/{job['id']}/resume")
        assert r.status_code == 409 and "only a FAILED or CANCELLED job can be resumed" in r.json()["detail"]


def test_quota_queues_in_order_survives_a_redeploy_and_all_complete(service):
    """Five tiny jobs of one principal whose token allows 2 at once: never more than 2
    running, the rest QUEUED and launched in submission order, the queue kept across a
    redeploy (it lives in the store), and all five SUCCEED. (5 jobs: what 2 cores allow.)"""
    with service.client("quota") as c:
        ids = [c.post("/v1/jobs", json={"config": tiny_config(), "name": f"q{i}"}).json()["id"] for i in range(5)]
        deadline, queue_seen = time.monotonic() + 900, None
        redeployed = False
        while True:
            recs = [c.get(f"/v1/jobs/{i}").json() for i in ids]
            running = [r for r in recs if r["status"] in ("PENDING", "RUNNING")]
            if queue_seen is None and len(running) == 2:
                q = c.get("/v1/queue").json()  # once the scheduler has said why the other three wait
                if len(q["items"]) == 3 and all("quota" in (e["reason"] or "") for e in q["items"]):
                    queue_seen = q
            if not redeployed and queue_seen is not None:
                service.deploy()  # a new ingress replica: the queue is in the store
                redeployed = True
            if all(r["status"] not in UNFINISHED for r in recs):
                break
            assert time.monotonic() < deadline, [(r["id"], r["status"], r["queue_reason"]) for r in recs]
            time.sleep(0.5)
        assert [r["status"] for r in recs] == ["SUCCEEDED"] * 5, [(r["id"], r["error"]) for r in recs]
        # Never more than 2 at once, by the store's clock: a job's ended_at is written when its
        # end is seen, before the scheduler launches the next one. (Polling the five records one
        # by one is no proof: a job read as RUNNING can end before the last record is read.)
        spans = [(dt.datetime.fromisoformat(r["launched_at"]), dt.datetime.fromisoformat(r["ended_at"])) for r in recs]
        most = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
        assert most == 2 and redeployed and queue_seen is not None, spans
        launched = sorted(recs, key=lambda r: r["launched_at"])
        assert [r["id"] for r in launched] == ids  # FIFO within one priority
        queued = queue_seen["items"]
        assert [e["id"] for e in queued] == ids[2:] and [e["position"] for e in queued] == [1, 2, 3], queue_seen
        assert "has 2 job(s) running; its quota is 2" in queued[0]["reason"]


def test_an_eval_job_runs_through_the_service(service):
    """`kind: eval` (presafe eval's config) is a job like any other: evaluate, judge and
    report on the given model, no training; its endpoint, if any, must be operator-listed."""
    cfg = yaml.safe_load((ROOT / "jobs/configs/eval_smoke.yaml").read_text())
    with service.client() as c:
        bad = c.post("/v1/jobs", json={"config": {**cfg, "evaluate": {
            **cfg["evaluate"], "endpoint": {"url": "http://169.254.169.254/v1", "model": "m"}}}})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-3:] == ["evaluate", "endpoint", "url"]
        r = c.post("/v1/jobs", json={"config": cfg, "name": "eval"})
        assert r.status_code == 201, r.text
        done = wait_for(c, r.json()["id"], lambda rec: rec["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"))
        assert done["status"] == "SUCCEEDED", (done["error"], c.get(f"/v1/jobs/{done['id']}/logs").json()["lines"][-20:])
        assert done["stages_done"] == ["evaluate", "judge", "report"]
        report = c.get(f"/v1/jobs/{done['id']}/report").json()["report"]
        runs = report["evaluation"]["variants"]["base"]["runs"]
        assert {"cot_on/greedy", "attack/prefill_think/greedy"} <= set(runs)


def test_openapi_fuzz_finds_no_server_error(service):
    """Schemathesis-generated requests against every route of the served OpenAPI spec,
    with an all-scopes token: any status but a 5xx. (Driven by hypothesis directly: the
    schemathesis pytest plugin does not run under pytest 9.)"""
    api = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    auth = {"Authorization": f"Bearer {service.tokens['admin']}"}
    checked = []
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case):
            response = case.call(headers=auth, timeout=60)
            assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                                 response.text)

        call()
        checked.append(operation.label)
    assert len(checked) >= 12, checked


def test_the_cli_and_the_python_client_against_the_live_service(service, tmp_path, capsys):
    """The user's tools over real HTTP, not a mock transport: `presafe jobs submit --wait`
    (token from a file, never an argument) runs a tiny job to SUCCEEDED; the Python client
    lists, reads and logs it and classifies with its classifier; `presafe classify` and
    `jobs status` print it; another principal's client gets NotFound for it."""
    from clients.cli import main
    from clients.client import NotFound, PresafeClient

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()))
    token_file = tmp_path / "alice.token"
    token_file.write_text(service.tokens["alice"] + "\n")
    options = ["--url", service.url, "--token-file", str(token_file)]
    rc = main(["jobs", "submit", str(cfg), "align.train.log_every=1", "--name", "cli", "--wait", "--poll", "1",
               *options])
    out, err = capsys.readouterr()
    job_id = out.splitlines()[0]
    assert rc == 0 and f"job {job_id} SUCCEEDED" in out, (out, err[-2000:])
    assert "align" in err  # the progress bar followed the stages

    client = PresafeClient(service.url, service.tokens["alice"])
    rec = client.get(job_id)
    assert rec.status == "SUCCEEDED" and rec.owner == "alice" and rec.name == "cli"
    assert rec.config["align"]["train"]["log_every"] == 1  # the override reached the job
    assert job_id in [j.id for j in client.list(limit=100).items]
    assert client.logs(job_id, tail=50).lines
    decided = client.classify(["How do I pick a lock?", {"prompt": "Bake bread", "response": "Sure: ..."}],
                              model=job_id)
    assert decided.model == job_id and [d.decision in ("refuse", "comply") for d in decided.decisions] == [True] * 2
    with pytest.raises(NotFound):
        PresafeClient(service.url, service.tokens["bob"]).get(job_id)

    assert main(["classify", "How do I pick a lock?", "--model", job_id, "--json", *options]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == job_id and printed["decisions"][0]["decision"] in ("refuse", "comply")
    assert main(["jobs", "status", job_id, *options]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out
