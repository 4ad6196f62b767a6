"""clusters/: every cluster definition passes the strongest check that runs offline.

Cluster-launcher YAML (local, AWS, GCP) goes through Ray's own `prepare_config` +
`validate_config` (ray-schema.json from the wheel plus Ray's cross-field rules); the local
provider also through the launcher's whole bootstrap, which needs no cloud. For AWS and GCP
the bootstrap imports boto3 / googleapiclient and calls the cloud APIs, so it cannot run here.
KubeRay manifests have no schema offline (the CRDs live in the operator): the fields that
matter are checked here, and serveConfigV2 with Serve's own ServeDeploySchema.

Each check also runs on deliberately broken copies (test_*_check_catches) so that a check
which stops checking fails too.
"""

from __future__ import annotations

import copy
import re
import shlex
import textwrap
import tomllib
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from jobs.config import load_config
from jobs.errors import ConfigError
from jobs.pipeline_config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
GPU_CONFIGS = ROOT / "jobs" / "configs" / "gpu"
SERVE_CONFIG = ROOT / "service" / "serve_config.yaml"
LAUNCHER = ["local.yaml", "aws-gpu.yaml", "gcp-gpu.yaml"]
KUBERAY = {"kuberay/storage.yaml": "PersistentVolumeClaim", "kuberay/raycluster.yaml": "RayCluster",
           "kuberay/rayservice.yaml": "RayService", "kuberay/rayjob.yaml": "RayJob",
           "kuberay/networkpolicy.yaml": "NetworkPolicy"}
API_VERSIONS = {"PersistentVolumeClaim": "v1", "NetworkPolicy": "networking.k8s.io/v1"}
PVC = "presafe-storage"
HOST_GB_PER_GPU = 16  # each Ray Train worker loads the full bf16 model into host RAM first (README)
BROKEN = (AssertionError, ValueError, jsonschema.ValidationError, ConfigError)


def load(name: str) -> list[dict]:
    return list(yaml.safe_load_all((CLUSTERS / name).read_text()))


