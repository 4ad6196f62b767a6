"""`presafe up` / `presafe down`: the service on this machine, for a user or a demo.

    svc = up()            # Ray head with dashboard (unless `address` names a cluster) + the Serve app
    svc.url, svc.token    # http://127.0.0.1:8000, psf_...
    down()

`up` is idempotent: with a healthy service already up it returns that one. It writes a
fresh admin token named `local` (only its hash goes into the service's tokens file, beside
the tokens `presafe tokens add` made there) and records the URL and
token in `$PRESAFE_HOME/service/up.json` (mode 600), which the client and CLI read when
no URL or token is given.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from jobs.errors import PresafeError
from jobs.models.embedded import cache_dir
from service.settings import ADMIN, ALL_SCOPES
from service.tokens import add_token, write_private

APP_NAME = "presafe"
DASHBOARD_PORT = 8265


@dataclass
class LocalService:
    url: str
    token: str
    dashboard_url: str
    storage_path: str
    started_ray: bool = False
    """True when `up` started the Ray head (then `down` stops it too)."""


def state_file() -> Path:
    return cache_dir() / "service" / "up.json"


def read_state() -> LocalService | None:
    f = state_file()
    if not f.is_file():
        return None
    return LocalService(**json.loads(f.read_text()))


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def up(storage_path: str | None = None, port: int = 8000, address: str | None = None, num_cpus: int | None = None,
       data_roots: list[str] | None = None, host: str = "127.0.0.1", wait_s: float = 180.0) -> LocalService:
    """Start (or find) the service. `host` 0.0.0.0 serves other machines too (tokens are
    required either way); `data_roots` default to the current directory."""
    import ray
    from ray import serve

    from service.app import build_app

    state = read_state()
    if state is not None and _healthy(state.url):
        return state
    storage = Path(storage_path or cache_dir() / "service").expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    started_ray = False
    if address is None:
        cmd = [_ray_cli(), "start", "--head", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(DASHBOARD_PORT),
               "--disable-usage-stats"]
        if num_cpus is not None:
            cmd += ["--num-cpus", str(num_cpus)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode != 0 and "already running" not in done.stdout + done.stderr:
            raise PresafeError(f"`ray start --head` failed:\n{done.stderr.strip() or done.stdout.strip()}")
        started_ray = done.returncode == 0
        address = "auto"
    ctx = ray.init(address=address, ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False)
    if not ctx.dashboard_url:
        raise PresafeError(f"the Ray cluster at {address} runs no dashboard: the service needs its Jobs API")
    dashboard = f"http://{ctx.dashboard_url}"
    tokens = tokens_file(storage)
    token = add_token(tokens, "local", [*ALL_SCOPES, ADMIN], replace=True)  # the operator of this machine
    settings = {
        "storage_path": str(storage),
        # absolute: the replicas resolve paths in their own working directory, not the caller's
        "data_roots": [os.path.abspath(r) for r in data_roots] if data_roots is not None else [os.getcwd()],
        "tokens_file": str(tokens),
        "ray_address": dashboard,
        "job_entrypoint_python": sys.executable,
        "job_env": {"HF_HUB_OFFLINE": "1", "PRESAFE_HOME": str(cache_dir())},
        # one operator's service: any hub model or dataset (the job runs offline unless the
        # cache has it), local models under the data roots; a shared deployment lists them
        "paths": {"hub_models": ["*"], "hub_datasets": ["*"],
                  "model_roots": [os.path.abspath(r) for r in data_roots] if data_roots is not None
                  else [os.getcwd()]},
    }
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    deadline = time.monotonic() + wait_s
    while not _healthy(url):
        if time.monotonic() > deadline:
            raise PresafeError(f"the service did not answer at {url} within {wait_s:.0f} s; see `ray status` and "
                               "/tmp/ray/session_latest/logs/serve/")
        time.sleep(1)
    svc = LocalService(url, token, dashboard, str(storage), started_ray)
    write_private(state_file(), json.dumps(asdict(svc), indent=2))
    return svc


def down() -> bool:
    """Stop the app (and the Ray head that `up` started). True when something was running."""
    state = read_state()
    if state is None:
        return False
    try:
        import ray
        from ray import serve

        ray.init(address="auto", ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False)
        serve.delete(APP_NAME)
        ray.shutdown()
    except (ConnectionError, RuntimeError):
        pass  # the cluster is gone already
    if state.started_ray:
        subprocess.run([_ray_cli(), "stop"], check=False, capture_output=True, text=True)
    state_file().unlink(missing_ok=True)
    return True


def tokens_file(storage: str | Path) -> Path:
    """The tokens file of a `presafe up` service (what `presafe tokens` edits by default)."""
    return Path(storage) / "service_tokens.yaml"
