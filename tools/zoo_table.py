"""Write (or ``--check``) the README's table of architectures and pretrained tags, generated
from ``mindclip.list_models()`` and ``mindclip.list_pretrained()`` so it cannot drift.

    python tools/zoo_table.py          # rewrite the table between the README's markers
    python tools/zoo_table.py --check  # exit 1 when the README's table is stale
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
START, END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"


def table() -> str:
    sys.path.insert(0, ROOT)
    import mindclip
    from mindclip.factory import model_family

    tags: dict = {}
    for name, tag in mindclip.list_pretrained():
        tags.setdefault(name, []).append(tag)
    rows = ["| architecture | family | pretrained tags (`pretrained=`) |", "|---|---|---|"]
    for name in mindclip.list_models():
        listed = ", ".join(f"`{t}`" for t in tags.get(name, [])) or "—"
        rows.append(f"| `{name}` | {model_family(name).name} | {listed} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    with open(README, encoding="utf-8") as f:
        text = f.read()
    if START not in text or END not in text:
        print(f"error: {README} has no {START} ... {END} markers", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{table()}\n{END}{tail}"
    if args.check:
        if new != text:
            print("README's architecture table is stale: run python tools/zoo_table.py", file=sys.stderr)
            return 1
        return 0
    with open(README, "w", encoding="utf-8") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
