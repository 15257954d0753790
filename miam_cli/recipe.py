"""Recipes: YAML files validated with pydantic; every error is listed at once with its key path.

`miam train RECIPE masking.lambda=2 train.epochs=5` applies dotted overrides (values parsed as YAML)
before validation, so an override is checked exactly like the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from miam_cli.errors import UserError, did_you_mean
from miam_cli.files import read_yaml, yaml_problem
from miam_cli.masking.strategies import STRATEGIES



class _Section(BaseModel):
    # inf and NaN are never meaningful settings: `train.weight_decay=.inf` once trained to NaN and exited 0
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class ModelSection(_Section):
    d_model: int = Field(64, ge=8, le=4096)
    depth: int = Field(2, ge=1, le=48)
    heads: int = Field(4, ge=1, le=64)
    mlp_ratio: float = Field(4.0, gt=0, le=16)
    dropout: float = Field(0.0, ge=0, lt=1)
    pooling: Literal["cls", "mean"] = "cls"
    buckets: int = Field(4, ge=1, le=64)

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelSection":
        if self.d_model % self.heads:
            raise ValueError(f"model.d_model={self.d_model} must be divisible by model.heads={self.heads}")
        return self


class _MaskingBase(_Section):
    """What a recipe says about masking beyond the strategies' own parameters (those are added below,
    from the strategy registry, their single source)."""

    strategy: Literal[tuple(STRATEGIES)] = "miam"  # type: ignore[valid-type]
    monitor_every: int = Field(1, ge=1, le=100000, description="epochs between imbalance evaluations")
    monitor_steps: int = Field(0, ge=0, le=1 << 30, description="also update s_m, d_m, r_m every this many training steps (0: epoch ends only)")
    monitor: Literal["paper", "noise-aware"] = Field(
        "paper", description="imbalance monitor: the paper's d_m = |Δs_m|, or d_m beyond its paired standard error with bounded r_m steps")
    window: int = Field(2, ge=1, le=20, description="noise-aware monitor: evaluations the learning speed spans")
    noise_z: float = Field(1.0, ge=0, le=10, description="noise-aware monitor: standard errors subtracted from |Δs_m|")
    max_step: float = Field(2.0, gt=1, le=1000, description="noise-aware monitor: largest factor r_m may change by per update")
    smoothing: float = Field(0.0, ge=0, lt=1, description="exponential smoothing of d_m")
    score: Literal["skill", "raw"] = Field(
        "skill", description="s_m for the imbalance ratios: skill above chance (AUC − 0.5, top-1 − 1/C, rescaled) or the raw metric")
    eps: float = Field(1e-4, gt=0, le=1, description="added to d_m so a plateau cannot divide by zero")
    monitor_samples: int = Field(0, ge=0, le=1 << 40, description="validation samples used for s_m (0 = all)")

    @model_validator(mode="after")
    def _cross_checks(self):
        try:
            STRATEGIES[self.strategy].check_values(self.strategy_params())
        except UserError as e:  # listed with the other errors, under the key path
            raise ValueError(str(e)) from None
        return self

    def strategy_params(self) -> dict[str, float]:
        """The parameters the chosen strategy accepts (the others are ignored, not errors)."""
        return {k: getattr(self, k) for k in STRATEGIES[self.strategy].params}


def _strategy_fields() -> dict:
    """One float field per strategy parameter, with the registry's default, bounds and description."""
    fields: dict[str, tuple] = {}
    for cls in STRATEGIES.values():
        for name, p in cls.params.items():
            field = (float, Field(p.default, ge=p.ge, gt=p.gt, le=p.le, lt=p.lt, alias=p.alias, description=p.description))
            if name in fields and fields[name][1].default != p.default:
                raise RuntimeError(f"strategy parameter {name!r} is declared twice with different defaults")
            fields[name] = field
    return fields


MaskingSection = create_model("MaskingSection", __base__=_MaskingBase, **_strategy_fields())


class TrainSection(_Section):
    epochs: int = Field(10, ge=1, le=100000)
    batch_size: int = Field(256, ge=1, le=1 << 20)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.05, ge=0, le=10)
    warmup_epochs: float = Field(1.0, ge=0, le=100000)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = Field(1.0, ge=0, le=1e6, description="0 disables clipping")
    seed: int = Field(0, ge=0, lt=1 << 62)
    class_weighting: bool = False
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto | cpu | cuda | cuda:N | mps")
    amp: bool = True
    max_memory_gb: float = Field(4.0, gt=0, le=1 << 20, description="splits larger than this are streamed from the store")
    threads: int | None = Field(None, ge=1, le=4096, description="CPU threads in all on this node (shared by torchrun's ranks); "
                                                              "default: SLURM_CPUS_PER_TASK, else OMP_NUM_THREADS, else the CPUs available")
    loggers: list[Literal["csv", "tensorboard"]] = Field(
        default_factory=lambda: ["csv"],
        description="csv: metrics.csv and imbalance.csv (always written); tensorboard: also RUN_DIR/tensorboard/ "
                    '(pip install "miam[tensorboard]")')


