"""Which aligned models a job trains and evaluates: the variants.

A job trains `aligned` (align.aux as configured), `lambda0` (the λ = 0 ablation, when
align.ablation), and one `sweep_<point>` per point of align.sweep; each once per seed of
`seeds` (or once, with align.train.seed, when `seeds` is empty). Every variant is one
pipeline stage and one adapter folder under the job:

    group      seed  stage                   folder
    aligned    -     align                   adapter/
    lambda0    -     align_lambda0           adapter_lambda0/
    aligned    1     align_s1                adapter_s1/
    sweep_w0.05_Llate 0  align_sweep_w0.05_Llate_s0  adapter_sweep_w0.05_Llate_s0/

The evaluation names a variant `<group>` or `<group>@s<seed>`; the report pools a group
over its seeds. The base model is the variant `base` (no adapter, never trained).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.pipeline_config import SWEEP_DEPTHS, PipelineConfig

BASE = "base"


@dataclass(frozen=True)
class AlignVariant:
    group: str
    """aligned | lambda0 | sweep_<point>."""
    seed: int | None
    """None: a job without `seeds` (align.train.seed, sampling seeds as configured)."""
    folder: str
    """Adapter folder under the job folder."""
    stage: str
    """Pipeline stage that trains it."""
    aux: dict = field(default_factory=dict, compare=False, hash=False)
    """align.aux overrides of this variant (sweep layers still symbolic: early|middle|late)."""

    @property
    def name(self) -> str:
        return self.group if self.seed is None else f"{self.group}@s{self.seed}"


def _tag(point: dict) -> str:
    """A short plain name for a sweep point: w0.05_Llate_Pprompt_mean_Thard."""
    letters = {"weight": "w", "layers": "L", "pooling": "P", "target": "T"}
    return "_".join(f"{letters[k]}{str(v).replace(',', '-').replace(' ', '')}" for k, v in point.items())


def align_variants(cfg: PipelineConfig) -> list[AlignVariant]:
    """Every adapter the job trains, seed-major (a seed added later appends its stages)."""
    a = cfg.align
    groups: list[tuple[str, str, dict]] = [("aligned", "", {})]
    if a.ablation:
        groups.append(("lambda0", "_lambda0", {"weight": 0.0}))
    groups += [(f"sweep_{_tag(p)}", f"_sweep_{_tag(p)}", p) for p in a.sweep.points()]
    out = []
    for seed in cfg.seeds or [None]:
        suffix = "" if seed is None else f"_s{seed}"
        out += [AlignVariant(group, seed, f"{a.output_name}{tail}{suffix}", f"align{tail}{suffix}", aux)
                for group, tail, aux in groups]
    return out


def resolve_sweep_layers(spec: str, n_layers: int) -> list[int]:
    if spec in SWEEP_DEPTHS:
        return [max(1, round(SWEEP_DEPTHS[spec] * n_layers))]
    return [int(x) for x in spec.replace(" ", "").split(",")]


def variant_config(cfg: PipelineConfig, v: AlignVariant) -> PipelineConfig:
    """The config that trains variant `v`: its aux settings, seed and output folder."""
    from jobs.config import from_dict, to_dict

    data = to_dict(cfg)
    aux = dict(v.aux)
    if "layers" in aux:
        from transformers import AutoConfig

        from jobs.models.embedded import architecture_source

        n_layers = AutoConfig.from_pretrained(architecture_source(cfg.model)).num_hidden_layers
        aux["layers"] = resolve_sweep_layers(aux["layers"], n_layers)
    data["align"]["aux"].update(aux)
    data["align"]["output_name"] = v.folder
    data["align"]["ablation"] = False
    data["align"]["sweep"] = {}
    if v.seed is not None:
        data["align"]["train"]["seed"] = v.seed
    return from_dict(PipelineConfig, data, source=f"variant {v.name}")


def sampling_seed_offset(seed: int | None) -> int:
    """Added to every sampled decoding's seed for a variant trained with `seed`, so that
    paired variants (aligned@s1, lambda0@s1) are sampled with the same seeds."""
    return 0 if seed is None else 10_007 * seed
