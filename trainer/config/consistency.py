"""Every rank composed the same config: workers launched with different overrides (an MPMD
launch, a per-node environment that changes an interpolation) would otherwise train silently
into one run."""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from trainer.config.flat import flatten
from trainer.errors import UserError


def check_same_config(cfg: DictConfig, backend) -> None:
    """Every rank composed the same config (a launch that gave the workers different overrides
    would otherwise train silently): one gather of a hash; on a mismatch, the first key that
    differs from rank 0's."""
    if backend.world_size == 1:
        return
    flat = flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
    digests = backend.all_gather_object(digest)
    if len(set(digests)) == 1:
        return
    configs = backend.all_gather_object(flat)
    rank = next(r for r, d in enumerate(digests) if d != digests[0])
    key = next(k for k in sorted(set(configs[0]) | set(configs[rank]))
               if configs[0].get(k) != configs[rank].get(k))
    raise UserError(
        f"the workers composed different configs: rank {rank} has {key}="
        f"{configs[rank].get(key, '(unset)')} where rank 0 has {configs[0].get(key, '(unset)')}; "
        "launch every worker with the same overrides"
    )