class EvalSection(_Section):
    split: Literal["train", "val", "test"] = "test"
    checkpoint: Literal["best", "last"] = "best"
    batch_size: int = Field(1024, ge=1, le=1 << 20)


class Recipe(_Section):
    name: str | None = None
    store: str
    modalities: dict[str, list[str]] | list[str] | None = Field(
        None, description="masking modalities: {group: [store modalities]}, or a list of store modalities; default: all, one each"
    )
    oracle: list[str] | None = Field(
        None, description="train an oracle: these masking modalities alone, with uniform masking (`miam train RECIPE --oracle GROUP`)")
    model: ModelSection = Field(default_factory=ModelSection)
    masking: MaskingSection = Field(default_factory=MaskingSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @field_validator("modalities", "oracle")
    @classmethod
    def _non_empty(cls, v, info):
        if v is not None and len(v) == 0:
            raise ValueError(f"{info.field_name} must name at least one modality")
        return v

    @model_validator(mode="after")
    def _oracle_masks_uniformly(self) -> "Recipe":
        # An oracle is the reference a strategy is measured against on its inputs: the paper trains
        # it with uniform masking, whatever the recipe's strategy for the multimodal runs.
        if self.oracle:
            self.masking.strategy = "uniform"
        return self

    def groups(self, store_modalities: list[str]) -> dict[str, list[str]]:
        """Resolved masking groups; unknown store modalities are a UserError naming the valid ones."""
        if self.modalities is None:
            groups = {m: [m] for m in store_modalities}
        elif isinstance(self.modalities, list):
            groups = {m: [m] for m in self.modalities}
        else:
            groups = {g: list(ms) for g, ms in self.modalities.items()}
        for g, members in groups.items():
            for m in members:
                if m not in store_modalities:
                    hint = did_you_mean(m, store_modalities)
                    raise UserError(f"modalities.{g}: the store has no modality {m!r}{hint}; it has {', '.join(store_modalities)}")
        if self.oracle:
            unknown = [g for g in self.oracle if g not in groups]
            if unknown:
                raise UserError(f"oracle: no masking modality {unknown[0]!r}{did_you_mean(unknown[0], list(groups))}; "
                                f"the recipe's are {', '.join(groups)}")
            groups = {g: ms for g, ms in groups.items() if g in self.oracle}
        return groups

    def dump(self) -> dict:
        return self.model_dump(by_alias=False, mode="json")


# ------------------------------------------------------------------ loading and overrides
def load_recipe(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A recipe file, or a packaged recipe by name (`demo`, `recipes/demo.yaml`; see `miam_cli.packaged`)."""
    from miam_cli.packaged import find_recipe

    path = find_recipe(path).path
    data = read_yaml(path, "recipe") or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe is a YAML mapping (got {type(data).__name__})")
    for item in overrides:
        apply_override(data, item)
    return validate_recipe(data, source=str(path))


def oracle_override(groups: list[str]) -> str:
    """`--oracle a --oracle b` (or `a,b`, `a+b`) as the override `oracle=[a, b]`."""
    names = [g for item in groups for g in item.replace("+", ",").split(",") if g.strip()]
    return "oracle=[" + ", ".join(n.strip() for n in names) + "]"


def apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. masking.lambda=2")
    key, raw = item.split("=", 1)
    parts = [("lam" if p == "lambda" else p) for p in key.strip().split(".")]
    node = data
    for p in parts[:-1]:
        if not isinstance(node.setdefault(p, {}), dict):
            raise UserError(f"override {item!r}: {p} is not a section")
        node = node[p]
    node.pop("lambda", None) if parts[-1] == "lam" else None
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:  # `train.epochs=[1,`, or a tag such as !!python/object
        raise UserError(f"override {item!r}: the value is not valid YAML ({yaml_problem(e)})") from None


def validate_recipe(data: dict, source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise UserError(format_errors(e, source)) from None


def format_errors(error: ValidationError, source: str) -> str:
    """Every error on its own line: key path, what is wrong, and a did-you-mean for unknown keys."""
    lines = [f"{source}: {error.error_count()} error(s)"]
    for err in error.errors():
        loc = [str(x) for x in err["loc"] if not str(x).startswith(("function-after", "literal["))]
        path = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            section = _section_fields(loc[:-1])
            lines.append(f"  {path}: unknown key{did_you_mean(loc[-1], section)}")
        elif err["type"] == "missing":
            lines.append(f"  {path}: required key missing")
        else:
            got = err.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict) else ""
            lines.append(f"  {path}: {err['msg']}{shown}")
    return "\n".join(lines)


def _section_fields(loc: list[str]) -> list[str]:
    model: Any = Recipe
    for part in loc:
        field = model.model_fields.get(part)
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    names = []
    for name, field in model.model_fields.items():
        names.append(name)
        if field.alias:
            names.append(field.alias)
    return names


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe with the keys users write (`lambda:`, not the field name `lam`)."""
    return yaml.safe_dump(recipe.model_dump(by_alias=True, mode="json"), sort_keys=False)
