from dataclasses import dataclass, field

import pytest

from jobs.classifier.config import ClassifierJobConfig
from jobs.config import check, from_dict, load_config
from jobs.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "job.yaml"
    p.write_text(text)
    return p


def test_loads_yaml_and_overrides(tmp_path):
    p = write(tmp_path, "output_dir: out\ntrain:\n  epochs: 5\n")
    cfg = load_config(ClassifierJobConfig, p, ["train.learning_rate=1e-4", "scale.num_workers=2"])
    assert cfg.output_dir == "out"
    assert cfg.train.epochs == 5
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert cfg.scale.num_workers == 2
    assert cfg.train.batch_size == 16  # default kept


def test_unknown_key_names_path_file_line_and_suggests(tmp_path):
    p = write(tmp_path, "output_dir: out\ntrain:\n  epoch: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(ClassifierJobConfig, p)
    msg = str(e.value)
    assert f"{p}:3" in msg and "train.epoch" in msg and "did you mean 'epochs'" in msg


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, "train:\n  epochs: three\n")
    with pytest.raises(ConfigError, match=r"job.yaml:2: train.epochs: expected an integer, got 'three'"):
        load_config(ClassifierJobConfig, p)


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(ClassifierJobConfig, None, ["train.epochs=true"])


def test_impossible_value_names_key_and_file(tmp_path):
    p = write(tmp_path, "train:\n  learning_rate: -1\n")
    with pytest.raises(ConfigError, match=r"job.yaml:2: train.learning_rate: must be in \(0, 1\)"):
        load_config(ClassifierJobConfig, p)


def test_nested_list_item_error_names_index(tmp_path):
    p = write(tmp_path, "data:\n  sources:\n    - path: a.csv\n      format: nope\n")
    with pytest.raises(ConfigError, match=r"data.sources\[0\].format: unknown format 'nope'"):
        load_config(ClassifierJobConfig, p)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(ClassifierJobConfig, None, ["train.epochs"])


def test_deepspeed_stage3_rejected_for_classifier():
    with pytest.raises(ConfigError, match="scale.deepspeed.zero_optimization.stage"):
        from_dict(ClassifierJobConfig, {"scale": {"deepspeed": {"zero_optimization": {"stage": 3}}}})


def test_top_level_must_be_mapping(tmp_path):
    p = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(ClassifierJobConfig, p)


def test_check_inside_custom_dataclass():
    @dataclass
    class Inner:
        k: int = 1

        def validate(self):
            check(self.k > 0, "k", "must be > 0")

    @dataclass
    class Outer:
        inner: Inner = field(default_factory=Inner)
        items: list[Inner] = field(default_factory=list)

    with pytest.raises(ConfigError, match=r"items\[1\].k: must be > 0"):
        from_dict(Outer, {"items": [{"k": 1}, {"k": 0}]})
    assert from_dict(Outer, {"inner": {"k": 4}}).inner.k == 4


def test_every_shipped_config_loads():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("classifier*.yaml"))
    assert configs, "no shipped classifier configs found"
    for path in configs:
        cfg = load_config(ClassifierJobConfig, path)
        assert cfg.data.sources


def test_every_shipped_pipeline_config_loads_and_fits_its_model():
    from pathlib import Path

    from jobs.pipeline_config import PipelineConfig

    configs = [p for p in sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").rglob("*.yaml"))
               # judges/ holds JudgeConfig files (tests/test_guards.py loads those)
               if not p.name.startswith("classifier") and p.parent.name != "judges"]
    assert {"quickstart.yaml", "smoke.yaml", "r1_distill_qwen_7b.yaml", "r1_distill_llama_8b.yaml",
            "qwen3_8b.yaml"} <= {p.name for p in configs}
    for path in configs:
        cfg = load_config(PipelineConfig, path)
        assert cfg.prompts.harmful or cfg.prompts.benign or cfg.kind == "eval"
        if path.parent.name == "gpu":  # what the GPU configs promise in their headers and the README
            assert cfg.dtype == "bfloat16" and cfg.align.scale.use_gpu and cfg.align.scale.zero_stage == 3
            assert cfg.align.train.gradient_checkpointing and cfg.align.ablation and cfg.evaluate.enabled
            assert not cfg.model.startswith("embedded:")
            # never judged only by the classifier that made the training signals
            assert cfg.evaluate.headline_judge() == "llama_guard_3_8b"
            assert not any(j.is_signal_classifier for j in cfg.evaluate.judges)
        if cfg.model.startswith("embedded:"):
            from jobs.align.model import check_against_model

            assert check_against_model(cfg.align, cfg.model)


@pytest.mark.parametrize("name", ["/abs/elsewhere", "../x", "..", "a/b", ".hidden", "x" * 101, ""])
def test_align_output_name_must_be_a_plain_name(name):
    from jobs.pipeline_config import PipelineConfig

    prompts = {"harmful": [{"path": "builtin:demo-harmful-train", "format": "builtin"}]}
    with pytest.raises(ConfigError, match="align.output_name: must be a plain folder name"):
        from_dict(PipelineConfig, {"prompts": prompts, "align": {"output_name": name}})
    ok = from_dict(PipelineConfig, {"prompts": prompts, "align": {"output_name": "adapter_v2.1"}})
    assert ok.align.output_name == "adapter_v2.1"


@pytest.mark.parametrize("aux, message", [
    ({"positions": 0}, "align.aux.positions: must be in 1..64, got 0"),
    ({"positions": 4, "pooling": "prompt_mean"}, "align.aux.positions: positions > 1 .* needs pooling t_star"),
])
def test_aux_positions_are_bounded_and_need_t_star_pooling(aux, message):
    from jobs.pipeline_config import PipelineConfig

    prompts = {"harmful": [{"path": "builtin:demo-harmful-train", "format": "builtin"}]}
    with pytest.raises(ConfigError, match=message):
        from_dict(PipelineConfig, {"prompts": prompts, "align": {"aux": aux}})
    assert from_dict(PipelineConfig, {"prompts": prompts, "align": {"aux": {"positions": 4}}}).align.aux.positions == 4
