"""BatchNorm variants for data-parallel and large-batch training: SyncBatchNorm (sync.py),
Ghost BatchNorm (ghost.py), their shared base and the swap into any model (base.py)."""
