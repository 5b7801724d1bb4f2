#!/usr/bin/env python3
"""Writes the seed corpora in corpus/<target>/ and fixtures/ (stdlib only; rerun after
changing it, commit the output). Seeds are small on purpose: libFuzzer mutates them.

JPEG, WebP and TIFF seeds are 8x8 images encoded once by the `image` crate and pasted
below as hex (no encoder for them in the standard library)."""

import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

JPEG_8X8 = bytes.fromhex(
    "ffd8ffe000104a46494600010200000100010000ffc00011080008000803011100021101031101ffdb00430008060607"
    "0605080707070909080a0c140d0c0b0b0c1912130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434"
    "341f27393d38323c2e333432ffdb0043010909090c0b0c180d0d1832211c213232323232323232323232323232323232"
    "323232323232323232323232323232323232323232323232323232323232323232ffc4001f0000010501010101010100"
    "000000000000000102030405060708090a0bffc400b5100002010303020403050504040000017d010203000411051221"
    "31410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a"
    "434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a9293949596979899"
    "9aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1"
    "f2f3f4f5f6f7f8f9faffc4001f0100030101010101010101010000000000000102030405060708090a0bffc400b51100"
    "020102040403040705040400010277000102031104052131061241510761711322328108144291a1b1c109233352f015"
    "6272d10a162434e125f11718191a262728292a35363738393a434445464748494a535455565758595a63646566676869"
    "6a737475767778797a82838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4"
    "c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9faffda000c03010002110311003f00a3"
    "a1781beefeebf4adf179af98b87f3bdb53ffd9"
)
# An 8x8 AVIF written by sis itself (`?format=avif`: ravif); decoded through libavif.
AVIF_8X8 = bytes.fromhex(
    "000000186674797061766966000000006d6966316d696166000000d26d657461000000000000002168646c7200000000"
    "0000000070696374000000000000000000000000000000000e7069746d0000000000010000001e696c6f630000000044"
    "000001000100000001000000f2000000720000002369696e6600000000000100000015696e6665020000000001000061"
    "763031000000005669707270000000386970636f00000014697370650000000000000008000000080000000c61763143"
    "813f0000000000107069786900000000030808080000001669706d6100000000000000010001030182030000007a6d64"
    "617412000a083fc8bf21010d06d0326465e63f412115f8c000200010000000000000012492480035722a2c1e0bc40bd1"
    "370ecc7ed7643fd93e21c38f1e62bd9dd888f5ca4578dc28c8da38840517e7d9c52be10762500eba866ca158ba408067"
    "38b33eda9e8b7912df13e83019e993aeff739120"
)
WEBP_8X8 = bytes.fromhex(
    "524946469a000000574542505650384c8d0000002f07c00100cd552022021ec826000000008001000000020000000000"
    "0000000000000000000000000000000000000000000040c001c00391000000000038ff01000000030000000000000000"
    "000000000000000000000000000000020000007820120000000000e73f00000000000000000000000000000060000000"
    "0000000000000000400000008048ed7e6400"
)
TIFF_8X8 = bytes.fromhex(
    "49492a00e400000008000800080001000100010001000000010000000100000001000000000080200080400080600080"
    "800080a00080c00080e00080002080202080402080602080802080a02080c02080e02080004080204080404080604080"
    "804080a04080c04080e04080006080206080406080606080806080a06080c06080e06080008080208080408080608080"
    "808080a08080c08080e0808000a08020a08040a08060a08080a080a0a080c0a080e0a08000c08020c08040c08060c080"
    "80c080a0c080c0c080e0c08000e08020e08040e08060e08080e080a0e080c0e080e0e0800e0000010400010000000800"
    "000001010400010000000800000002010300030000000800000003010300010000000100000006010300010000000200"
    "00001101040001000000240000001501030001000000030000001601040001000000c3a200001701040001000000c000"
    "00001a01050001000000140000001b010500010000001c0000002801030001000000010000003d010300010000000100"
    "000053010300030000000e00000000000000"
)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def png_chunk(kind, data):
    c = kind + data
    return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)


