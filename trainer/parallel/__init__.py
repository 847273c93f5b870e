"""Data parallelism: who this process is under any launcher (identity.py), the backends that
all-reduce gradients (backends/), and dropout masks that do not depend on the world size."""