@cache
def pins() -> dict[str, str]:
    """pyproject's `name==version` pins: the cluster must install what CI tests."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(re.match(r"([\w-]+)(?:\[.*\])?==([\w.]+)", d).groups() for d in deps if "==" in d)


@cache
def serve_config() -> dict:
    return yaml.safe_load(SERVE_CONFIG.read_text())


@cache
def gpu_demand() -> tuple[int, float]:
    """(most GPUs one stage of a GPU config asks for, most CPUs it asks per GPU)."""
    gpus, cpus_per_gpu = 0, 0.0
    for path in sorted(GPU_CONFIGS.glob("*.yaml")):
        cfg = load_config(PipelineConfig, path)
        d, s = cfg.decide, cfg.align.scale
        gpus = max(gpus, s.num_workers if s.use_gpu else 0, int(d.num_actors * d.gpus_per_actor))
        cpus_per_gpu = max(cpus_per_gpu, s.cpus_per_worker, d.cpus_per_actor / max(d.gpus_per_actor, 1e-9))
    return gpus, cpus_per_gpu


def test_every_file_under_clusters_is_checked():
    found = {str(p.relative_to(CLUSTERS)) for p in CLUSTERS.rglob("*") if p.is_file() and p.suffix != ".md"}
    assert found == set(LAUNCHER) | set(KUBERAY), "a new file under clusters/ needs its checks in this test"


# -- cluster-launcher YAML ------------------------------------------------------------------

def flags(cmds: list[str]) -> str:
    """Commands as one line with `--flag=value` spelled `--flag value`."""
    return re.sub(r"(--[\w-]+)=", r"\1 ", re.sub(r"\s+", " ", " ; ".join(cmds)))


def check_launcher(raw: dict) -> None:
    from ray.autoscaler._private.commands import _bootstrap_config
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    local = raw["provider"]["type"] == "local"
    if local:  # the rest of `ray up` before SSH; no cache file written
        _bootstrap_config(copy.deepcopy(raw), no_config_cache=True)

    types = cfg["available_node_types"]
    workers = {n: t for n, t in types.items() if n != cfg["head_node_type"]}
    for name, t in types.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], f"{name}: min_workers must be <= max_workers"
    if local:  # one node type, resources detected per machine (prepare_local refuses node types)
        assert types["local.cluster.node"]["max_workers"] <= len(raw["provider"]["worker_ips"])
        assert "--num-gpus 0" in flags(raw["head_start_ray_commands"]), "the head must not take GPU work"
    else:
        head = types[cfg["head_node_type"]]["resources"]
        assert head.get("GPU", 0) == 0 and head["CPU"] >= 4, "the head is a CPU node that runs the service"
        need_gpus, need_cpus_per_gpu = gpu_demand()
        for name, t in workers.items():
            r = t["resources"]
            assert r.get("GPU", 0) > 0, f"{name}: a worker type without GPUs"
            assert r["CPU"] / r["GPU"] >= need_cpus_per_gpu, f"{name}: too few CPUs per GPU for the GPU configs"
            assert t["max_workers"] >= 1, f"{name}: can never start"
        assert max(t["max_workers"] * t["resources"]["GPU"] for t in workers.values()) >= need_gpus, \
            "no worker type can hold the GPU configs' largest stage"

    head_start = flags(raw["head_start_ray_commands"])
    # The Jobs API runs any command it is sent: loopback only (the service's ingress is pinned
    # to the head; `ray dashboard` forwards the port over SSH). Ray's default host is loopback too.
    assert "--dashboard-host" not in head_start or "--dashboard-host 127.0.0.1" in head_start, \
        "the dashboard's Jobs API must not listen on the head's network address"
    assert "--autoscaling-config ~/ray_bootstrap_config.yaml" in head_start, "without it nothing autoscales"
    assert "presafe up --address auto" in head_start or "serve deploy" in head_start, "the head must start the service"
    storage = serve_config()["applications"][0]["args"]["storage_path"]
    assert f"--storage {storage}" in head_start or "serve deploy" in head_start
    assert any("mount" in c and storage in c for c in raw["initialization_commands"]), \
        f"every node must mount the shared storage at {storage}"
    assert "--address $RAY_HEAD_IP:6379" in flags(raw["worker_start_ray_commands"])

    setup = raw["setup_commands"]
    torch_at = next(i for i, c in enumerate(setup) if re.search(r"pip install .*\btorch==", c))
    presafe_at = next(i for i, c in enumerate(setup) if re.search(r"pip install .*presafe", c))
    assert torch_at < presafe_at, "install the CUDA torch build before presafe, or pip resolves its own"
    assert f"torch=={pins()['torch']}" in setup[torch_at], "the CUDA build must match pyproject's torch pin"
    assert "download.pytorch.org/whl/cu" in setup[torch_at], "a CUDA torch build"


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_yaml_passes_rays_validator(name):
    check_launcher(load(name)[0])


def _set(path: str, value):
    """A mutation: set the dotted `path` (list items by index) to `value`."""
    def mutate(doc):
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return mutate


def _swap_setup(doc):
    doc["setup_commands"].reverse()


def _open_dashboard(doc):
    doc["head_start_ray_commands"] = [c.replace("--dashboard-host 127.0.0.1", "--dashboard-host 0.0.0.0")
                                      for c in doc["head_start_ray_commands"]]


LAUNCHER_BREAKS = [  # (file, mutation, what the error must say)
    ("aws-gpu.yaml", _set("available_node_types.gpu_a10g_x4.resources.GPU", 0.5), "is not of type 'integer'"),
    ("aws-gpu.yaml", _set("available_node_types.gpu_a10g_x4.min_worker", 1), "Additional properties"),
    ("aws-gpu.yaml", _set("available_node_types.gpu_a10g_x4.min_workers", 5), "smaller than the sum of `min_workers`"),
    ("gcp-gpu.yaml", _set("head_node_type", "head"), "head_node_type"),
    ("gcp-gpu.yaml", _set("available_node_types.gpu_l4_x4.min_workers", 2), "min_workers must be <= max_workers"),
    ("gcp-gpu.yaml", _set("available_node_types.gpu_a100_x4.resources.CPU", 8), "too few CPUs per GPU"),
    ("aws-gpu.yaml", _set("available_node_types.head_cpu.resources.GPU", 1), "CPU node"),
    ("aws-gpu.yaml", _open_dashboard, "Jobs API"),
    ("local.yaml", _swap_setup, "before presafe"),
    ("gcp-gpu.yaml", _set("setup_commands.4", "pip install torch==2.12.0 --index-url "
                                              "https://download.pytorch.org/whl/cu128"), "torch pin"),
    ("local.yaml", _set("initialization_commands", []), "mount the shared storage"),
]


@pytest.mark.parametrize("name,mutate,why", [pytest.param(*b, id=f"{b[0]}: {b[2]}") for b in LAUNCHER_BREAKS])
def test_launcher_check_catches(name, mutate, why):
    doc = load(name)[0]
    mutate(doc)
    with pytest.raises(BROKEN, match=why):
        check_launcher(doc)


# -- KubeRay manifests ----------------------------------------------------------------------

def ray_cluster_spec(doc: dict) -> dict:
    spec = doc["spec"]
    return {"RayCluster": spec, "RayService": spec.get("rayClusterConfig"), "RayJob": spec.get("rayClusterSpec")}[
        doc["kind"]]


def quantity(q) -> float:
    """A Kubernetes quantity (`500m`, `32Gi`, `44`) as a number (bytes for memory)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([\d.]+)([a-zA-Z]*)", str(q)).groups()
    return float(number) * units.get(unit, 1)