def png(w, h, color_type=2, idat=None, declared=None):
    """An 8-bit PNG; `declared` overrides the IHDR size (a bomb header on small data)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    raw = b"".join(
        b"\x00" + bytes(((x * 31 + y * 17 + c * 50) & 0xFF) for x in range(w) for c in range(channels))
        for y in range(h)
    )
    dw, dh = declared or (w, h)
    ihdr = struct.pack(">IIBBBBB", dw, dh, 8, color_type, 0, 0, 0)
    body = idat if idat is not None else zlib.compress(raw, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def gif_frame(w, h, left=0, top=0, declared=None):
    """An image descriptor plus LZW data (min code size 2, a clear code every two pixels
    so codes stay 3 bits wide: valid and trivially encoded). `declared` overrides the
    descriptor's size (a bomb frame holding `w` x `h` pixels of data)."""
    codes = []
    pixels = [(x + y) % 4 for y in range(h) for x in range(w)]
    for i in range(0, len(pixels), 2):
        codes.append(4)
        codes.extend(pixels[i:i + 2])
    codes.append(5)
    bits = 0
    nbits = 0
    out = bytearray()
    for c in codes:
        bits |= c << nbits
        nbits += 3
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        out.append(bits & 0xFF)
    blocks = b"".join(bytes([len(out[i:i + 255])]) + bytes(out[i:i + 255]) for i in range(0, len(out), 255))
    return (
        b"\x21\xf9\x04\x00\x00\x00\x00\x00"
        + b"\x2c" + struct.pack("<HHHH", left, top, *(declared or (w, h))) + b"\x00"
        + b"\x02" + blocks + b"\x00"
    )


def gif(w, h, frames=1, screen=None, frame_size=None):
    sw, sh = screen or (w, h)
    head = b"GIF89a" + struct.pack("<HH", sw, sh) + b"\x81\x00\x00"
    palette = b"\x00\x00\x00\xff\x00\x00\x00\xff\x00\x00\x00\xff"
    return head + palette + b"".join(gif_frame(w, h, declared=frame_size) for _ in range(frames)) + b"\x3b"


def bmp(w, h, declared=None):
    row = (w * 3 + 3) & ~3
    pixels = b"".join(
        bytes(((x * 40 + c * 70 + y * 9) & 0xFF) for x in range(w) for c in range(3)).ljust(row, b"\x00")
        for y in range(h)
    )
    dw, dh = declared or (w, h)
    info = struct.pack("<IiiHHIIiiII", 40, dw, dh, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 54) + info + pixels


def jpeg_declaring(w, h):
    """The seed JPEG with its SOF0 size patched."""
    b = bytearray(JPEG_8X8)
    i = b.find(b"\xff\xc0")
    struct.pack_into(">HH", b, i + 5, h, w)
    return bytes(b)


def corrupt(data, at):
    b = bytearray(data)
    for i in range(at, min(at + 8, len(b))):
        b[i] ^= 0x5A
    return bytes(b)


