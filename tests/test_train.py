"""Training: exact resume, determinism, learning beyond a constant predictor, recipe errors."""

import csv
import math
import json

import pytest
import torch
import yaml

from miam_cli.cli.main import main
from miam_cli.recipe import load_recipe, validate_recipe
from miam_cli.engine.train import Preempted, train
from miam_cli.errors import UserError
from miam_cli.synth.tokens import make_token_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_token_store(tmp_path_factory.mktemp("store") / "tiny", n=600, seed=1)


def _recipe(store, **train):
    return validate_recipe({"store": str(store), "model": {"d_model": 32, "dropout": 0.1},
                            "train": {"epochs": 3, "batch_size": 64, **train}})


def _weights(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_resumed_run_ends_with_the_same_weights(store, tmp_path):
    full = train(_recipe(store), tmp_path / "full", log=lambda *_: None).run_dir
    with pytest.raises(Preempted):  # killed mid-epoch 2 (epoch 1 has 6 or 7 steps)
        train(_recipe(store), tmp_path / "cut", stop_after_steps=9, log=lambda *_: None)
    train(_recipe(store), tmp_path / "cut", resume=True, log=lambda *_: None)
    a, b = _weights(full), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    rows_a = list(csv.DictReader(open(full / "metrics.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]


def test_same_seed_same_weights_and_different_seed_differs(store, tmp_path):
    a = _weights(train(_recipe(store, epochs=1), tmp_path / "a", log=lambda *_: None).run_dir)
    b = _weights(train(_recipe(store, epochs=1), tmp_path / "b", log=lambda *_: None).run_dir)
    c = _weights(train(_recipe(store, epochs=1, seed=5), tmp_path / "c", log=lambda *_: None).run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_same_seed_same_weights_with_two_threads(store, tmp_path):
    # with 2 threads some CPU backward kernels accumulate in a thread-dependent order unless torch's
    # deterministic mode is on (train() turns it on for CPU runs, and restores it afterwards)
    threads = torch.get_num_threads()
    # batch 256 x d_model 128: tensors above torch's parallel grain size, so both threads work
    recipe = validate_recipe({"store": str(store), "model": {"d_model": 128}, "train": {"epochs": 2, "batch_size": 256, "threads": 2}})
    runs = [_weights(train(recipe, tmp_path / f"r{i}", log=lambda *_: None).run_dir) for i in range(3)]
    assert all(torch.equal(runs[0][k], other[k]) for other in runs[1:] for k in runs[0])
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads  # train.threads applied for the run only


def test_training_beats_a_constant_predictor(store, tmp_path):
    result = train(_recipe(store, epochs=6, lr=3e-3), tmp_path / "run", log=lambda *_: None)
    run = result.run_dir
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    # the result is metrics.csv's last row, every column, as the numbers written
    assert list(result.metrics) == list(rows[-1]) and result.metrics["epoch"] == 6
    assert all(result.metrics[k] == (float(v) if v != "" else None) for k, v in rows[-1].items())
    # a constant predictor has macro AUC 0.5 on every class
    assert float(rows[-1]["val_auc"]) > 0.75
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    # the imbalance monitor ran every epoch and its ratios reached the strategy
    assert all(r["r_tabular"] != "" for r in rows)
    assert float(rows[0]["r_tabular"]) == 1.0  # before two evaluations r = 1
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["strategy"]["name"] == "miam"
    assert (run / "imbalance.png").stat().st_size > 1000
    env = json.loads((run / "env.json").read_text())
    assert env["seed"] == 0 and "torch" in env
    assert yaml.safe_load((run / "recipe.yaml").read_text())["masking"]["lambda"] == 1.0  # the key users write


def test_train_refuses_to_overwrite_a_run(store, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"store": str(store), "train": {"epochs": 1, "batch_size": 128}, "model": {"d_model": 16}}))
    with pytest.raises(SystemExit) as e:
        main(["train", str(path), "--out", str(tmp_path / "run"), "--json"])
    assert e.value.code == 0
    doc = json.loads(capsys.readouterr().out)  # numbers, not metrics.csv's text
    assert doc["run_dir"] == str(tmp_path / "run") and doc["metrics"]["epoch"] == 1
    assert isinstance(doc["metrics"]["train_loss"], float) and 0 < doc["metrics"]["val_auc"] <= 1
    with pytest.raises(SystemExit) as e:
        main(["train", str(path), "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    assert "--resume" in capsys.readouterr().err


def test_a_training_refused_for_a_bad_store_does_not_block_the_corrected_command(store, tmp_path, cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"store": str(tmp_path / "not-a-store"), "train": {"epochs": 1, "batch_size": 128},
                                      "model": {"d_model": 16}}))
    (tmp_path / "not-a-store").mkdir()
    code, _, err = cli("train", recipe, "--out", tmp_path / "run")
    assert code == 2 and "not a token store" in err
    code, _, err = cli("train", recipe, f"store={store}", "--out", tmp_path / "run")
    assert code == 0, err
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()


def test_validate_lists_every_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"store": "x", "masking": {"strategy": "miamm", "kapa": 2}, "train": {"epochs": 0}}))
    with pytest.raises(SystemExit) as e:
        main(["validate", str(path), "model.d_model=abc"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "4 error(s)" in err
    assert "masking.kapa: unknown key (did you mean 'kappa'?)" in err
    assert "masking.strategy" in err and "train.epochs" in err and "model.d_model" in err
    assert "Traceback" not in err


def test_overrides_and_lambda_alias(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("store: s\nmasking:\n  lambda: 2\n")
    r = load_recipe(path, ["masking.lambda=3", "train.epochs=5", "masking.strategy=uniform"])
    assert r.masking.lam == 3 and r.train.epochs == 5 and r.masking.strategy == "uniform"
    assert r.masking.strategy_params() == {}
    assert load_recipe(path).masking.lam == 2


def test_monitor_steps_updates_the_ratios_within_epochs_and_resumes_exactly(store, tmp_path):
    # 600 samples, ~420 train, batch 64: 7 steps per epoch; every 3 steps -> updates at steps 3, 6 (not 7:
    # the epoch end validates anyway), 9, 12, and the 2 epoch ends: 6 updates over 2 epochs
    recipe = _recipe(store, epochs=2)
    recipe.masking.monitor_steps = 3
    full = train(recipe, tmp_path / "full", log=lambda *_: None).run_dir
    updates = list(csv.DictReader(open(full / "imbalance.csv")))
    steps = [int(u["step"]) for u in updates]
    per_epoch = len(list(csv.DictReader(open(full / "metrics.csv"))))
    assert per_epoch == 2 and steps == [3, 6, 7, 9, 12, 14]
    assert float(updates[1]["r_tabular"]) != 1.0  # the second update already has a learning speed
    with pytest.raises(Preempted):  # stopped right after the mid-epoch update at step 9
        train(recipe, tmp_path / "cut", stop_after_steps=9, log=lambda *_: None)
    train(recipe, tmp_path / "cut", resume=True, log=lambda *_: None)
    a, b = _weights(full), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert list(csv.DictReader(open(tmp_path / "cut" / "imbalance.csv"))) == updates


def test_tensorboard_logger_records_losses_validation_and_the_imbalance_monitor(tiny_store, tiny_trainer, tmp_path):
    pytest.importorskip("tensorboard")  # the optional extra miam[tensorboard] (in the test extra)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tiny_trainer(tiny_store, tmp_path / "run", epochs=2, loggers=["csv", "tensorboard"])
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    imbalance = list(csv.DictReader(open(run / "imbalance.csv")))
    steps = [int(r["step"]) for r in imbalance]
    assert [s for s, _ in scalars["loss/train"]] == list(range(1, steps[-1] + 1))  # every step
    assert [v for _, v in scalars["val/auc"]] == pytest.approx([float(r["val_auc"]) for r in rows], rel=1e-6)
    assert [v for _, v in scalars["loss/train_epoch"]] == pytest.approx([float(r["train_loss"]) for r in rows], rel=1e-6)
    for group in ("tabular", "image", "series"):
        assert [s for s, _ in scalars[f"imbalance/r/{group}"]] == steps
        assert [v for _, v in scalars[f"imbalance/r/{group}"]] == pytest.approx([float(r[f"r_{group}"]) for r in imbalance], rel=1e-6)
        assert [v for _, v in scalars[f"masking/p/{group}"]] == pytest.approx([float(r[f"p_{group}"]) for r in rows], rel=1e-6)
    assert len(scalars["imbalance/d/image"]) == len(steps) - 1  # no learning speed before the second evaluation


def test_tensorboard_logger_without_the_package_is_one_clear_error(tiny_store, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    recipe = validate_recipe({"store": str(tiny_store), "train": {"epochs": 1, "loggers": ["tensorboard"]}})
    with pytest.raises(UserError, match=r'pip install "miam\[tensorboard\]"'):
        train(recipe, out=tmp_path / "run", log=lambda *_: None)


def test_noise_aware_miam_records_errors_shares_and_resumes_exactly(store, tmp_path):
    """masking.monitor=noise-aware with whole-modality corners: imbalance.csv carries each s_m's standard
    error and the speed's noise, r_m never moves by more than max_step per update (monitor_steps adds
    updates within epochs), metrics.csv reports the share of samples that saw one modality alone,
    and a run stopped mid-epoch resumes to the same weights (the monitor's history is checkpointed)."""
    masking = {"strategy": "miam", "monitor": "noise-aware", "kappa_per_token": 1.0, "max_step": 1.5, "monitor_steps": 3}

    def recipe():
        return validate_recipe({"store": str(store), "model": {"d_model": 32}, "masking": masking,
                                "train": {"epochs": 3, "batch_size": 64}})

    full = train(recipe(), tmp_path / "full", log=lambda *_: None).run_dir
    with pytest.raises(Preempted):
        train(recipe(), tmp_path / "cut", stop_after_steps=8, log=lambda *_: None)
    train(recipe(), tmp_path / "cut", resume=True, log=lambda *_: None)
    a, b = _weights(full), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)

    updates = list(csv.DictReader(open(full / "imbalance.csv")))
    groups = [k[2:] for k in updates[0] if k.startswith("r_")]
    assert len(updates) > 3 and groups
    for g in groups:
        assert all(float(u[f"se_{g}"]) > 0 for u in updates)
        assert all(float(u[f"se_delta_{g}"]) > 0 for u in updates[1:])
        logs = [math.log(float(u[f"r_{g}"])) for u in updates]
        assert max(abs(x - y) for x, y in zip(logs, logs[1:])) <= math.log(1.5) + 1e-9
    rows = list(csv.DictReader(open(full / "metrics.csv")))
    for r in rows:
        shares = [float(r[f"alone_{g}"]) for g in groups]
        assert all(0 <= s <= 1 for s in shares) and 0 < sum(shares) <= 1
