"""A multi-node Ray cluster on one machine: a head and worker nodes started as separate
`ray start` process trees, each with its own custom resource (`presafe_<name>`). What the
scale-out test and bench/scaling.py run on; also handy to try a multi-node config on a
laptop before a real cluster.

    with LocalCluster(Path("/tmp/lc"), {"head": 2, "second": 2}) as cluster:
        cluster.run([presafe, "stage", "align", "--config", "x.yaml"])   # a driver on it

Token auth is on, as Ray 2.60's `ray start --head` sets it up by default, with the token
passed in the environment of every process (the way a real cluster propagates it).
Stopping sends SIGTERM to each `ray start --block`, which stops what it started; nothing
else on the machine is touched (unlike `ray stop`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self


class LocalCluster:
    def __init__(self, workdir: Path, nodes: dict[str, float], object_store_bytes: int = 200_000_000):
        """nodes: name -> CPUs, the first one is the head."""
        self.workdir, self.nodes_cpus, self.object_store = Path(workdir), dict(nodes), object_store_bytes
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        # Its own Ray temp dir: session folders and the `ray_current_cluster` address file stay
        # out of /tmp/ray, where `address="auto"` of every other Ray program on this machine
        # would find them (short: Ray's Unix socket paths must stay under ~107 characters).
        self.tempdir = tempfile.mkdtemp(prefix="prs-", dir="/tmp")
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_TMPDIR": self.tempdir}
        self.env.pop("RAY_ADDRESS", None)
        self.ray = str(Path(sys.executable).with_name("ray"))

    def _start(self, name: str, cpus: float, args: list[str]) -> None:
        log = self.workdir / f"ray-{name}.log"
        cmd = [self.ray, "start", *args, "--node-ip-address=127.0.0.1", f"--num-cpus={cpus:g}",
               f"--object-store-memory={self.object_store}", "--disable-usage-stats", "--block",
               f"--resources={json.dumps({f'presafe_{name}': 1})}"]
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 120
        while "block forever" not in log.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"ray start ({name}) exited with {proc.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"ray start ({name}) did not come up in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)

    def __enter__(self) -> Self:
        try:
            for i, (name, cpus) in enumerate(self.nodes_cpus.items()):
                head = ["--head", f"--port={self.port}", "--include-dashboard=false"]
                self._start(name, cpus, head if i == 0 else [f"--address={self.address}"])
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()
        shutil.rmtree(self.tempdir, ignore_errors=True)

    def run(self, cmd: list[str], timeout: float = 600, cwd: str | Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """A driver on this cluster (RAY_ADDRESS set, plus `env`), output captured."""
        return subprocess.run(cmd, env={**self.env, **(env or {}), "RAY_ADDRESS": self.address}, capture_output=True,
                              text=True, timeout=timeout, check=False, cwd=cwd)

    def node_names(self) -> dict[str, str]:
        """Alive node id -> the name it was started with."""
        code = ("import json, ray; ray.init(); print(json.dumps({n['NodeID']: [r for r in n['Resources'] "
                "if r.startswith('presafe_')][0] for n in ray.nodes() if n['Alive']}))")
        out = self.run([sys.executable, "-c", code], timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"could not list the nodes: {out.stderr[-2000:]}")
        return {k: v.removeprefix("presafe_") for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
