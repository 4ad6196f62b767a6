"""How a job uses Ray: shared by the classifier and the alignment jobs."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from jobs.config import check


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
    storage_path: str | None = None
    """Where Ray Train keeps checkpoints (local dir or s3://); default beside the output."""
    max_failures: int = 0
    """Worker-group restarts Ray Train may make; each restart resumes from the latest checkpoint."""

    def validate(self) -> None:
        check(self.num_workers >= 0, "num_workers", "must be >= 0")
        check(self.cpus_per_worker >= 0, "cpus_per_worker", "must be >= 0")
        check(self.backend in ("auto", "gloo", "nccl"), "backend", "must be auto, gloo or nccl")
        check(not (self.backend == "nccl" and not self.use_gpu), "backend", "nccl needs use_gpu: true")
        check(self.max_failures >= 0, "max_failures", "must be >= 0")
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

    @property
    def zero_stage(self) -> int:
        return int(((self.deepspeed or {}).get("zero_optimization") or {}).get("stage", 0)) if self.deepspeed else -1


def ensure_process_group() -> None:
    """A one-process gloo group when none exists: DeepSpeed needs one even in-process
    (num_workers=0); Ray Train workers already have theirs."""
    import torch.distributed as dist

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
