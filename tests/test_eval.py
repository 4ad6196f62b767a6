"""`presafe eval`: any model, adapter or OpenAI-compatible endpoint through the same
evaluate / judge / report stages, without the rest of the pipeline."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clients.cli import main
from jobs.events import read_events

ROOT = Path(__file__).resolve().parents[1]
EVAL_SMOKE = str(ROOT / "jobs" / "configs" / "eval_smoke.yaml")


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PRESAFE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PRESAFE_EVENTS", raising=False)
    return tmp_path


def _tiny_adapter(model_dir: str, out: Path) -> Path:
    """A random LoRA adapter on the tiny model (B != 0, so it changes the outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lm = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    lm.save_pretrained(out)
    return out


def _report_shape(job: Path) -> tuple:
    ev = json.loads((job / "evaluation.json").read_text())
    return (sorted(ev), sorted(next(iter(ev["variants"].values()))["runs"]), ev["headline"])


def test_eval_a_model_and_an_adapter_without_the_pipeline(home, tiny_lm):
    storage = home / "store"
    adapter = _tiny_adapter(tiny_lm, home / "my_adapter")
    assert main(["eval", "--config", EVAL_SMOKE, "--model", tiny_lm, "--adapter", str(adapter),
                 f"storage_path={storage}"]) == 0
    job = storage / "jobs" / "eval-smoke"
    ends = [e["stage"] for e in read_events(job / "events.jsonl") if e["event"] == "stage_end"]
    assert ends == ["evaluate", "judge", "report"]  # no decide, no training
    ev = json.loads((job / "evaluation.json").read_text())
    assert set(ev["variants"]) == {"base", "my_adapter"}
    runs = ev["variants"]["my_adapter"]["runs"]
    assert set(runs) == {"cot_on/greedy", "cot_off/greedy", "attack/prefill_think/greedy"}
    assert runs["cot_on/greedy"]["n"] == {"harmful": 4, "benign": 4, "reasoning": 4}
    base = [json.loads(x)["output"] for x in (job / "evaluation" / "base" / "cot_on-greedy.jsonl").open()]
    tuned = [json.loads(x)["output"] for x in (job / "evaluation" / "my_adapter" / "cot_on-greedy.jsonl").open()]
    assert base != tuned  # the adapter was applied
    assert "| my_adapter |" in (job / "report.md").read_text()


class _Stub(BaseHTTPRequestHandler):
    """An OpenAI-compatible server returning canned completions; records the requests."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        if self.path.endswith("/completions") and "prompt" in body:
            text = "I must refuse.\n</think>\n\nI'm sorry, but I can't help with that."
            out = {"choices": [{"text": text, "index": 0}]}
        else:
            out = {"choices": [{"message": {"role": "assistant", "content": "Sure, here you go: 4.",
                                            "reasoning_content": "2 + 2 = 4"}}]}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def stub_server():
    _Stub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_eval_an_openai_compatible_endpoint(home, tiny_lm, stub_server):
    storage = home / "store"
    assert main(["eval", "--config", EVAL_SMOKE, "--model", tiny_lm, "--endpoint", stub_server,
                 "--served-model", "served-lrm", f"storage_path={storage}"]) == 0
    job = storage / "jobs" / "eval-smoke"
    ev = json.loads((job / "evaluation.json").read_text())
    assert set(ev["variants"]) == {"endpoint"} and "probe_auroc" not in ev["variants"]["endpoint"]
    run = ev["variants"]["endpoint"]["runs"]["cot_on/greedy"]
    assert run["asr"] == 0.0 and run["over_refusal"] == 1.0  # the canned answer refuses everything
    assert run["judges"]["string_match"]["cot_asr"]["k"] == 0  # "I must refuse." is judged as the CoT
    reqs = _Stub.requests
    assert all(r["model"] == "served-lrm" and r["path"] == "/v1/completions" for r in reqs)
    # presafe rendered the prompts (templates, attacks) and sent the text; greedy = temperature 0
    assert all(r["temperature"] == 0 for r in reqs) and any("Let me work through it" in r["prompt"] for r in reqs)
    # The same report structure as a local model's.
    local = home / "local"
    assert main(["eval", "--config", EVAL_SMOKE, "--model", tiny_lm, f"storage_path={local}"]) == 0
    assert _report_shape(job) == _report_shape(local / "jobs" / "eval-smoke")

    # Chat API: the server renders; its reasoning_content comes back as the thinking.
    chat = home / "chat"
    assert main(["eval", "--config", EVAL_SMOKE, "--model", tiny_lm, "--endpoint", stub_server, "--served-model",
                 "served-lrm", "--api", "chat", "evaluate.attacks=[]", f"storage_path={chat}"]) == 0
    rows = [json.loads(x) for x in (chat / "jobs" / "eval-smoke" / "evaluation" / "endpoint" / "cot_on-greedy.jsonl").open()]
    assert rows[0]["thinking"] == "2 + 2 = 4" and rows[0]["answer"] == "Sure, here you go: 4."


def test_eval_configs_refuse_what_cannot_work(home, capsys, tiny_lm):
    # an eval job has no signal classifier to judge with
    assert main(["eval", "--config", EVAL_SMOKE, 'evaluate.judges=[{"kind": "classifier", "path": "signals"}]']) == 2
    assert "evaluate.judges: an eval job trains no signal classifier" in capsys.readouterr().err
    assert main(["eval", "--config", EVAL_SMOKE, "--endpoint", "http://127.0.0.1:9/v1"]) == 2
    assert "--endpoint needs --served-model" in capsys.readouterr().err
    assert main(["eval", "--config", EVAL_SMOKE, "--adapter", str(home / "nope"), f"storage_path={home}"]) == 1
    assert "is not a peft adapter folder" in capsys.readouterr().err
