"""Regenerate ``mindclip/pretrained_tags.json`` from the installed open_clip: every
``(architecture, tag)`` of ``open_clip.list_pretrained()`` with the Hugging Face Hub location
of its weights and its preprocessing, as open_clip serves them.

    python tools/make_pretrained_table.py          # needs open_clip_torch (the test extra)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "mindclip", "pretrained_tags.json")
FIELDS = ("hf_hub", "mean", "std", "interpolation", "resize_mode", "quick_gelu")


def build_table() -> dict:
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    tags: dict = {}
    for name, tag in open_clip.list_pretrained():
        cfg = get_pretrained_cfg(name, tag)
        if not cfg.get("hf_hub"):
            continue  # served from a URL only: not reachable through the Hub or a mirror
        entry = {k: (list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k]) for k in FIELDS if k in cfg}
        tags.setdefault(name, {})[tag] = entry
    return {"open_clip_version": open_clip.__version__, "tags": tags}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default=TABLE)
    args = p.parse_args(argv)
    table = build_table()
    # one line per tag: the file reads as a table and diffs per tag
    lines = [f'{{"open_clip_version": {json.dumps(table["open_clip_version"])}, "tags": {{']
    archs = sorted(table["tags"].items())
    for i, (name, tags) in enumerate(archs):
        lines.append(f"  {json.dumps(name)}: {{")
        rows = sorted(tags.items())
        for j, (tag, entry) in enumerate(rows):
            comma = "," if j < len(rows) - 1 else ""
            lines.append(f"    {json.dumps(tag)}: {json.dumps(entry, sort_keys=True)}{comma}")
        lines.append("  }" + ("," if i < len(archs) - 1 else ""))
    lines.append("}}")
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{sum(len(t) for t in table['tags'].values())} tags of {len(table['tags'])} "
          f"architectures -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