def check_kuberay(docs: dict[str, list[dict]]) -> None:
    by_kind = {}
    for name, kind in KUBERAY.items():
        (doc,) = docs[name]
        assert doc["kind"] == kind and doc["apiVersion"] == API_VERSIONS.get(kind, "ray.io/v1")
        by_kind[kind] = doc
    pvc = by_kind["PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == PVC and pvc["spec"]["accessModes"] == ["ReadWriteMany"], \
        "every pod mounts the storage at once: ReadWriteMany"

    args = serve_config()["applications"][0]["args"]
    storage, need_gpus, need_cpus_per_gpu = args["storage_path"], *gpu_demand()
    images = set()
    for kind in ("RayCluster", "RayService", "RayJob"):
        cluster = ray_cluster_spec(by_kind[kind])
        runs_service = kind != "RayJob"
        assert cluster["rayVersion"] == pins()["ray"], f"{kind}: rayVersion must be the ray presafe pins"
        assert cluster["enableInTreeAutoscaling"] is True and "autoscalerOptions" in cluster, \
            f"{kind}: autoscaling must be enabled"
        head = cluster["headGroupSpec"]
        assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0", f"{kind}: the Jobs API must be reachable"
        assert head["rayStartParams"].get("num-gpus") == "0", f"{kind}: the head is a CPU node"
        (head_container,) = head["template"]["spec"]["containers"]
        ports = {p["containerPort"] for p in head_container.get("ports", [])}
        assert {6379, 8265} | ({8000} if runs_service else set()) <= ports, f"{kind}: head ports {sorted(ports)}"
        assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {}), f"{kind}: GPU on the head"

        groups = cluster["workerGroupSpecs"]
        assert groups, f"{kind}: no worker group"
        for g in groups:
            where = f"{kind} group {g['groupName']}"
            assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"] >= 1, \
                f"{where}: needs 0 <= minReplicas <= replicas <= maxReplicas, maxReplicas >= 1"
            (c,) = g["template"]["spec"]["containers"]
            limits, requests = c["resources"]["limits"], c["resources"].get("requests", {})
            gpus = int(limits.get("nvidia.com/gpu", 0))
            assert gpus > 0, f"{where}: requests no nvidia.com/gpu"
            assert int(requests.get("nvidia.com/gpu", gpus)) == gpus, f"{where}: GPU requests must equal limits"
            assert int(g["rayStartParams"].get("num-gpus", -1)) == gpus, \
                f"{where}: rayStartParams num-gpus must match the nvidia.com/gpu limit ({gpus})"
            assert quantity(limits["cpu"]) / gpus >= need_cpus_per_gpu, f"{where}: too few CPUs per GPU"
            assert quantity(limits["memory"]) >= gpus * HOST_GB_PER_GPU * 2**30, f"{where}: too little host memory"
        assert max(g["maxReplicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]
                                          ["nvidia.com/gpu"]) for g in groups) >= need_gpus, \
            f"{kind}: no worker group can hold the GPU configs' largest stage ({need_gpus} GPUs)"

        for role, group in [("head", head), *((g["groupName"], g) for g in groups)]:
            pod = group["template"]["spec"]
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            storage_vols = {n for n, v in volumes.items() if v.get("persistentVolumeClaim", {}).get("claimName") == PVC}
            for c in pod["containers"]:
                images.add(c["image"])
                mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
                m = mounts.get(storage)
                assert m is not None and m["name"] in storage_vols and "subPath" not in m, \
                    f"{kind} {role}: the {PVC} volume must be mounted at {storage}"
                if runs_service:  # Serve replicas may land on any pod: the service's paths everywhere
                    for root in args["data_roots"]:
                        assert root in mounts, f"{kind} {role}: data root {root} not mounted"
                    tokens_dir = str(Path(args["tokens_file"]).parent)
                    assert tokens_dir in mounts and "secret" in volumes[mounts[tokens_dir]["name"]], \
                        f"{kind} {role}: tokens_file's folder {tokens_dir} must be a mounted Secret"

    assert len(images) == 1, f"one image in every pod template, got {sorted(images)}"
    (image,) = images
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image.rsplit(":", 1)[-1].startswith(version), f"{image}: tag the image with presafe's version {version}"

    check_serve_config_v2(by_kind["RayService"])
    check_rayjob(by_kind["RayJob"])
    check_network_policy(by_kind["NetworkPolicy"], by_kind["RayJob"])


