#!/usr/bin/env python3
"""Build the benchmark corpus deterministically from a registry package.

Source photos come from scikit-image's wheel (PyPI, pinned version): only the
files under skimage/data are read, straight from the zip. Every corpus image is
derived from them with seeded crops, flips, an upscale and seeded sensor noise
(luminance noise plus weaker per-channel chroma noise, so JPEG sizes and decode
costs look like camera and phone photos, not smooth upscales), then encoded
with Pillow the way cameras and phones vary: quality 75-95, 4:2:0 or 4:4:4
chroma, baseline or progressive, seeded per file (see `jpeg_settings`).
Same wheel + same Pillow -> byte-identical corpus; a MANIFEST with sizes, MD5s
and each file's JPEG settings is written next to the files.

Size classes (prefix: pixels, aspect): p03 640x480 (smoke runs), p1 1280x960
(1.2 MP, 4:3), p2 1728x1152 (2 MP, 3:2), p12 4000x3000 (12 MP phone, 4:3),
p24 6000x4000 (24 MP camera, 3:2). Counts are kept small for the big classes
so the corpus stays ~200 MB.

Usage: corpus.py WHEEL OUTDIR [--n1 24 --n2 48 --n12 12 --n24 6]
"""

import argparse
import hashlib
import io
import os
import random
import sys
import zipfile

from PIL import Image, ImageOps

PHOTOS = [
    "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "retina.jpg",
    "hubble_deep_field.jpg", "motorcycle_left.png", "motorcycle_right.png",
    "ihc.png", "grass.png", "gravel.png", "brick.png",
]

# prefix: (width, height)
SIZES = {
    "p03": (640, 480),
    "p1": (1280, 960),
    "p2": (1728, 1152),
    "p12": (4000, 3000),
    "p24": (6000, 4000),
}
QUALITIES = (75, 80, 85, 90, 95)


def load_sources(wheel):
    out = []
    with zipfile.ZipFile(wheel) as z:
        for name in PHOTOS:
            data = z.read("skimage/data/" + name)
            img = Image.open(io.BytesIO(data))
            img.load()
            out.append(img.convert("RGB"))
    return out


def grain(size, seed):
    """Sensor-like noise: a luminance tile (the same value in R, G and B) and a chroma tile."""
    rnd = random.Random(seed)
    w, h = size
    luma = Image.frombytes("L", (w, h), rnd.randbytes(w * h)).convert("RGB")
    chroma = Image.frombytes("RGB", (w, h), rnd.randbytes(w * h * 3))
    return luma, chroma


def jpeg_settings(prefix, i):
    """(quality, subsampling, progressive) of the i-th file of a class, seeded."""
    rnd = random.Random(hash_seed(f"{prefix}/{i}/settings"))
    q = QUALITIES[rnd.randrange(len(QUALITIES))]
    # phones and most cameras write 4:2:0; a third 4:4:4 (high-quality camera modes, edits)
    sub = 0 if rnd.random() < 1 / 3 else 2
    prog = rnd.random() < 0.4
    return q, sub, prog


def variant(sources, i, size, noise):
    """The i-th derived photo of the given size; deterministic in i."""
    rnd = random.Random(1000003 * i + size[0])
    src = sources[i % len(sources)]
    if rnd.random() < 0.5:
        src = ImageOps.mirror(src)
    if rnd.random() < 0.3:
        src = ImageOps.flip(src)
    sw, sh = src.size
    tw, th = size
    # crop to the target aspect at a seeded scale and offset
    scale = 0.7 + 0.3 * rnd.random()
    cw = min(sw, int(sh * tw / th))
    ch = int(cw * th / tw)
    cw, ch = max(16, int(cw * scale)), max(16, int(ch * scale))
    x = rnd.randint(0, sw - cw)
    y = rnd.randint(0, sh - ch)
    img = src.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BICUBIC)
    # sensor noise: luminance (~2-5 levels) and weaker chroma noise, seeded strengths
    luma, chroma = noise
    img = Image.blend(img, luma, 0.03 + 0.04 * rnd.random())
    return Image.blend(img, chroma, 0.01 + 0.02 * rnd.random())


def save(img, path, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    data = buf.getvalue()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wheel")
    ap.add_argument("outdir")
    ap.add_argument("--n03", type=int, default=8)
    ap.add_argument("--n1", type=int, default=24)
    ap.add_argument("--n2", type=int, default=48)
    ap.add_argument("--n12", type=int, default=12)
    ap.add_argument("--n24", type=int, default=6)
    ap.add_argument("--npng", type=int, default=8)
    ap.add_argument("--ngif", type=int, default=8)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    sources = load_sources(a.wheel)
    manifest = []

    def record(name, data, note=""):
        manifest.append(f"{name}\t{len(data)}\t{hashlib.md5(data).hexdigest()}\t{note}".rstrip())

    classes = (("p03", a.n03), ("p1", a.n1), ("p2", a.n2), ("p12", a.n12), ("p24", a.n24))
    for prefix, n in classes:
        size = SIZES[prefix]
        noise = grain(size, hash_seed(prefix))
        total = 0
        for i in range(n):
            name = f"{prefix}_{i:04d}.jpg"
            img = variant(sources, i, size, noise)
            q, sub, prog = jpeg_settings(prefix, i)
            data = save(img, os.path.join(a.outdir, name), "JPEG", quality=q, subsampling=sub,
                        progressive=prog, optimize=prog)
            total += len(data)
            record(name, data, f"q{q} {'4:4:4' if sub == 0 else '4:2:0'} "
                               f"{'progressive' if prog else 'baseline'}")
        print(f"corpus: {n} x {prefix} {size[0]}x{size[1]} JPEG, {total / 1e6:.0f} MB",
              file=sys.stderr)

    size = SIZES["p03"]
    noise = grain(size, hash_seed("png"))
    for i in range(a.npng):
        name = f"png_{i:04d}.png"
        img = variant(sources, 7919 + i, size, noise)
        record(name, save(img, os.path.join(a.outdir, name), "PNG", optimize=False))
    for i in range(a.ngif):
        name = f"gif_{i:04d}.gif"
        img = variant(sources, 104729 + i, size, noise).quantize(256, dither=Image.Dither.NONE)
        record(name, save(img, os.path.join(a.outdir, name), "GIF"))
    print(f"corpus: {a.npng} PNG + {a.ngif} GIF 640x480", file=sys.stderr)

    # the upload body: a unique-per-request JPEG of ~200 KB (the Lua script
    # makes each request unique with a COM segment)
    img = variant(sources, 31337, (800, 600), grain((800, 600), hash_seed("up")))
    for q in range(95, 40, -3):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        if buf.tell() <= 210 * 1024:
            break
    record("upload.jpg", save(img, os.path.join(a.outdir, "upload.jpg"), "JPEG", quality=q))

    with open(os.path.join(a.outdir, "MANIFEST"), "w") as f:
        f.write("\n".join(manifest) + "\n")


def hash_seed(s):
    return int(hashlib.sha256(s.encode()).hexdigest()[:16], 16)


if __name__ == "__main__":
    main()
