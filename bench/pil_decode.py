"""The peer for `pipeline bench-decode`: Pillow decoding the same JPEGs and fitting them the
same way (RGB, centre crop to the target's aspect ratio, bilinear resize), one thread.

usage: pil_decode.py make DIR [--images N]        write N photo-like 500x375 JPEGs (q90)
       pil_decode.py time DIR [--sizes 96,224]    images/s per size, as JSON
"""
import argparse
import io
import json
import pathlib
import sys
import time

import numpy as np
from PIL import Image


def make(root: pathlib.Path, images: int) -> None:
    folder = root / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:375, 0:500].astype(np.float32)
    fx, fy = xs / 500, ys / 375
    for i in range(images):
        phase = (i % 97) / 97
        rgb = np.stack(
            [
                200 * fx + 40 * np.sin(6 * fy + phase),
                160 * fy + 50 * np.cos(4 * fx - phase),
                120 + 80 * np.sin((fx + fy) * 3 + phase),
            ],
            axis=-1,
        ) + rng.normal(0, 16, (375, 500, 1))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def fit(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    if w > h:
        left = (w - h) // 2
        img = img.crop((left, 0, left + h, h))
    elif h > w:
        top = (h - w) // 2
        img = img.crop((0, top, w, top + w))
    return img.resize((side, side), Image.BILINEAR)


def time_sizes(root: pathlib.Path, sizes: list[int]) -> dict:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    encoded = [p.read_bytes() for p in files]
    results = []
    for side in sizes:
        for data in encoded[:8]:
            fit(Image.open(io.BytesIO(data)).convert("RGB"), side)
        started = time.perf_counter()
        for data in encoded:
            np.asarray(fit(Image.open(io.BytesIO(data)).convert("RGB"), side))
        seconds = time.perf_counter() - started
        results.append({"size": side, "images_per_second_1_thread": len(encoded) / seconds})
    return {"images": len(encoded), "pillow": Image.__version__, "results": results}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["make", "time"])
    parser.add_argument("dir", type=pathlib.Path)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--sizes", default="96,224")
    args = parser.parse_args()
    if args.command == "make":
        make(args.dir, args.images)
    else:
        print(json.dumps(time_sizes(args.dir, [int(s) for s in args.sizes.split(",")])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
