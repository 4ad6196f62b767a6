"""Checkpoint storage: cloud URIs through pyarrow (against a local S3 server), and the
refusal of local-only folders on a multi-node cluster."""

from pathlib import Path

import pytest

from jobs.config import from_dict
from jobs.errors import ConfigError
from jobs.pipeline_config import PipelineConfig
from jobs.storage import check_cluster_storage, ray_storage, uri_scheme


def test_uri_scheme():
    assert uri_scheme("s3://b/x") == "s3" and uri_scheme("GS://b") == "gs"
    assert uri_scheme("file:///tmp/x") is None and uri_scheme("/tmp/x") is None and uri_scheme("runs") is None


def test_cloud_uri_resolves_through_pyarrow_with_its_query_parameters(s3_server):
    import pyarrow.fs

    path, fs = ray_storage(s3_server("ckpt", "presafe/run1"))
    assert isinstance(fs, pyarrow.fs.S3FileSystem) and path == "ckpt/presafe/run1"
    fs.create_dir("ckpt")
    with fs.open_output_stream(f"{path}/probe.txt") as f:
        f.write(b"ok")
    assert fs.get_file_info(f"{path}/probe.txt").size == 2  # really stored, not a local folder named s3:
    assert ray_storage("/tmp/x") == ("/tmp/x", None) and ray_storage("file:///tmp/x") == ("/tmp/x", None)
    assert ray_storage("rel/ckpt")[0] == str(Path.cwd() / "rel" / "ckpt")  # Ray needs absolute local paths
    ray_storage(s3_server("ckpt", "presafe/run1"), check_access=True)  # reachable
    with pytest.raises(ConfigError, match="pyarrow cannot open it"):  # a server that is not there
        ray_storage("s3://ckpt/x?endpoint_override=127.0.0.1:9&scheme=http&connect_timeout=1&request_timeout=1",
                    check_access=True)
    with pytest.raises(ConfigError, match="storage_path 'nope://x': pyarrow cannot open it"):
        ray_storage("nope://x")


def test_local_checkpoint_folder_is_refused_on_a_multi_node_cluster():
    key = "align.scale.storage_path"
    check_cluster_storage("/data/ckpt", False, key, nodes=1)  # one node: any folder
    check_cluster_storage("s3://b/ckpt", False, key, nodes=3)
    check_cluster_storage("/mnt/nfs/ckpt", True, key, nodes=3)  # declared shared
    with pytest.raises(ConfigError) as e:
        check_cluster_storage("/data/ckpt", False, key, nodes=2)
    assert e.value.key == key
    assert "'/data/ckpt' is a local folder, but the Ray cluster has 2 nodes" in str(e.value)
    assert "s3://" in str(e.value) and "align.scale.shared_filesystem: true" in str(e.value)
    # one node so far, but the workers do not fit on it (an autoscaling cluster starts as its head)
    with pytest.raises(ConfigError, match="the workers do not fit on this node, so they will run on nodes the "
                                          "cluster adds"):
        check_cluster_storage("/data/ckpt", False, key, nodes=1, fits_here=False)


def test_scale_and_storage_config_errors_name_the_key():
    base = {"prompts": {"harmful": [{"path": "x", "format": "advbench"}]}}
    for uri in ("s3://bucket/presafe", "file:///srv/presafe"):
        with pytest.raises(ConfigError, match="storage_path.*job folder must be a plain path to a local or mounted") as e:
            from_dict(PipelineConfig, {**base, "storage_path": uri})
        assert e.value.key == "storage_path"
    with pytest.raises(ConfigError, match=r"align.scale.placement_strategy: must be one of \['PACK', 'SPREAD'"):
        from_dict(PipelineConfig, {**base, "align": {"scale": {"placement_strategy": "spread-ish"}}})
    with pytest.raises(ConfigError, match="align.scale.resources_per_worker.GPU: set CPUs with cpus_per_worker"):
        from_dict(PipelineConfig, {**base, "align": {"scale": {"resources_per_worker": {"GPU": 1}}}})
    cfg = from_dict(PipelineConfig, {**base, "align": {"scale": {
        "num_workers": 2, "placement_strategy": "SPREAD", "resources_per_worker": {"trainer_pool": 1},
        "storage_path": "s3://bucket/ckpt"}}})
    assert cfg.align.scale.worker_resources() == {"CPU": 1.0, "trainer_pool": 1.0}
