"""Scale-out and fault tolerance for real: a second Ray node as its own processes on this
machine (jobs.local_cluster), a training worker killed mid-run, checkpoints in S3 (a
local moto server)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from jobs.config import to_dict
from jobs.local_cluster import LocalCluster
from tests.test_align import _write_targets, pipeline_cfg

PRESAFE = str(Path(sys.executable).with_name("presafe"))


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """Two Ray nodes of 2 CPUs each as their own processes, started once for this module
    (a start costs about 20 s); only the second holds the `presafe_second` resource."""
    with LocalCluster(tmp_path_factory.mktemp("cluster"), {"head": 2, "second": 2}) as cluster:
        yield cluster


def _adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


@pytest.mark.ray
@pytest.mark.slow
def test_two_node_spread_alignment_uses_both_nodes_and_matches_one_node(tiny_lm, tmp_path, ray_cluster, two_nodes):
    from jobs.align.train import run_align

    train = {"max_steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 2}
    scale = {"num_workers": 2, "cpus_per_worker": 1, "placement_strategy": "SPREAD"}
    multi = pipeline_cfg(tiny_lm, tmp_path / "multi", train=train, scale=scale)
    _write_targets(Path(multi.job_dir))
    config = tmp_path / "multi.yaml"
    config.write_text(yaml.safe_dump(to_dict(multi)))

    cluster = two_nodes
    nodes = cluster.node_names()
    assert sorted(nodes.values()) == ["head", "second"]
    # A local checkpoint folder on 2 nodes is refused before any work, saying why.
    refused = cluster.run([PRESAFE, "stage", "align", "--config", str(config)])
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "is a local folder, but the Ray cluster has 2 nodes" in refused.stderr
    assert "align.scale.shared_filesystem: true" in refused.stderr
    assert not (Path(multi.job_dir) / "adapter").exists()
    # Both "nodes" are this machine: the folder really is shared, so say so. The driver
    # logs events; its workers learn where from the train loop's config (Ray does not
    # pass the driver's environment on).
    log = tmp_path / "events.jsonl"
    done = cluster.run([PRESAFE, "stage", "align", "--config", str(config),
                        "align.scale.shared_filesystem=true"], env={"PRESAFE_EVENTS": str(log)})
    assert done.returncode == 0, done.stderr[-4000:]
    from jobs.events import read_events

    steps = [e for e in read_events(log) if e["event"] == "progress" and e["stage"] == "align:adapter"]
    assert steps and steps[-1]["done"] == steps[-1]["total"] == 4, read_events(log)
    assert any(e["event"] == "metrics" and e["stage"] == "align:adapter" for e in read_events(log))

    meta = json.loads((Path(multi.job_dir) / "adapter" / "meta.json").read_text())
    workers = meta["workers"]
    assert [w["rank"] for w in workers] == [0, 1], workers
    assert {nodes.get(w["node_id"]) for w in workers} == {"head", "second"}, (workers, nodes)  # SPREAD: one per node
    assert all(w["micro_batches"] == 4 and w["tokens"] > 0 for w in workers), workers  # both did their share

    # The same run with both workers on one node (the session's cluster) ends at the same weights.
    single = pipeline_cfg(tiny_lm, tmp_path / "single", train=train, scale={**scale, "cpus_per_worker": 0.5})
    _write_targets(Path(single.job_dir))
    out = run_align(single)
    one = json.loads((out / "meta.json").read_text())["workers"]
    assert len({w["node_id"] for w in one}) == 1
    a, b = _adapter(Path(multi.job_dir) / "adapter"), _adapter(out)
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-4, diff


@pytest.mark.ray
@pytest.mark.slow
def test_killed_training_worker_restarts_from_its_s3_checkpoint(tiny_lm, tmp_path, ray_cluster, s3_server):
    """SIGKILL the worker once Ray Train holds a checkpoint in S3: with max_failures=1 Ray
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
        with contextlib.suppress(FileNotFoundError, OSError):
            infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True))
            states = sorted(i.path for i in infos if i.path.endswith("/state.json"))
            # A third checkpoint in storage means the second report returned, which needs the
            # Train controller to have taken the first (its queue holds one): Ray knows a
            # checkpoint now. (Killed earlier, the run would resume from the local copy.)
            first = states[0] if len(states) >= 3 and pid else None
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
    assert meta["resumed_from"] == "ray"  # Ray Train's checkpoint in S3, not the local copy
    (worker,) = meta["workers"]
    assert worker["pid"] != pid  # a new worker process finished the run ...
    assert worker["micro_batches"] == total - resumed  # ... training only the steps after the checkpoint


@pytest.mark.ray
@pytest.mark.slow
def test_generation_runs_on_actors_of_the_generation_node_never_in_the_driver(tmp_path, two_nodes):
    """A head without the generation resource (`presafe_second`): decide, targets and evaluate (and the probe
    pass) run on actors on the second node; the driver process never loads the LRM."""
    storage = tmp_path / "store"
    smoke = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "smoke.yaml"
    overrides = [f"storage_path={storage}", "decide.num_actors=1", "decide.cpus_per_actor=0.5",
                 'decide.resources_per_actor={"presafe_second": 0.5}', "align.ablation=false",
                 "align.scale.num_workers=1", "align.scale.cpus_per_worker=0.5", "align.scale.shared_filesystem=true",
                 "evaluate.limit_per_set=3", "evaluate.cot_off=[]", 'evaluate.decodings=[{"name": "greedy"}]']
    # The driver: the pipeline with every causal-LM loader disabled in its own process
    # (training runs on a Ray Train worker, generation on the actors).
    driver = ("import sys, transformers, jobs.generation as g\n"
              "def refuse(*a, **k):\n    raise SystemExit('the driver loaded the LRM')\n"
              "g.load_causal_lm = refuse\n"
              "transformers.AutoModelForCausalLM.from_pretrained = refuse\n"
              "from jobs.pipeline import main\nsys.exit(main(sys.argv[1:]))\n")
    nodes = {v: k for k, v in two_nodes.node_names().items()}
    done = two_nodes.run([sys.executable, "-c", driver, "--config", str(smoke), *overrides],
                         env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    job = storage / "jobs" / "smoke"
    decide = json.loads((job / "decisions_meta.json").read_text())["workers"]
    assert [w["node_id"] for w in decide] == [nodes["second"]]
    index = json.loads((job / "evaluation" / "samples.json").read_text())
    for name in ("base", "aligned"):
        workers = index["variants"][name]["workers"]
        assert [w["node_id"] for w in workers] == [nodes["second"]], (name, workers)
        assert len(index["variants"][name]["probe_auroc"]) == 5  # the probe pass ran on the actor too
    assert json.loads((job / "evaluation.json").read_text())["variants"]["aligned"]["runs"]["cot_on/greedy"]["n"][
        "harmful"] == 3
