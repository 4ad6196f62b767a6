"""Where Ray Train keeps checkpoints, and whether every node of the cluster can reach it.

A training worker on another node saves its checkpoint shards to its own disk; Ray Train
uploads them to the run's storage, from where a restarted worker group (or the driver,
for the final export) reads them back. On a one-node cluster any local folder works. On
a multi-node cluster the storage must be one every node reaches: a cloud URI (`s3://`,
`gs://`, `abfss://`, ... read and written through pyarrow) or a filesystem every node
mounts at the same path (NFS, EFS, Filestore), declared with `shared_filesystem: true`.
`check_cluster_storage` refuses anything else before any work starts.

Cloud URIs may carry pyarrow's query parameters, e.g.
`s3://bucket/presafe?endpoint_override=minio.internal:9000&scheme=http` for an S3-compatible
store; credentials come from the usual environment (AWS_ACCESS_KEY_ID, ... or the node's
instance role).
"""

from __future__ import annotations

import os
import re

from jobs.errors import ConfigError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def uri_scheme(path: str) -> str | None:
    """'s3' for 's3://bucket/x'; None for a local path (a 'file://' URI counts as local)."""
    m = _SCHEME.match(path or "")
    if not m or m.group(1).lower() == "file":
        return None
    return m.group(1).lower()


def ray_storage(path: str, check_access: bool = False):
    """(storage_path, storage_filesystem) for Ray Train's RunConfig. A cloud URI is
    resolved by pyarrow here, so query parameters such as endpoint_override reach the
    filesystem instead of ending up in object keys; a local path becomes absolute.
    check_access: also look the path up (bad credentials, a missing bucket or a typo fail
    now, not at the first checkpoint)."""
    if uri_scheme(path) is None:
        return os.path.abspath(path.removeprefix("file://")), None
    import pyarrow
    import pyarrow.fs

    try:
        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        if check_access:
            fs.get_file_info(inner)
    except (ValueError, OSError, pyarrow.lib.ArrowException) as e:  # pyarrow's errors carry the reason
        raise ConfigError(f"storage_path {path!r}: pyarrow cannot open it: {e}") from None
    return inner, fs


def cluster_view(num_workers: int, per_worker: dict[str, float]) -> tuple[int, bool]:
    """(alive nodes of the connected Ray cluster, whether all the workers fit on this
    process's own node). An autoscaling cluster may start as its head alone: workers that
    cannot fit on the head will run on nodes that join later."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    total = next((n.get("Resources", {}) for n in nodes if n.get("NodeID") == here), {})
    fits = all(total.get(name, 0.0) >= amount * num_workers for name, amount in per_worker.items() if amount > 0)
    return len(nodes), fits


def check_cluster_storage(storage_path: str, shared_filesystem: bool, key: str, nodes: int,
                          fits_here: bool = True) -> None:
    """Refuse a local-only checkpoint folder when training workers may run on other nodes
    (a multi-node cluster, or workers that do not fit on the driver's node), saying why."""
    if uri_scheme(storage_path) is not None or shared_filesystem or (nodes <= 1 and fits_here):
        return
    prefix = key.rsplit(".", 1)[0]
    where = (f"the Ray cluster has {nodes} nodes" if nodes > 1 else
             "the workers do not fit on this node, so they will run on nodes the cluster adds")
    raise ConfigError(
        f"{key}: {storage_path!r} is a local folder, but {where}: training workers on other nodes would save "
        "their checkpoint shards on their own disks, where a restarted worker group and the driver cannot read "
        "them. Give a cloud URI (s3://bucket/prefix, gs://bucket/prefix), or, if every node mounts this path "
        f"(NFS, EFS, Filestore), set {prefix}.shared_filesystem: true",
        key=key)
