"""What a run writes and reads back: checkpoints (checkpoint.py), the state protocol of the
components they hold (state.py), resuming (restore.py), console/TensorBoard/metrics (logger.py)."""
