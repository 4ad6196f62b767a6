"""How a job uses Ray: shared by the classifier and the alignment jobs."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from jobs.config import check

PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class ScaleConfig:
    """How Ray Train runs a training job."""

    num_workers: int = 0
    """0 = in-process (local mode, no Ray cluster needed); N = N Ray Train workers."""
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    backend: str = "auto"
    """Process-group backend: auto (nccl on GPU, gloo on CPU), gloo or nccl."""
    deepspeed: dict | None = None
    """Optional DeepSpeed config (a dict as in ds_config.json). Batch sizes and gradient
    clipping are filled in from the train section when absent."""
    placement_strategy: str = "PACK"
    """How Ray places the workers on nodes: PACK (fill one node first), SPREAD (one per node
    where possible), STRICT_PACK (all on one node) or STRICT_SPREAD (one per node, or wait)."""
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    """Extra resources each worker needs besides its CPUs and GPU: a custom node resource
    (`{"trainer_pool": 1}`) or an accelerator type (`{"accelerator_type:H100": 0.001}`)."""
    storage_path: str | None = None
    """Where Ray Train keeps checkpoints: a local folder (default: beside the job's output) or a
    cloud URI (s3://, gs://, ... through pyarrow; see jobs.storage). A multi-node cluster needs
    a URI or `shared_filesystem: true`."""
    shared_filesystem: bool = False
    """The checkpoint folder is one filesystem mounted at the same path on every node (NFS,
    EFS, Filestore): a local path is then allowed on a multi-node cluster."""
    max_failures: int = 0
    """Worker-group restarts Ray Train may make; each restart resumes from the latest checkpoint."""

    def validate(self) -> None:
        check(self.num_workers >= 0, "num_workers", "must be >= 0")
        check(self.cpus_per_worker >= 0, "cpus_per_worker", "must be >= 0")
        check(self.backend in ("auto", "gloo", "nccl"), "backend", "must be auto, gloo or nccl")
        check(not (self.backend == "nccl" and not self.use_gpu), "backend", "nccl needs use_gpu: true")
        check(self.max_failures >= 0, "max_failures", "must be >= 0")
        check(self.placement_strategy in PLACEMENT_STRATEGIES, "placement_strategy",
              f"must be one of {list(PLACEMENT_STRATEGIES)}, got {self.placement_strategy!r}")
        for name, amount in self.resources_per_worker.items():
            check(name not in ("CPU", "GPU"), f"resources_per_worker.{name}",
                  "set CPUs with cpus_per_worker and GPUs with use_gpu")
            check(amount >= 0, f"resources_per_worker.{name}", "must be >= 0")
        check(self.storage_path is None or bool(self.storage_path.strip()), "storage_path", "must not be empty")
        if self.deepspeed is not None:
            stage = (self.deepspeed.get("zero_optimization") or {}).get("stage", 0)
            check(stage in (0, 1, 2, 3), "deepspeed.zero_optimization.stage", f"must be 0, 1, 2 or 3, got {stage!r}")
            if not self.use_gpu:
                for key in ("bf16", "fp16"):
                    check(not (self.deepspeed.get(key) or {}).get("enabled"), f"deepspeed.{key}.enabled",
                          "CPU runs train in fp32; enable bf16/fp16 only with use_gpu: true")

    @property
    def resolved_backend(self) -> str:
        return self.backend if self.backend != "auto" else ("nccl" if self.use_gpu else "gloo")

    def worker_resources(self) -> dict[str, float] | None:
        """Ray Train's resources_per_worker (None in-process)."""
        if not self.num_workers:
            return None
        return {"CPU": self.cpus_per_worker, **self.resources_per_worker}

    @property
    def zero_stage(self) -> int:
        return int(((self.deepspeed or {}).get("zero_optimization") or {}).get("stage", 0)) if self.deepspeed else -1


def use_torch_threads(setting: int | None) -> int:
    """Set torch's CPU threads in this process from a `torch_threads` setting (None: leave
    them, 0: every core this process may run on, N: N); returns the count in use."""
    import torch

    if setting is not None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(setting or cores)
    return torch.get_num_threads()


def skip_deepspeed_shm_comm() -> None:
    """Keep DeepSpeed from JIT-loading its CPU shared-memory all-reduce op.

    DeepSpeed's CPU backend loads `deepspeed_shm_comm` through torch's cpp_extension on
    every engine start, under a lock file in ~/.cache/torch_extensions. A process killed
    while it holds that lock (a job driver or worker killed during start-up) leaves the
    file behind, and every later engine start on the machine then waits on it forever.
    Training here reduces through torch.distributed (gloo / NCCL) and never uses the op, so
    it is marked unavailable (deepspeed 0.19.8, pinned: `deepspeed.ops.__compatible_ops__`
    is computed once and kept, so the edit holds for the process)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def ensure_process_group() -> None:
    """A one-process gloo group when none exists: DeepSpeed needs one even in-process
    (num_workers=0); Ray Train workers already have theirs. Called before every DeepSpeed
    engine is made."""
    import torch.distributed as dist

    skip_deepspeed_shm_comm()
    if dist.is_initialized():
        return
    # Ray's in-process mode destroys its group with plain torch.distributed when a run
    # ends, leaving DeepSpeed holding the dead group ("Group ... is not registered" on the
    # next engine): drop those references before making a new group.
    from deepspeed.utils import groups

    release = getattr(groups, "_release_process_group_references", None)  # deepspeed 0.19 (pinned)
    if release is not None:
        release(None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=0, world_size=1)


def connect_ray(scale: ScaleConfig, key: str, default_storage: str):
    """With Ray Train workers: join the cluster (RAY_ADDRESS, or a local one) and refuse a
    checkpoint folder the workers' nodes cannot share, before any work starts. `key` is
    the dotted path of this ScaleConfig in the user's config (for the message);
    `default_storage` the folder used when storage_path is unset. Returns the checkpoint
    storage as (storage_path, storage_filesystem), see jobs.storage.ray_storage."""
    from jobs.storage import check_cluster_storage, cluster_view, ray_storage

    storage = scale.storage_path or default_storage
    if scale.num_workers == 0:
        return ray_storage(storage)
    import ray

    from jobs.errors import PresafeError

    if not ray.is_initialized():
        try:
            ray.init(log_to_driver=True)
        except Exception as e:  # noqa: BLE001 - ConnectionError, auth errors, a bad address: "no cluster"
            where = os.environ.get("RAY_ADDRESS") or "a new local cluster"
            raise PresafeError(f"{key}: could not join the Ray cluster ({where}): {type(e).__name__}: {e}") from None
    nodes, fits_here = cluster_view(scale.num_workers, {"CPU": scale.cpus_per_worker, **scale.resources_per_worker,
                                                        **({"GPU": 1.0} if scale.use_gpu else {})})
    check_cluster_storage(storage, scale.shared_filesystem, f"{key}.storage_path", nodes, fits_here)
    return ray_storage(storage, check_access=True)


def train_kwargs(scale: ScaleConfig, key: str, default_storage: str) -> dict:
    """`connect_ray`, then the TorchTrainer keyword arguments that follow the scale section:
    `scaling_config`, and the RunConfig's `storage_path` / `storage_filesystem`."""
    from ray.train import ScalingConfig

    storage, filesystem = connect_ray(scale, key, default_storage)
    scaling = ScalingConfig(num_workers=scale.num_workers, use_gpu=scale.use_gpu,
                            resources_per_worker=scale.worker_resources(),
                            placement_strategy=scale.placement_strategy)
    return {"scaling_config": scaling, "storage_path": storage, "storage_filesystem": filesystem}