def check_network_policy(policy: dict, job: dict) -> None:
    """The head's dashboard (8265: the Ray Jobs API, which runs any command it is sent) is
    reachable only by the cluster's pods, the operator's namespace and the RayJob's submitter."""
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "presafe", "ray.io/node-type": "head"}, \
        "the policy must select the presafe head pods"
    assert spec["policyTypes"] == ["Ingress"]
    reach_8265 = []
    for rule in spec["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports and 8265 not in ports:
            continue
        sources = rule.get("from")
        assert sources, "Jobs API: an ingress rule open to every source reaches port 8265"
        reach_8265 += sources
    allowed = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "presafe"}}},
               {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-operator"}}},
               {"podSelector": {"matchLabels": {"batch.kubernetes.io/job-name": job["metadata"]["name"]}}}]
    assert all(s in allowed for s in reach_8265) and reach_8265, f"Jobs API reachable from {reach_8265}"


def check_serve_config_v2(service: dict) -> None:
    from ray.serve.schema import ServeDeploySchema

    from service.settings import ServiceSettings

    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(embedded)
    (app,) = schema.applications
    assert app.import_path == "service.app:build_app" and {d.name for d in app.deployments} == {"Ingress", "Classifier"}
    ServiceSettings.model_validate(app.args)
    expected = {k: serve_config()[k] for k in ("proxy_location", "http_options", "applications")}
    assert {k: embedded.get(k) for k in expected} == expected, (
        "rayservice.yaml's serveConfigV2 drifted from service/serve_config.yaml; replace its block with:\n"
        + textwrap.indent(yaml.safe_dump(expected, sort_keys=False), "    "))


def check_rayjob(job: dict) -> None:
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True, "the job's GPU cluster must go away when it ends"
    python, m, module, flag, config, *overrides = shlex.split(spec["entrypoint"])
    assert python in ("python", "python3"), "the image's python, where presafe is installed"
    assert (m, module, flag) == ("-m", "jobs.pipeline", "--config"), spec["entrypoint"]
    shipped = GPU_CONFIGS / Path(config).name
    assert shipped.is_file(), f"the RayJob runs {config}, which is no config in jobs/configs/gpu/"
    storage = serve_config()["applications"][0]["args"]["storage_path"]
    assert config.startswith(storage + "/"), f"{config}: the driver reads it from the shared storage {storage}"
    cfg = load_config(PipelineConfig, shipped, overrides)  # the overrides are valid keys of that config
    assert cfg.storage_path == storage, f"the job's storage_path must be the shared {storage}"


