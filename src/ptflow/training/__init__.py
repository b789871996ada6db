"""The training layer: one run, from data to a saved model.

`train.py` runs it in order (data, model, optimizer, loop, test, save); `loop.py` is the epoch
loop; `steps.py` (the optimizer, its schedule, the batches and the loss each step takes),
`precision.py` (autocast, fp16's gradient scaler, --channels_last),
`optimizers.py`, `interrupt.py` (Ctrl-C and SIGTERM), exact resume (`checkpoint.py`: the
training state saved and restored; `identity.py`: the model, data and code it is only valid
with; `resume.py`: which flags `--resume` may change), `runs.py` (run folders), `scoring.py`
(every metric, declared once, and how test predictions are scored) and `tracking.py`
(TensorBoard, MLflow) serve it; `folds.py` cross-validates; `distributed.py` says which process
of a torchrun job this is and holds the collectives, `ddp.py` what changes with several
processes, and `launch.py` starts them through torchrun.
"""