def images():
    p = png(8, 8)
    g = gif(8, 8)
    imgs = {
        "png_8x8": p,
        "png_gray": png(5, 7, 0),
        "png_gray_alpha": png(6, 6, 4),
        "png_rgba": png(9, 5, 6),
        "png_truncated": p[: len(p) // 2],
        "png_corrupt_idat": corrupt(p, 45),
        "png_bomb_50000": png(1, 1, 6, declared=(50000, 50000)),
        "png_bomb_stored": png(1, 1, 2, declared=(4096, 4096)),
        "gif_8x8": g,
        "gif_anim_3": gif(8, 8, frames=3),
        "gif_truncated": g[: len(g) - 6],
        "gif_corrupt_lzw": corrupt(g, 30),
        "gif_bomb_screen": gif(1, 1, screen=(50000, 50000)),
        "gif_bomb_frame": gif(1, 1, screen=(8, 8), frame_size=(50000, 50000)),
        "gif_many_frames": gif(1, 1, frames=1500),
        "bmp_8x8": bmp(8, 8),
        "bmp_bomb": bmp(2, 2, declared=(50000, -50000)),
        "jpeg_8x8": JPEG_8X8,
        "jpeg_truncated": JPEG_8X8[: len(JPEG_8X8) // 2],
        "jpeg_corrupt": corrupt(JPEG_8X8, len(JPEG_8X8) - 40),
        "jpeg_bomb": jpeg_declaring(50000, 50000),
        "webp_8x8": WEBP_8X8,
        "tiff_8x8": TIFF_8X8,
        "not_an_image": b"<?php echo 'hi'; ?>\n",
        "empty": b"",
    }
    return imgs


def main():
    imgs = images()
    fixtures = os.path.join(HERE, "fixtures")
    os.makedirs(fixtures, exist_ok=True)
    with open(os.path.join(fixtures, "8x8.png"), "wb") as f:
        f.write(imgs["png_8x8"])

    # decode_resize: 4 spec bytes (w, h, fit | format << 2, quality) + image.
    specs = [bytes([0, 0, 0, 0]), bytes([4, 0, 0, 0]), bytes([16, 8, 1 | 4, 50]), bytes([5, 9, 2 | 8, 0]),
             bytes([255, 255, 3, 0]), bytes([7, 0, 16, 0])]
    for i, (name, data) in enumerate(sorted(imgs.items())):
        write("decode_resize", name, specs[i % len(specs)] + data)
    # After the loop, so the other seeds keep their spec bytes.
    write("decode_resize", "avif_8x8", bytes([4, 0, 0, 0]) + AVIF_8X8)

    # disposition: raw Content-Disposition values.
    disp = {
        "plain": b'form-data; name="file"; filename="a.png"',
        "utf8": 'form-data; name="f"; filename="测试2.png"'.encode(),
        "percent": b'form-data; name="f"; filename="%E6%B5%8B%E8%AF%952.png"',
        "rfc5987": b"form-data; name=\"f\"; filename=\"x.png\"; filename*=UTF-8''%E6%B5%8B.png",
        "latin1": b"form-data; filename*=iso-8859-1'en'%E9t%E9.png",
        "escaped": b'form-data; name="a\\"b"; filename="c\\\\d.png"',
        "unquoted": b"form-data; name=file; filename=plain.gif",
        "traversal": b'form-data; filename="../x.jpg"',
        "slash": b'form-data; filename="a/b.jpg"',
        "dotdot": b'form-data; filename=".."',
        "nul": b'form-data; filename="a\x00b.png"',
        "control": b'form-data; filename="a\x1b[31mb.png"',
        "invalid_utf8": b'form-data; filename="\xff\xfe\xc3(.png"',
        "long": b'form-data; filename="' + b"a" * 47 + b'.png"',
        "long_percent": b'form-data; filename="' + b"%41" * 200 + b'"',
        "unterminated": b'form-data; name="x; filename="y',
        "md5_field": b'form-data; name="d41d8cd98f00b204e9800998ecf8427e"; filename="e.png"',
        "empty": b"",
    }
    for name, data in disp.items():
        write("disposition", name, data)

    # multipart: byte 0 = boundary index (0 = "X"), byte 1 = chunk size, then the body.
    def part(name, filename, data):
        h = b'Content-Disposition: form-data; name="' + name + b'"'
        if filename is not None:
            h += b'; filename="' + filename + b'"'
        return b"--X\r\n" + h + b"\r\nContent-Type: image/png\r\n\r\n" + data + b"\r\n"

    tiny = imgs["png_8x8"][:40]
    mp = {
        "one": part(b"file", b"a.png", tiny) + b"--X--\r\n",
        "two": part(b"f0", b"a.png", tiny) + part(b"f1", "测试2.png".encode(), b"GIF89a") + b"--X--\r\n",
        "no_file": part(b"field", None, b"value") + b"--X--\r\n",
        "unterminated": part(b"file", b"a.png", tiny)[:-10],
        "no_closing": part(b"file", b"a.png", tiny),
        "many_tiny": b"".join(part(b"f", b"%d.png" % i, b"x") for i in range(64)) + b"--X--\r\n",
        "invalid_utf8_name": part(b"file", b"\xff\xfe.png", tiny) + b"--X--\r\n",
        "preamble": b"junk\r\n" + part(b"file", b"a.png", tiny) + b"--X--\r\nepilogue",
        "empty": b"",
    }
    for i, (name, data) in enumerate(mp.items()):
        write("multipart", name, bytes([0, [255, 1, 7, 64][i % 4]]) + data)

    # query_params: byte 0 = route (0..4), then the query.
    queries = [
        b"w=5&h=5", b"w=64&h=32", b"w=4&h=5", b"w=0&h=0", b"w=65&h=5", b"w=-1&h=5",
        b"w=99999999999&h=5", b"w=abc&h=x", b"w=64&h=64", b"w=5&h=5&fit=cover&format=webp&q=50",
        b"format=auto", b"fit=contain&w=10", b"q=0", b"q=101&format=jpeg", b"file_name=a.png",
        b"file_name=../../etc/passwd", b"md5=../../etc/passwd", b"w=%35&h=+5", b"w=5%00&h=5",
        b"\xff\xfe=\xc3(", b"file_name=" + b"%E6%B5%8B" * 40, b"w=5&w=6&h=5&h=7",
    ]
    for i, q in enumerate(queries):
        write("query_params", "q%02d" % i, bytes([i % 5]) + q)


if __name__ == "__main__":
    main()
