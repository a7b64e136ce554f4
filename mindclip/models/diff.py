"""Field-by-field comparison of architecture configs (what a mismatch error names)."""
from __future__ import annotations

from typing import Any, Dict, List


def config_differences(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> List[str]:
    """``"key: a vs b"`` for every (nested) field where two config dicts differ."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} vs {vb!r}")
    return out
