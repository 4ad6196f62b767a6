"""Shared fixtures: offline mode, the shared data folder, tiny models, one Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# The cloud-storage tests talk to a local S3 server (moto; see s3_server). Set before the
# shared Ray cluster starts, so its workers inherit them; no test touches real AWS.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "presafe-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "presafe-test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PRESAFE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: skipped with a reason on a user's machine without it, a failure under CI."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{SHARED_DATA} is missing under CI=true: tests that read shared data must not skip in CI")
        pytest.skip(f"{SHARED_DATA} not present (the public data sets live beside the project, not in it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random BERT with the MiniLM WordPiece tokenizer, saved to a folder."""
    from jobs.models.tiny import build_tiny_bert

    return str(build_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session (ray.init costs ~10 s), with the
    dashboard: the service submits jobs through the Ray Jobs API it serves."""
    import ray

    if not ray.is_initialized():
        # address="local": a cluster of its own even when `presafe up` left one running here
        ctx = ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                       log_to_driver=True)
        os.environ["PRESAFE_TEST_DASHBOARD"] = f"http://{ctx.dashboard_url}"
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_lm_factory(tmp_path_factory):
    """tiny_lm_factory(family) -> folder of a tiny random causal LM (cached per family)."""
    from jobs.models.tiny import build_tiny_lm

    cache: dict[str, str] = {}

    def make(family: str = "generic") -> str:
        if family not in cache:
            cache[family] = str(build_tiny_lm(tmp_path_factory.mktemp(f"tiny_{family}"), family))
        return cache[family]

    return make


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_factory) -> str:
    return tiny_lm_factory("generic")


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on a free port; yields a function bucket -> s3:// URI prefix."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield lambda bucket, prefix="": (f"s3://{bucket}/{prefix}?endpoint_override={host}:{port}&scheme=http"
                                     "&allow_bucket_creation=true")
    server.stop()
