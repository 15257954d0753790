"""The training loop: masking draws, token-dropping forward, the imbalance monitor, checkpoints.

Exact resume: the shuffle order of an epoch comes from `order_gen` whose state at the epoch's start
is saved, the masking draws from `mask_gen` whose current state is saved, dropout from torch's global
RNG (saved), so a run stopped after any step and resumed ends with the same weights (CPU).

Under DDP (see `miam_cli.engine.dist`) every rank draws the order and the masks of the whole global
batch and trains on its slice (`dist.local_rows`); its mean loss is weighted by its slice size
(`dist.slice_weight`), so DDP's gradient average is the gradient of the global batch's mean loss
even when the last batch does not divide by the world size (no drop_last: W ranks see the same
samples as one process). A rank whose slice is empty (a batch smaller than the world size) runs one
row with weight 0, so every parameter still takes part in the all-reduce. With dropout > 0 the
dropout draws differ from a one-process run (each rank has its own torch RNG stream); without it,
W ranks reproduce one process's updates up to float summation order. Validation runs on every rank
with the bare model (no collectives) and rank 0's numbers are broadcast, so the adaptive strategy
and "best" stay identical everywhere. Only rank 0 writes files; a stop signal that reached any rank
stops all ranks after the same step.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from miam_cli import plotstyle, threads
from miam_cli.data.batch import load_split
from miam_cli.device import autocast, resolve_device
from miam_cli.engine import dist
from miam_cli.engine.loggers import Loggers
from miam_cli.engine.signals import STOP_SIGNALS, stop_received
from miam_cli.errors import RuntimeFailure, UserError, describe_os_error
from miam_cli.scoring.metrics import compute_metrics, primary_metric
from miam_cli.evaluate.predict import evaluate, group_visibility, predict
from miam_cli.scoring.uncertainty import metric_influence
from miam_cli.masking.keep import build_keep, mean_mask_rate, single_modality_counts
from miam_cli.masking.monitor import ImbalanceMonitor, plot_imbalance
from miam_cli.masking.strategies import make_strategy
from miam_cli.model.layout import TokenLayout
from miam_cli.model.losses import make_loss, positive_class_weights
from miam_cli.model.transformer import MiamModel
from miam_cli.recipe import Recipe
from miam_cli.runs.checkpoint import best_epoch_of, commit_epoch, load_checkpoint, reconcile, save_checkpoint
from miam_cli.runs.rundir import RunDir
from miam_cli.store.reader import TokenStore

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again" — a requeued job continues with --resume


@dataclass
class TrainResult:
    """What `train` returns: the run dir and its last epoch's metrics (every column of metrics.csv, as
    numbers; None where that epoch recorded nothing, such as r_m between monitor updates)."""

    run_dir: Path
    metrics: dict[str, float | int | None]


class Preempted(Exception):
    """Raised after `last.pt` was written because SLURM (SIGUSR1/SIGTERM) asked us to stop."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = Path(run_dir)

    @property
    def resume_command(self) -> str:
        return resume_command(self.run_dir)


def resume_command(run_dir: Path) -> str:
    """The run's own resolved recipe (overrides included) continues it exactly."""
    import shlex

    return f"miam train {shlex.quote(str(RunDir(run_dir).recipe_file))} --out {shlex.quote(str(run_dir))} --resume"


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches done in the current (unfinished) epoch
    global_step: int = 0
    best: float = -math.inf
    best_epoch: int = 0  # the epoch best.pt holds (0: none yet)
    order_state: torch.Tensor | None = None  # order_gen state at the start of the current epoch
    rows: list[dict] = field(default_factory=list)  # metrics.csv so far
    loss_sum: float = 0.0
    p_sum: list[float] = field(default_factory=list)
    alone_sum: list[float] = field(default_factory=list)  # samples seeing only modality m, this epoch
    samples: int = 0  # samples drawn this epoch


