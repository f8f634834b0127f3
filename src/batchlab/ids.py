"""Run ids: a run's readable prefix plus a hash of its fully resolved spec (canonical JSON, sorted keys).

A leaf module: the grid gives runs their ids, the run store checks a folder against its spec's id, and
neither needs the other for that.
"""

from __future__ import annotations

import hashlib
import json
import math

# Spec keys that say what a run keeps besides its results, not what it computes: left out of its id, so
# marking a run to keep its final weights (evaluation.interpolation) never changes which run it is.
UNHASHED = ("keep_weights",)


def _canonical(obj):
    if isinstance(obj, float):
        return float(repr(obj)) if math.isfinite(obj) else repr(obj)
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def spec_hash(spec: dict) -> str:
    """Hash of a resolved spec (canonical JSON, sorted keys)."""
    text = json.dumps(_canonical(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run_id(spec: dict) -> str:
    """Readable prefix plus the first 10 hex digits of the spec's hash."""
    prefix = f"{spec['dataset']}-{spec['arch']}-b{spec['batch_size']}-lr{spec['lr']:.3g}-s{spec['seed']}"
    return f"{prefix}-{spec_hash(without_id(spec))[:10]}"


def without_id(spec: dict) -> dict:
    """The spec as hashed (``run_id`` and the :data:`UNHASHED` keys removed)."""
    return {k: v for k, v in spec.items() if k != "run_id" and k not in UNHASHED}
