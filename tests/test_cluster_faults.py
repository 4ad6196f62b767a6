"""Scale-out and fault tolerance for real: a second Ray node as its own processes on this
machine, a training worker killed mid-run, checkpoints in S3 (a local moto server)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from jobs.config import to_dict
from tests.test_align import _write_targets, pipeline_cfg

RAY = str(Path(sys.executable).with_name("ray"))
PRESAFE = str(Path(sys.executable).with_name("presafe"))


def _adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


class TwoNodeCluster:
    """`ray start --head` and `ray start --address` as separate process trees, each node
    with 2 CPUs and its own custom resource. Token auth as Ray 2.60 sets up by default,
    with the token passed in the environment (the way a cluster propagates it)."""

    def __init__(self, tmp: Path):
        self.tmp, self.procs = tmp, []
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
        self.env.pop("RAY_ADDRESS", None)

    def _start(self, name: str, args: list[str]) -> None:
        log = self.tmp / f"{name}.log"
        common = ["--num-cpus=2", "--object-store-memory=200000000", "--disable-usage-stats", "--block",
                  f'--resources={{"presafe_{name}": 1}}']
        proc = subprocess.Popen([RAY, "start", *args, *common], stdout=log.open("w"), stderr=subprocess.STDOUT,
                                env=self.env, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 90
        while "block forever" not in log.read_text():
            assert proc.poll() is None, f"ray start ({name}) exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"ray start ({name}) did not come up: {log.read_text()[-2000:]}"
            time.sleep(0.5)

    def __enter__(self):
        self._start("head", ["--head", f"--port={self.port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false"])
        self._start("second", [f"--address={self.address}", "--node-ip-address=127.0.0.1"])
        return self

    def __exit__(self, *exc):
        for proc in reversed(self.procs):  # SIGTERM: `ray start --block` stops what it started
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def run(self, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        """A driver on this cluster (the way a Ray job or `presafe stage` runs)."""
        cmd = args if args[0] == PRESAFE else [sys.executable, *args]
        return subprocess.run(cmd, env={**self.env, "RAY_ADDRESS": self.address},
                              capture_output=True, text=True, timeout=timeout, check=False, cwd=Path(__file__).resolve().parents[1])

    def nodes(self) -> dict[str, str]:
        """node id -> its presafe_* resource."""
        code = ("import json, ray; ray.init(); print(json.dumps({n['NodeID']: [r for r in n['Resources'] "
                "if r.startswith('presafe_')][0] for n in ray.nodes() if n['Alive']}))")
        out = self.run(["-c", code], timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.ray
@pytest.mark.slow
def test_two_node_spread_alignment_uses_both_nodes_and_matches_one_node(tiny_lm, tmp_path, ray_cluster):
    from jobs.align.train import run_align

    train = {"max_steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 2}
    scale = {"num_workers": 2, "cpus_per_worker": 1, "placement_strategy": "SPREAD"}
    multi = pipeline_cfg(tiny_lm, tmp_path / "multi", train=train, scale=scale)
    _write_targets(Path(multi.job_dir))
    config = tmp_path / "multi.yaml"
    config.write_text(yaml.safe_dump(to_dict(multi)))

    with TwoNodeCluster(tmp_path) as cluster:
        nodes = cluster.nodes()
        assert sorted(nodes.values()) == ["presafe_head", "presafe_second"]
        # A local checkpoint folder on 2 nodes is refused before any work, saying why.
        refused = cluster.run([PRESAFE, "stage", "align", "--config", str(config)])
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "is a local folder, but the Ray cluster has 2 nodes" in refused.stderr
        assert "align.scale.shared_filesystem: true" in refused.stderr
        assert not (Path(multi.job_dir) / "adapter").exists()
        # Both "nodes" are this machine: the folder really is shared, so say so.
        done = cluster.run([PRESAFE, "stage", "align", "--config", str(config),
                            "align.scale.shared_filesystem=true"])
        assert done.returncode == 0, done.stderr[-4000:]

    meta = json.loads((Path(multi.job_dir) / "adapter" / "meta.json").read_text())
    workers = meta["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert {nodes[w["node_id"]] for w in workers} == {"presafe_head", "presafe_second"}  # SPREAD: one per node
    assert all(w["micro_batches"] == 4 and w["tokens"] > 0 for w in workers)  # both did their share

    # The same run with both workers on one node (the session's cluster) ends at the same weights.
    single = pipeline_cfg(tiny_lm, tmp_path / "single", train=train, scale={**scale, "cpus_per_worker": 0.5})
    _write_targets(Path(single.job_dir))
    out = run_align(single)
    one = json.loads((out / "meta.json").read_text())["workers"]
    assert len({w["node_id"] for w in one}) == 1
    a, b = _adapter(Path(multi.job_dir) / "adapter"), _adapter(out)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


@pytest.mark.ray
@pytest.mark.slow
def test_killed_training_worker_restarts_from_its_s3_checkpoint(tiny_lm, tmp_path, ray_cluster, s3_server):
    """SIGKILL the worker after its first checkpoint reached S3: with max_failures=1 Ray
    Train restarts the worker group, which resumes from that checkpoint (the step counter
    goes on from there) and the run publishes its adapter."""
    import pyarrow.fs
    from ray.util.state import list_actors

    from jobs.align.train import run_align
    from jobs.storage import ray_storage

    total = 60
    storage = s3_server("presafe-ckpt", "faults")
    cfg = pipeline_cfg(tiny_lm, tmp_path, train={"max_steps": total, "batch_size": 2, "checkpoint_every": 3,
                                                 "log_every": 3},
                       scale={"num_workers": 1, "cpus_per_worker": 1, "max_failures": 1, "storage_path": storage})
    _write_targets(Path(cfg.job_dir))
    path, fs = ray_storage(storage)
    outcome: dict = {}

    def align():
        try:
            outcome["out"] = run_align(cfg)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread below
            outcome["error"] = e

    thread = threading.Thread(target=align, daemon=True)
    thread.start()
    dashboard = os.environ["PRESAFE_TEST_DASHBOARD"]
    deadline, pid, first = time.monotonic() + 180, None, None
    while first is None:
        assert thread.is_alive(), f"the run ended before a checkpoint was seen: {outcome}"
        assert time.monotonic() < deadline, "no checkpoint reached S3 in 180 s"
        if pid is None:
            alive = list_actors(address=dashboard, filters=[("class_name", "=", "RayTrainWorker"),
                                                            ("state", "=", "ALIVE")])
            pid = alive[0]["pid"] if alive else None
        with __import__("contextlib").suppress(FileNotFoundError, OSError):
            infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True))
            states = [i.path for i in infos if i.path.endswith("/state.json")]
            first = states[0] if states and pid else None
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive(), "the run did not finish after the worker was killed"
    if "error" in outcome:
        raise outcome["error"]
    meta = json.loads((outcome["out"] / "meta.json").read_text())
    assert meta["steps"] == total
    resumed = meta["resumed_from_step"]
    assert 3 <= resumed < total and resumed % 3 == 0, resumed  # from a checkpoint, not from step 0
    (worker,) = meta["workers"]
    assert worker["pid"] != pid  # a new worker process finished the run ...
    assert worker["micro_batches"] == total - resumed  # ... training only the steps after the checkpoint
