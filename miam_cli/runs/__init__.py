"""The run directory, its one owner: written by training, read by every stage that uses a trained model.

    RUN/recipe.yaml  env.json  metrics.csv  imbalance.csv  checkpoints/{best,last}.pt  eval/  attribution/  predict/  maps/

- `rundir`: `RunDir` (claiming and writing a run dir), `run_recipe` (its validated recipe), `store_path`
  (its token store, found again after a move)
- `checkpoint`: the checkpoint format (atomic writes, `weights_only` loads, the epoch commit), `load_model`
- `loaded`: `open_run` -> `LoadedRun` (model, store, masking groups, task)
- `find`: `newest_run`, `resolve_run` (which run a command means)

`engine` (which writes runs) and `evaluate`, `attribution`, `predict`, `maps` (which read them) depend
on this package; it depends on none of them. Import from the modules (importing the package loads no torch).
"""
