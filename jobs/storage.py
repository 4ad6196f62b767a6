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

import re

from jobs.errors import ConfigError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def uri_scheme(path: str) -> str | None:
    """'s3' for 's3://bucket/x'; None for a local path (a 'file://' URI counts as local)."""
    m = _SCHEME.match(path or "")
    if not m or m.group(1).lower() == "file":
        return None
    return m.group(1).lower()


def ray_storage(path: str):
    """(storage_path, storage_filesystem) for Ray Train's RunConfig. A cloud URI is
    resolved by pyarrow here, so query parameters such as endpoint_override reach the
    filesystem instead of ending up in object keys; a local path passes through."""
    if uri_scheme(path) is None:
        return path.removeprefix("file://"), None
    import pyarrow.fs

    try:
        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
    except (ValueError, OSError) as e:  # pyarrow: ArrowInvalid (a ValueError) or OSError, with the reason
        raise ConfigError(f"storage_path {path!r}: pyarrow cannot open it: {e}") from None
    return inner, fs


def alive_nodes() -> int:
    """Alive nodes of the Ray cluster this process is connected to."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def check_cluster_storage(storage_path: str, shared_filesystem: bool, key: str, nodes: int) -> None:
    """Refuse a local-only checkpoint folder on a multi-node cluster, saying why."""
    if nodes <= 1 or uri_scheme(storage_path) is not None or shared_filesystem:
        return
    prefix = key.rsplit(".", 1)[0]
    raise ConfigError(
        f"{key}: {storage_path!r} is a local folder, but the Ray cluster has {nodes} nodes: training workers "
        "on other nodes would save their checkpoint shards on their own disks, where a restarted worker "
        "group and the driver cannot read them. Give a cloud URI (s3://bucket/prefix, gs://bucket/prefix), "
        f"or, if every node mounts this path (NFS, EFS, Filestore), set {prefix}.shared_filesystem: true",
        key=key)