class Trainer:
    def __init__(self, recipe: Recipe, run: RunDir, progress=None, log=print):
        self.recipe, self.run, self.progress, self.log = recipe, run, progress, log
        self.env = dist.current()
        cfg = recipe.train
        self.device = resolve_device(cfg.device)
        self.store = TokenStore(recipe.store)
        self.groups = recipe.groups(self.store.modalities)
        if recipe.oracle:
            log(f"oracle of {'+'.join(self.groups)}: trained on {'+'.join(self.groups)} alone, with uniform masking")
        self.layout = TokenLayout.from_specs(self.store.meta.modalities, self.groups)
        self.task = self.store.meta.task.type
        self.metric = primary_metric(self.task)
        store_mods = self.layout.names
        limit = int(cfg.max_memory_gb * (1 << 30))
        self.train_data = load_split(self.store, "train", store_mods, limit)
        self.val_data = load_split(self.store, "val", store_mods, limit)
        if len(self.train_data) == 0:
            raise UserError(f"{recipe.store}: the train split is empty")
        torch.manual_seed(cfg.seed)
        m = recipe.model
        self.model = MiamModel(self.layout, self.store.meta.task.num_classes, d_model=m.d_model, depth=m.depth, heads=m.heads,
                               mlp_ratio=m.mlp_ratio, dropout=m.dropout, pooling=m.pooling, buckets=m.buckets).to(self.device)
        self.ddp_model = dist.wrap(self.model, self.device)
        mk = recipe.masking
        self.strategy = make_strategy(mk.strategy, self.layout.num_groups, tokens=self.layout.group_tokens(), **mk.strategy_params())
        self.monitor = ImbalanceMonitor(list(self.layout.group_names), eps=mk.eps, smoothing=mk.smoothing,
                                        chance=self._chance_level() if mk.score == "skill" else None,
                                        mode=mk.monitor, window=mk.window, z=mk.noise_z, max_step=mk.max_step)
        self.loss_fn = self._loss().to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.train_data) / cfg.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda())
        # the same seeds on every rank: order and masks are drawn for the global batch, then sliced
        self.order_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.mask_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.token_group = self.layout.token_group
        self.state = TrainState(p_sum=[0.0] * self.layout.num_groups, alone_sum=[0.0] * self.layout.num_groups)
        self._stop_requested = False
        self.loggers = Loggers([], run.path, [])  # fit() opens the recipe's

    # ------------------------------------------------------------------ set-up helpers

    def _chance_level(self) -> float:
        """The monitor metric of a model that knows nothing: AUC 0.5, top-1 1/C (a uniform guess)."""
        return 0.5 if self.metric == "auc" else 1.0 / self.store.meta.task.num_classes

    def _loss(self):
        weights = None
        if self.recipe.train.class_weighting and self.task == "multilabel":
            weights = positive_class_weights(self.train_data_targets())
        return make_loss(self.task, weights)

    def train_data_targets(self) -> torch.Tensor:
        return torch.from_numpy(self.store.targets(self.store.split_indices("train")))

    def _lr_lambda(self):
        cfg = self.recipe.train
        total = cfg.epochs * self.steps_per_epoch
        warmup = int(cfg.warmup_epochs * self.steps_per_epoch)

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if cfg.schedule == "constant":
                return 1.0
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return factor

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        s = self.state
        return {
            "model": self.model.state_dict(),
            "model_config": self.model.model_config(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "strategy": self.strategy.state_dict(),
            "monitor": self.monitor.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "order": self.order_gen.get_state(), "mask": self.mask_gen.get_state(),
                    "order_epoch_start": s.order_state if s.order_state is not None else self.order_gen.get_state()},
            "progress": {"epoch": s.epoch, "step_in_epoch": s.step_in_epoch, "global_step": s.global_step, "best": s.best,
                         "best_epoch": s.best_epoch, "loss_sum": s.loss_sum, "p_sum": list(s.p_sum), "alone_sum": list(s.alone_sum),
                         "samples": s.samples},
            "metrics": s.rows,
            "recipe": self.recipe.dump(),
            "groups": self.groups,
            "task": self.task,
        }

    def restore(self, path: Path, ckpt: dict | None = None) -> None:
        ckpt = load_checkpoint(path) if ckpt is None else ckpt
        if ckpt.get("model_config") != self.model.model_config():
            raise UserError(f"{path}: the checkpoint's model does not match the recipe (changed model or store?)")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.strategy.load_state_dict(ckpt["strategy"])
        self.monitor.load_state_dict(ckpt["monitor"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.order_gen.set_state(ckpt["rng"]["order"])
        self.mask_gen.set_state(ckpt["rng"]["mask"])
        p = ckpt["progress"]
        self.state = TrainState(epoch=p["epoch"], step_in_epoch=p["step_in_epoch"], global_step=p["global_step"], best=p["best"],
                                best_epoch=best_epoch_of(ckpt) or 0, order_state=ckpt["rng"]["order_epoch_start"], rows=list(ckpt["metrics"]),
                                loss_sum=p["loss_sum"], p_sum=list(p["p_sum"]),
                                # absent in checkpoints written before the count existed: start from 0
                                alone_sum=list(p.get("alone_sum", [0.0] * self.layout.num_groups)),
                                samples=int(p.get("samples", 0)))
        self.log(f"resumed from {path}: epoch {self.state.epoch}, step {self.state.step_in_epoch} of the next")

    def save(self, name: str) -> None:
        if self.env.is_main:
            save_checkpoint(self.run.checkpoint(name), self.checkpoint_state())

    # ------------------------------------------------------------------ the loop
    def fit(self, stop_after_steps: int | None = None) -> dict:
        # after a resume, the steps logged past the checkpoint by the stopped run are purged
        self.loggers = Loggers(self.recipe.train.loggers, self.run.path, list(self.layout.group_names),
                               resume_step=self.state.global_step or None, active=self.env.is_main)
        previous = self._install_signal_handlers()
        try:
            return self._fit(stop_after_steps)
        finally:  # after training a SIGTERM must kill the process again (e.g. a later stage of a pipeline)
            self._restore_signal_handlers(previous)
            self.loggers.close()

    def _fit(self, stop_after_steps: int | None) -> dict:
        cfg = self.recipe.train
        steps_this_run = 0
        if self._stop_requested and self.state.epoch < cfg.epochs:  # stopped during start-up: no step taken
            self._stop(self.state.step_in_epoch)
        while self.state.epoch < cfg.epochs:
            order = self._epoch_order()
            start = time.monotonic()
            self.model.train()
            for i, rows in enumerate(order.split(self.recipe.train.batch_size)):
                if i < self.state.step_in_epoch:
                    continue  # resumed mid-epoch: these batches were done before the stop
                self._step(rows)
                self.state.step_in_epoch = i + 1
                steps_this_run += 1
                every = self.recipe.masking.monitor_steps
                if every and self.state.global_step % every == 0 and i + 1 < self.steps_per_epoch:
                    self._monitor_within_epoch()  # the epoch's last step is followed by _validate anyway
                if self.progress:
                    self.progress(self.state.epoch, i + 1, self.steps_per_epoch, cfg.epochs)
                stop = self._stop_requested or (stop_after_steps is not None and steps_this_run >= stop_after_steps)
                if dist.any_true(stop, self.env):  # signals reach ranks at different times: stop all after this step
                    self._stop(i + 1)
            self._end_epoch(time.monotonic() - start)
        return self.state.rows[-1] if self.state.rows else {}

    def _stop(self, step: int) -> None:
        """Write last.pt (rank 0) and raise Preempted on every rank once it is on disk."""
        # last.pt holds rank 0's state: the unfinished epoch's loss so far must be the ranks' mean
        self.state.loss_sum = dist.mean(self.state.loss_sum, self.env)
        self.save("last")
        dist.barrier(self.env)  # no rank exits (and gets its launcher to kill rank 0) before last.pt exists
        raise Preempted(f"stopped at epoch {self.state.epoch + 1}, step {step}; {self.run.checkpoint('last')} written", self.run.path)

    def _epoch_order(self) -> torch.Tensor:
        """The shared sample order of the current epoch (every rank draws the same permutation)."""
        if self.state.step_in_epoch == 0 or self.state.order_state is None:
            self.state.order_state = self.order_gen.get_state()
        else:
            self.order_gen.set_state(self.state.order_state)
        return torch.randperm(len(self.train_data), generator=self.order_gen)

    def _step(self, rows: torch.Tensor) -> None:
        """One global batch. Every rank draws the masks of the whole global batch with the same
        generator and trains on its own slice, so world size N gives the same update as 1 process.
        The masks need the validity of every row of the global batch; the values of its own slice
        are all a rank reads (a streamed store reads no other rank's values)."""
        names = self.layout.names
        p = self.strategy.sample(len(rows), self.mask_gen)
        valid = self.layout.flatten_keep(self.train_data.valid(rows))
        keep_flat = build_keep(p, valid, self.token_group, self.mask_gen)
        mine = dist.local_rows(len(rows), self.env)
        weight = dist.slice_weight(len(mine), len(rows), self.env)
        if len(mine) == 0:  # fewer rows than ranks: one row with weight 0 keeps every parameter in the all-reduce
            mine = torch.arange(1)
        batch = self.train_data.load(rows[mine]).to(self.device)
        keep = {m: k.to(self.device) for m, k in self.layout.split_flat(keep_flat[mine]).items()}
        with autocast(self.device, enabled=self.recipe.train.amp):
            logits = self.ddp_model({m: batch.values[m] for m in names}, keep)
            loss = self.loss_fn(logits.float(), batch.target)
        if dist.any_true(not bool(torch.isfinite(loss.detach())), self.env):  # every rank stops before a NaN step
            self._non_finite(f"the training loss is not finite ({float(loss.detach())})")
        if weight != 1.0:  # slice mean x W n_local / n: DDP's average over ranks is then the global mean
            loss = loss * weight
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.state.global_step += 1
        step_loss = float(loss.detach())
        self.state.loss_sum += step_loss
        self.loggers.step(self.state.global_step, step_loss, self.scheduler.get_last_lr()[0])
        self.state.p_sum = [a + float(b) for a, b in zip(self.state.p_sum, mean_mask_rate(p))]
        alone = single_modality_counts(keep_flat, self.token_group, self.layout.num_groups)
        self.state.alone_sum = [a + float(b) for a, b in zip(self.state.alone_sum, alone)]
        self.state.samples += len(rows)

    def _end_epoch(self, seconds: float) -> None:
        s = self.state
        steps = max(1, s.step_in_epoch)
        row = {"epoch": s.epoch + 1, "train_loss": dist.mean(s.loss_sum / steps, self.env), "lr": self.scheduler.get_last_lr()[0]}
        row.update({f"p_{g}": v / steps for g, v in zip(self.layout.group_names, s.p_sum)})
        row.update({f"alone_{g}": v / max(s.samples, 1) for g, v in zip(self.layout.group_names, s.alone_sum)})
        row.update(self._validate())
        row["seconds"] = seconds
        row["samples_per_s"] = len(self.train_data) / max(seconds, 1e-9)
        if not all(bool(torch.isfinite(t).all()) for t in self.model.state_dict().values()):
            self._non_finite("the model's weights are not finite")
        s.rows.append(row)
        self.loggers.epoch(s.global_step, row, self.metric)
        s.epoch, s.step_in_epoch, s.loss_sum, s.order_state = s.epoch + 1, 0, 0.0, None
        s.p_sum, s.alone_sum, s.samples = [0.0] * self.layout.num_groups, [0.0] * self.layout.num_groups, 0
        improved = row[f"val_{self.metric}"] > s.best or not math.isfinite(s.best)
        if improved and math.isfinite(row[f"val_{self.metric}"]):
            s.best = row[f"val_{self.metric}"]
        if improved:
            s.best_epoch = s.epoch
        if self.env.is_main:  # checkpoints first, then metrics.csv: resume rewrites the table from last.pt
            commit_epoch(self.run.checkpoints, self.checkpoint_state(), improved)
            self._write_metrics()
        self.log(self._epoch_line(row))

    def _non_finite(self, what: str) -> None:
        """Stop (exit 1) before a non-finite step or checkpoint: best.pt and last.pt keep the last finite state."""
        s = self.state
        kept = f"checkpoints keep epoch {s.epoch}" if s.epoch else "no checkpoint was written"
        raise RuntimeFailure(f"epoch {s.epoch + 1}, step {s.step_in_epoch + 1}: {what}; training stopped ({kept}). "
                             "Lower train.lr, or check the store with `miam store verify`")

    def _validate(self) -> dict:
        """Full-input validation metric, and every `monitor_every` epochs the unimodal s_m (all ranks agree:
        validation runs on the whole val split on every rank, so r_m is identical everywhere)."""
        if len(self.val_data) == 0:
            return {f"val_{self.metric}": float("nan")}
        bs = self.recipe.eval.batch_size
        # self.model, not the DDP wrapper: evaluation has no collectives, and every rank runs all of it
        val = evaluate(self.model, self.val_data, self.task, None, bs, self.device)[self.metric]
        scores = self._unimodal_scores() if (self.state.epoch + 1) % self.recipe.masking.monitor_every == 0 else None
        # rank 0's numbers everywhere: GPU kernels may differ in the last bit between ranks
        val, scores = dist.broadcast_object((val, scores), self.env)
        out = {f"val_{self.metric}": val}
        if scores is not None:
            record = self._update_imbalance(scores)
            out.update({k: v for k, v in record.items() if k not in ("epoch", "step")})
        return out

    def _unimodal_scores(self) -> tuple[list[float], np.ndarray]:
        """s_m: the validation metric with only group m visible (on `monitor_samples` rows), and each
        row's influence on it [M, N] (the monitor's standard errors)."""
        rows, bs = self._monitor_rows(), self.recipe.eval.batch_size
        scores, influence = [], []
        for g in self.layout.group_names:
            pred = predict(self.model, self.val_data, group_visibility(self.layout, g), bs, self.device, rows)
            score = compute_metrics(self.task, pred.targets, pred.logits)[self.metric]
            scores.append(score if math.isfinite(score) else self._chance_level())  # no scorable class: chance
            influence.append(metric_influence(self.task, pred.targets, pred.logits)[1])
        return scores, np.stack(influence)

    def _update_imbalance(self, measured: tuple[list[float], np.ndarray]) -> dict:
        scores, influence = measured
        record = self.monitor.update(scores, influence)
        record["step"] = self.state.global_step
        self.loggers.imbalance(self.state.global_step, record)
        self.strategy.update(ratios=self.monitor.ratios, scores=torch.tensor(scores, dtype=torch.float32))
        return record

    def _monitor_within_epoch(self) -> None:
        """`masking.monitor_steps`: s_m, d_m and r_m also every k steps, not only at epoch ends."""
        scores = dist.broadcast_object(self._unimodal_scores(), self.env)
        self._update_imbalance(scores)
        self.model.train()  # evaluate() left the model in eval mode

    def _monitor_rows(self):
        n = self.recipe.masking.monitor_samples
        if not n or n >= len(self.val_data):
            return None
        return torch.randperm(len(self.val_data), generator=torch.Generator().manual_seed(self.recipe.train.seed))[:n]

    def metric_keys(self) -> list[str]:
        """The columns of metrics.csv: every key of every epoch's row, in order of first appearance."""
        return list(dict.fromkeys(k for r in self.state.rows for k in r))

    def final_metrics(self) -> dict:
        """The last row of metrics.csv over all its columns (None where the epoch recorded nothing)."""
        last = self.state.rows[-1] if self.state.rows else {}
        return {k: last.get(k) for k in self.metric_keys()} if last else {}

    def _write_metrics(self) -> None:
        rows = self.state.rows
        keys = self.metric_keys()
        self.run.write_metrics(keys, rows)
        updates = self.monitor.records  # with masking.monitor_steps, more than one per epoch
        if updates:
            self.run.write_metrics(["step", *dict.fromkeys(k for r in updates for k in r if k != "step")], updates, "imbalance.csv")
        try:
            mk = self.recipe.masking
            subtitle = plotstyle.context(self.run.path, mk.strategy, "val", [f"{mk.monitor} monitor"])
            plot_imbalance(rows, list(self.layout.group_names), self.run.path / "imbalance.png", subtitle)
        except Exception as e:  # a plot must never kill a training run
            self.log(f"warning: imbalance plot not written ({e})")

    def _epoch_line(self, row: dict) -> str:
        r = " ".join(f"r_{g}={row[f'r_{g}']:.2f}" for g in self.layout.group_names if f"r_{g}" in row)
        return (f"epoch {row['epoch']}/{self.recipe.train.epochs} loss {row['train_loss']:.4f} "
                f"val_{self.metric} {row[f'val_{self.metric}']:.4f} {r} ({row['seconds']:.1f}s)")

    def _install_signal_handlers(self) -> dict:
        """SLURM sends SIGUSR1 (with --signal) or SIGTERM before a time limit: finish the step, save, exit.
        Returns the handlers replaced, for `_restore_signal_handlers`."""
        def request_stop(signum, frame):
            self._stop_requested = True

        previous = {}
        for sig in STOP_SIGNALS:
            try:
                previous[sig] = signal.signal(sig, request_stop)
            except ValueError:  # not in the main thread (e.g. called from a test runner thread)
                pass
        self._stop_requested = self._stop_requested or stop_received()  # a signal during start-up
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _resume(trainer: Trainer, run: RunDir, log) -> None:
    """Continue from last.pt, after repairing what a crash may have left (a half-committed epoch, a
    metrics.csv behind the checkpoint): the run then reads as if it had stopped at a clean point."""
    last_path = run.checkpoint("last")
    last = load_checkpoint(last_path) if last_path.exists() else None
    if trainer.env.is_main:
        reconcile(run.checkpoints, last, log)
        run.remove_temporaries()
    if last is None:
        log(f"{run.path}: no last.pt yet, starting from scratch")
        return
    trainer.restore(last_path, last)
    if trainer.env.is_main and trainer.state.rows:
        trainer._write_metrics()  # the table the checkpoint vouches for (a crash may have cut the last write)


def claim_run_dir(recipe: Recipe, out: Path | None, resume: bool) -> RunDir:
    """Rank 0 names (and creates) the run dir once and shares it; other ranks create nothing.
    A refusal on rank 0 is raised on every rank, so no rank is left waiting for the name."""
    env = dist.current()
    decided: dict = {}
    failure: Exception | None = None
    if env.is_main:
        try:
            decided["path"] = str(RunDir.claim(recipe, out, resume).path)
        except Exception as e:  # told to every rank before raising, or they would wait forever
            failure, decided["error"] = e, str(e)
    decided = dist.broadcast_object(decided, env)
    if failure is not None:
        raise failure
    if "error" in decided:
        raise UserError(f"rank 0: {decided['error']}")
    return RunDir(Path(decided["path"]))


def train(recipe: Recipe, out: Path | None = None, resume: bool = False, progress=None, log=print,
          stop_after_steps: int | None = None) -> TrainResult:
    """Train `recipe` into a run dir (created, or continued with `resume`); returns the run dir and
    the last epoch's metrics.

    Under torchrun or srun every rank calls this; only rank 0 logs, reports progress and writes files,
    and the process group is left at the end (also when stopped by a signal or an error)."""
    stack = contextlib.ExitStack()
    run = None
    try:
        if not dist.current().is_main:
            progress, log = None, _quiet
        run = claim_run_dir(recipe, out, resume)
        log(f"run dir: {run.path}" + (" (resuming)" if resume else ""))
        stack.enter_context(threads.limited(recipe.train.threads, log, label="train.threads"))
        trainer = Trainer(recipe, run, progress, log)
        stack.enter_context(deterministic_on_cpu(trainer.device))
        if resume:
            _resume(trainer, run, log)
        if trainer.env.is_main:
            run.write_start(recipe, trainer)
        trainer.fit(stop_after_steps)
        dist.barrier(trainer.env)  # every rank returns once rank 0 has written the last epoch's files
        return TrainResult(run.path, trainer.final_metrics())
    except OSError as e:  # a full disk, a folder made read-only: the run dir is as the last commit left it
        again = (f"`{resume_command(run.path)}`" if run is not None and run.recipe_file.is_file()
                 else "the same `miam train` command with --resume")
        raise RuntimeFailure(f"{describe_os_error(e)}; training stopped. The run keeps its last committed epoch: "
                             f"fix the cause, then continue with {again}") from None
    finally:
        stack.close()
        dist.shutdown()


@contextlib.contextmanager
def deterministic_on_cpu(device: torch.device):
    """Bit-identical runs for a fixed seed on CPU, whatever the thread count.

    With two or more threads, some CPU backward kernels (gathers with repeated indices, as in the
    per-band projections) accumulate in a thread-dependent order: two runs of the demo recipe
    differed from the 9th digit of the first epoch's loss, and MIAM's feedback loop (s_m → r_m → p_m)
    grew that into different models. torch's deterministic mode picks ordered kernels; measured cost
    3–7% per epoch on the demo recipe. GPUs keep their fast kernels (mixed precision is not
    bit-reproducible anyway). The previous setting is restored on exit."""
    if device.type != "cpu":
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _quiet(*_args, **_kwargs) -> None:
    pass
