"""Coalition games on a trained run: the value of a coalition is the model's output with only that
coalition visible (every other token dropped). No imputer and no background set: the model was
trained under masking, so "absent" is an input it knows.

Coalitions are evaluated in large batches: several coalitions share one forward pass by repeating
the samples with different keep masks, and the cost is counted in coalition evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from miam_cli.errors import UserError, did_you_mean
from miam_cli.scoring.metrics import mean_loss, primary_metric, primary_value
from miam_cli.evaluate.predict import group_visibility, probabilities
from miam_cli.runs.loaded import LoadedRun


@dataclass
class Players:
    names: list[str]  # one per player
    axis: str  # modality | band | year | patch | variable | token | ...
    modality: str | None  # the store modality whose tokens are grouped (None for modality players)
    visibility: list[dict[str, torch.Tensor]]  # per player: store modality -> bool [T_m] it makes visible
    context: dict[str, torch.Tensor]  # always visible (other modalities with --context all)
    grid: tuple[int, int] | None = None

    def token_visibility(self, coalitions: np.ndarray, tokens: dict[str, int]) -> dict[str, torch.Tensor]:
        """{m: [K, T_m] bool}: the tokens visible under each coalition [K, P], the context included,
        for every modality in `tokens` (modality -> T_m); modalities nobody makes visible stay hidden."""
        members = torch.from_numpy(np.asarray(coalitions, dtype=np.float32))
        out = {}
        for m, count in tokens.items():
            owned = torch.stack([v[m] if m in v else torch.zeros(count, dtype=torch.bool) for v in self.visibility])
            vis = (members @ owned.float()) > 0  # a token is visible when any member of the coalition owns it
            out[m] = vis | self.context[m] if m in self.context else vis
        return out


def modality_players(run: LoadedRun) -> Players:
    groups = list(run.layout.group_names)
    return Players(groups, "modality", None, [group_visibility(run.layout, g) for g in groups], {})


def store_modality(run: LoadedRun, modality: str) -> str:
    """The store modality `--modality` names: itself, or a masking group made of exactly one."""
    if modality in run.layout.names:
        return modality
    if modality in run.groups and len(run.groups[modality]) == 1:
        return run.groups[modality][0]
    raise UserError(f"--modality {modality!r}: the model reads {', '.join(run.layout.names)}"
                    f"{did_you_mean(modality, list(run.layout.names) + list(run.groups))}")


def axis_players(run: LoadedRun, modality: str, axis: str, context: str) -> Players:
    """The tokens of one store modality grouped by one of its axes (`token`: each token alone)."""
    modality = store_modality(run, modality)
    spec = run.modality_specs[modality]
    if axis == "token":
        names = spec.token_names()
        index = np.arange(spec.tokens)
    elif axis in spec.axes:
        names = [str(v) for v in spec.axes[axis]]
        index = spec.axis_index(axis)
    else:
        raise UserError(f"--by {axis!r}: modality {modality} has axes {', '.join(spec.axes)} (or token)")
    vis = [{modality: torch.from_numpy(index == k)} for k in range(len(names))]
    ctx = {}
    if context == "all":
        ctx = {m.name: torch.ones(m.tokens, dtype=torch.bool) for m in run.layout.modalities if m.name != modality}
    elif context != "none":
        raise UserError(f"--context {context!r}: expected all or none")
    grid = tuple(spec.grid) if axis == "patch" and spec.grid else None
    return Players(names, axis, modality, vis, ctx, grid)


@dataclass
class Target:
    kind: str  # global | loss | class
    class_index: int | None = None
    label: str = "global"


def parse_target(run: LoadedRun, text: str) -> Target:
    if text in ("global", "loss"):
        metric = primary_metric(run.task)
        return Target(text, None, f"{metric}" if text == "global" else "-loss")
    classes = run.store.classes
    k = run.store.find_class(text)
    if k is not None:
        return Target("class", k, f"p(class {classes.loc[classes['class_index'] == k, 'original_id'].iloc[0]})")
    raise UserError(f"--target {text!r}: not global, loss, nor a class index, id or name of {run.store.path}/classes.parquet "
                    f"(e.g. {', '.join(classes['original_id'].astype(str).head(5))})")


class ModelGame:
    """`value_fn(coalitions [K, P] bool) -> values [K]` for the run's model on a split."""

    def __init__(self, run: LoadedRun, players: Players, target: Target, split: str = "test", device="cpu",
                 batch_rows: int = 8192, max_samples: int | None = None):
        self.run, self.players, self.target, self.device = run, players, target, device
        data = run.split(split)
        if len(data) == 0:
            raise UserError(f"the {split} split of {run.store.path} is empty")
        rows = None
        if max_samples and max_samples < len(data):
            rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:max_samples]
        self.batch = next(data.batches(len(data) if rows is None else len(rows), rows))  # one split, in memory
        # rows per forward pass, capped by memory (~256 MB of token values): 128 px Sentinel-2 is 256 kB a sample
        per_sample = sum(m.tokens * m.features * 4 for m in run.layout.modalities)
        self.batch_rows = int(min(batch_rows, max(64, (256 << 20) // max(per_sample, 1))))
        self.evaluations = 0
        self._embedded_cache: dict[str, torch.Tensor] | None = None

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        coalitions = np.asarray(coalitions, dtype=bool)
        out = np.empty(len(coalitions))
        n = len(self.batch)
        per_pass = max(1, self.batch_rows // max(n, 1))  # coalitions sharing one forward pass
        tokens = {m.name: m.tokens for m in self.run.layout.modalities}
        for start in range(0, len(coalitions), per_pass):
            chunk = coalitions[start : start + per_pass]
            out[start : start + len(chunk)] = self._values(self.players.token_visibility(chunk, tokens), len(chunk))
        self.evaluations += len(coalitions)
        return out

    def embed(self) -> None:
        """Embed the split's tokens now (token-dropping models), so that the first coalitions are not
        charged for it."""
        self._embedded()

    @torch.no_grad()
    def _embedded(self) -> dict[str, torch.Tensor] | None:
        """The split's tokens embedded once (token-dropping models); every coalition reuses them."""
        model = self.run.model
        if not getattr(model, "drops_tokens", False):
            return None
        if self._embedded_cache is None:
            model.eval()
            chunks = [model.tokenize({m: v[i : i + 1024].to(self.device) for m, v in self.batch.values.items()})
                      for i in range(0, len(self.batch), 1024)]
            self._embedded_cache = {m: torch.cat([c[m] for c in chunks]) for m in chunks[0]}
        return self._embedded_cache

    @torch.no_grad()
    def _values(self, visible: dict[str, torch.Tensor], k: int) -> np.ndarray:
        """The value of k coalitions, given the tokens each makes visible ({m: [k, T_m]})."""
        model, names = self.run.model, self.run.layout.names
        model.eval()
        b = self.batch
        n = len(b)
        embedded = self._embedded()
        logits = []
        for start in range(0, n, max(1, self.batch_rows // k)):
            sl = slice(start, start + max(1, self.batch_rows // k))
            # row j * rows + i: coalition j on sample i (a token is kept where it is valid and visible)
            keep = {m: (visible[m][:, None] & b.valid[m][sl][None]).flatten(0, 1).to(self.device) for m in names}
            if embedded is None:  # e.g. the mask-token baseline: repeat the raw values per coalition
                values = {m: b.values[m][sl].repeat(k, 1, 1).to(self.device) for m in names}
                out = model(values, keep)
            else:
                rows = torch.arange(n, device=self.device)[sl].repeat(k)
                out = model.head(model.encode_tokenized(embedded, rows, keep))
            logits.append(out.float().cpu().reshape(k, -1, model.head.out_features))
        logits = torch.cat(logits, dim=1)  # [k, n, C]
        return np.array([self._score(logits[i]) for i in range(k)])

    def _score(self, logits: torch.Tensor) -> float:
        task, target = self.run.task, self.batch.target.numpy()
        if self.target.kind == "loss":
            return -mean_loss(task, target, logits.numpy())
        if self.target.kind == "class":
            return float(probabilities(logits, task)[:, self.target.class_index].mean())
        # rank metrics on logits (see evaluate.predict.evaluate: exact ties survive); the primary one
        # alone: the others (F1@k, recall@k, AUPRC, ...) cost as much again and are thrown away
        return primary_value(task, target, logits.numpy())
