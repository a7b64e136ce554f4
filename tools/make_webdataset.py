"""Write WebDataset tar shards (KEY.jpg + KEY.txt) from a caption CSV/TSV or an image folder.

    python tools/make_webdataset.py --csv train.tsv --csv_img_key filepath --csv_caption_key title \
        --output "shards/{00000..}.tar" --samples_per_shard 10000
    python tools/make_webdataset.py --image_folder photos/ --output shards/   # caption = class folder name
"""
import argparse
import io
import os
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_shards(pairs, output_dir: str, samples_per_shard: int = 10000, prefix: str = ""):
    """``pairs``: iterable of (image path, caption). Returns the shard paths written; each
    shard is written to a temporary name and renamed when complete."""
    os.makedirs(output_dir, exist_ok=True)
    shards, tar, count, index, tmp = [], None, 0, 0, None

    def close():
        if tar is not None:
            tar.close()
            final = tmp[:-len(".partial")]
            os.replace(tmp, final)
            shards.append(final)

    for path, caption in pairs:
        if count % samples_per_shard == 0:
            close()
            tmp = os.path.join(output_dir, f"{prefix}{index:05d}.tar.partial")
            tar = tarfile.open(tmp, "w")
            index += 1
        key = f"{count:09d}"
        ext = os.path.splitext(path)[1].lower().lstrip(".") or "jpg"
        ext = "jpg" if ext == "jpeg" else ext
        for name, data in ((f"{key}.{ext}", open(path, "rb").read()),
                           (f"{key}.txt", caption.encode("utf-8"))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        count += 1
    close()
    return shards


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="caption CSV/TSV")
    src.add_argument("--image_folder", help="ROOT/<class>/<images>; the caption is 'a photo of a <class>.'")
    p.add_argument("--csv_img_key", default="filepath")
    p.add_argument("--csv_caption_key", default="title")
    p.add_argument("--csv_separator", default="\t")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--samples_per_shard", type=int, default=10000)
    args = p.parse_args(argv)
    from mindclip.data.captions import read_csv
    from mindclip.data.classification import read_image_folder

    if args.csv:
        source = read_csv(args.csv, args.csv_img_key, args.csv_caption_key, args.csv_separator)
        pairs = ((img, cap) for img, caps in zip(source.images, source.captions) for cap in caps)
    else:
        source = read_image_folder(args.image_folder)
        pairs = ((img, f"a photo of a {source.class_names[label]}.")
                 for img, label in zip(source.images, source.labels))
    shards = write_shards(pairs, args.output, args.samples_per_shard)
    print(f"wrote {len(shards)} shard(s) to {args.output}: "
          f"{os.path.basename(shards[0])}..{os.path.basename(shards[-1])}" if shards else "no samples")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from mindclip.errors import run_cli  # noqa: E402  (user errors: one line, exit 2)

    sys.exit(run_cli(main))
