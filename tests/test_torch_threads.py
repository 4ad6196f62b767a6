"""`torch_threads`: a job driver that Ray starts with OMP_NUM_THREADS=1 can use every core."""

import os
import subprocess
import sys

import pytest

from jobs.config import from_dict
from jobs.errors import ConfigError

_PROBE = """
import sys, torch
from jobs.scale import use_torch_threads
before = torch.get_num_threads()
setting = None if sys.argv[1] == "none" else int(sys.argv[1])
print(before, use_torch_threads(setting))
"""


def _threads(setting: str) -> tuple[int, int]:
    """(threads before, threads after) in a fresh process started as Ray starts a job driver."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _PROBE, setting], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = map(int, out.stdout.split())
    return before, after


def test_zero_takes_every_core_none_leaves_the_environment_and_n_is_n():
    cores = len(os.sched_getaffinity(0))
    assert _threads("0") == (1, cores)
    assert _threads("none") == (1, 1)
    assert _threads("3") == (1, 3)


@pytest.mark.parametrize("value", [-1, 1025])
def test_torch_threads_out_of_range_names_the_key(value):
    from jobs.pipeline_config import PipelineConfig

    prompts = {"harmful": [{"path": "builtin:demo-harmful-train", "format": "builtin"}]}
    with pytest.raises(ConfigError, match=rf"torch_threads: must be .*got {value}"):
        from_dict(PipelineConfig, {"prompts": prompts, "torch_threads": value})
