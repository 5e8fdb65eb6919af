"""Measuring: everything that runs the model to find and judge super weights. `profile` records the down
projections' extremes, `detect` finds spikes and attributes them to weights, `triage` ranks candidates by KL,
`replay` batches ablations from their layer, `evalset` cuts the evaluation windows, `evaluator` measures paired
per-window effects, `sequential` holds the statistics (error spent across looks, zones), `judge` asks and
answers questions of the evaluator, `validate` turns them into verdicts, `ablation` zeroes weights."""