def kuberay_docs() -> dict[str, list[dict]]:
    return {name: load(name) for name in KUBERAY}


def test_kuberay_manifests():
    check_kuberay(kuberay_docs())


def _mutate_serve(key: str, value):
    def mutate(docs):
        cfg = yaml.safe_load(docs["kuberay/rayservice.yaml"][0]["spec"]["serveConfigV2"])
        _set(key, value)(cfg)
        docs["kuberay/rayservice.yaml"][0]["spec"]["serveConfigV2"] = yaml.safe_dump(cfg)
    return mutate


def _in(name: str, path: str, value):
    return lambda docs: _set(path, value)(docs[name][0])


def _drop_gpus(cluster: dict) -> None:
    for res in cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"].values():
        res.pop("nvidia.com/gpu")


RJ, RS, RC = "kuberay/rayjob.yaml", "kuberay/rayservice.yaml", "kuberay/raycluster.yaml"
WORKER = "workerGroupSpecs.0"
WORKER_C = f"{WORKER}.template.spec.containers.0"


KUBERAY_BREAKS = [  # (mutation, what the error must say)
    (_in(RC, f"spec.{WORKER_C}.image", "presafe/presafe:0.1.1-gpu"), "one image"),
    (_in(RC, f"spec.{WORKER}.rayStartParams.num-gpus", "2"), "num-gpus must match"),
    (_in(RS, f"spec.rayClusterConfig.{WORKER}.minReplicas", 3), "minReplicas <= replicas"),
    (_in(RJ, "spec.rayClusterSpec.enableInTreeAutoscaling", False), "autoscaling"),
    (lambda docs: _drop_gpus(docs[RC][0]["spec"]), "requests no nvidia.com/gpu"),
    (_in(RJ, f"spec.rayClusterSpec.{WORKER_C}.volumeMounts.0.mountPath", "/mnt/storage"), "mounted at /mnt/presafe"),
    (_in(RS, f"spec.rayClusterConfig.{WORKER_C}.volumeMounts.2.mountPath", "/etc/tokens"), "mounted Secret"),
    (_in(RC, "spec.headGroupSpec.template.spec.containers.0.ports.2.containerPort", 8080), "head ports"),
    (_in(RC, "spec.rayVersion", "2.59.0"), "rayVersion"),
    (_mutate_serve("applications.0.deployments.0.autoscaling_config.max_replicas", 8), "drifted"),
    (_mutate_serve("applications.0.import_path", "service.app:app"), "build_app"),
    (_mutate_serve("applications.0.deployments.0.max_ongoing_requests", "many"), "valid integer"),
    (_in(RJ, "spec.entrypoint", "python -m jobs.pipeline --config /mnt/presafe/configs/llama70b.yaml"), "no config"),
    (_in(RJ, "spec.entrypoint", "python -m jobs.pipeline --config /mnt/presafe/configs/qwen3_8b.yaml storage_pth=/x"),
     "storage_pth"),
    (_in(RJ, "spec.shutdownAfterJobFinishes", False), "go away"),
    (_in("kuberay/networkpolicy.yaml", "spec.ingress.1.from", []), "Jobs API"),
    (_in("kuberay/networkpolicy.yaml", "spec.ingress.2.ports", []), "Jobs API"),
    (_in("kuberay/networkpolicy.yaml", "spec.podSelector.matchLabels", {"app.kubernetes.io/name": "presafe"}),
     "head pods"),
]


@pytest.mark.parametrize("mutate,why", [pytest.param(*b, id=b[1]) for b in KUBERAY_BREAKS])
def test_kuberay_check_catches(mutate, why):
    docs = copy.deepcopy(kuberay_docs())
    mutate(docs)
    with pytest.raises(BROKEN, match=why):
        check_kuberay(docs)
