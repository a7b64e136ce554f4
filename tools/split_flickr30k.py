"""Split Flickr30k's caption file into train/val/test CSVs (Karpathy's split sizes by default).

    python tools/split_flickr30k.py --captions results_20130124.token --images flickr30k-images/ --output flickr30k_csv/
Input lines are 'IMAGE.jpg#K<TAB>caption'. Writes {train,val,test}.csv with columns
filepath<TAB>title (one row per caption), ready for train_dataset.type: csv.
"""
import argparse
import csv
import os
import sys
from collections import OrderedDict

import numpy as np


def split_captions(captions_file: str, image_dir: str, output_dir: str, val: int = 1000,
                   test: int = 1000, seed: int = 0):
    grouped = OrderedDict()
    with open(captions_file, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if "\t" not in line:
                raise ValueError(f"{captions_file}:{n}: expected 'IMAGE.jpg#K<TAB>caption'")
            key, caption = line.rstrip("\n").split("\t", 1)
            grouped.setdefault(key.split("#")[0], []).append(caption.strip())
    names = list(grouped)
    if val + test >= len(names):
        raise ValueError(f"only {len(names)} images: cannot hold out {val} + {test}")
    order = np.random.default_rng(seed).permutation(len(names))
    parts = {"test": order[:test], "val": order[test:test + val], "train": order[test + val:]}
    os.makedirs(output_dir, exist_ok=True)
    written = {}
    for split, idx in parts.items():
        path = os.path.join(output_dir, f"{split}.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["filepath", "title"])
            for i in sorted(idx):
                for cap in grouped[names[i]]:
                    w.writerow([os.path.join(os.path.abspath(image_dir), names[i]), cap])
        written[split] = (path, len(idx))
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--captions", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--val", type=int, default=1000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for split, (path, n) in split_captions(args.captions, args.images, args.output, args.val,
                                           args.test, args.seed).items():
        print(f"{split}: {n} images -> {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from mindclip.errors import run_cli  # noqa: E402  (user errors: one line, exit 2)

    sys.exit(run_cli(main))
