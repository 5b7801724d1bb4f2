//! JPEG decoded at 1/8 scale from DC coefficients only: the thumbnail fast path.
//!
//! At 1/8 scale each 8×8 block becomes one pixel whose value is the block's DC coefficient, so
//! the inverse DCT disappears entirely; what remains is Huffman decoding, where AC
//! coefficients are *skipped* (their bits consumed, never stored or dequantised). This is the
//! dominant cost of a 12 MP → thumbnail resize, and skipping is markedly cheaper than the
//! general decoder's full coefficient decode.
//!
//! Scope is deliberately narrow: baseline/extended sequential Huffman JPEG, 8-bit, one scan
//! holding every component, grey or YCbCr. Anything else (progressive, CMYK, Adobe RGB,
//! multi-scan, odd sampling) returns `None` and the caller uses the general decoder, which is
//! also what reports errors: this module never decides that a file is corrupt, it only
//! declines (truncated entropy data included).

/// An 8-bit image at 1/8 scale: `ceil(width / 8)` × `ceil(height / 8)`.
pub(crate) struct DcImage {
    pub width: u32,
    pub height: u32,
    /// Grey (1 byte per pixel) or RGB (3 bytes per pixel).
    pub channels: u8,
    pub data: Vec<u8>,
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
    dc_table: usize,
    ac_table: usize,
}

/// Huffman table per JPEG Annex C, with an 11-bit lookahead for the common short codes.
struct Huffman {
    /// `(len << 8) | symbol` for codes of at most `LOOKAHEAD` bits; 0 when longer.
    fast: [u16; 1 << LOOKAHEAD],
    /// For AC tables: the whole "symbol + magnitude bits" step when it fits the lookahead:
    /// bits 0-4 total length, 5-8 zero run, 9-10 kind (`AC_COEF`, `AC_EOB`, `AC_ZRL`);
    /// 0 when the slow path is needed.
    fast_ac: [u16; 1 << LOOKAHEAD],
    maxcode: [i32; 18],
    valptr: [i32; 17],
    mincode: [i32; 17],
    values: Vec<u8>,
}

const LOOKAHEAD: u32 = 11;
const AC_COEF: u16 = 1;
const AC_EOB: u16 = 2;
const AC_ZRL: u16 = 3;

impl Huffman {
    fn new(counts: &[u8; 16], values: &[u8]) -> Option<Huffman> {
        let mut table = Huffman {
            fast: [0; 1 << LOOKAHEAD],
            fast_ac: [0; 1 << LOOKAHEAD],
            maxcode: [-1; 18],
            valptr: [0; 17],
            mincode: [0; 17],
            values: values.to_vec(),
        };
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16u32 {
            let n = usize::from(counts[len as usize - 1]);
            table.valptr[len as usize] = k as i32;
            table.mincode[len as usize] = code as i32;
            for _ in 0..n {
                if code >= (1 << len) {
                    return None; // over-subscribed table
                }
                if len <= LOOKAHEAD {
                    let shift = LOOKAHEAD - len;
                    let sym = u16::from(*values.get(k)?);
                    for fill in 0..(1u32 << shift) {
                        table.fast[((code << shift) | fill) as usize] = ((len as u16) << 8) | sym;
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                table.maxcode[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        table.maxcode[17] = i32::MAX;
        if k > values.len() {
            return None;
        }
        for (slot, &e) in table.fast_ac.iter_mut().zip(table.fast.iter()) {
            if e == 0 {
                continue;
            }
            let (len, rs) = (e >> 8, e & 0xFF);
            let (r, size) = (rs >> 4, rs & 15);
            *slot = match (size, r) {
                (0, 15) => len | AC_ZRL << 9,
                (0, _) => len | AC_EOB << 9,
                _ if u32::from(len + size) <= LOOKAHEAD => (len + size) | r << 5 | AC_COEF << 9,
                _ => 0,
            };
        }
        Some(table)
    }
}

/// MSB-first bit reader over entropy-coded data: un-stuffs `FF 00`, stops at markers and pads
/// with zeros after them (as libjpeg does). Padding past the end of the *file* is counted so
/// that truncated data can be detected.
#[derive(Clone, Copy)]
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
    at_marker: bool,
    eof_padding: usize,
    /// Zero bits appended after a marker was reached (consumed or not).
    marker_padding: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Bits {
            data,
            pos,
            acc: 0,
            n: 0,
            at_marker: false,
            eof_padding: 0,
            marker_padding: 0,
        }
    }

    #[inline(always)]
    fn refill(&mut self) {
        // Fast path: 8 bytes without 0xFF can be loaded as one word. Bits past the bytes we
        // count are the same stream bytes the next refill would OR in again, so they are
        // harmless.
        if !self.at_marker
            && self.n <= 56
            && let Some(chunk) = self.data.get(self.pos..self.pos + 8)
            && let Ok(bytes) = <[u8; 8]>::try_from(chunk)
            && let word = u64::from_be_bytes(bytes)
            && !has_ff_byte(word)
        {
            self.acc |= word >> self.n;
            let k = (63 - self.n) / 8;
            self.pos += k as usize;
            self.n += k * 8;
            return;
        }
        *self = self.refill_slow();
    }

    /// Byte by byte: stuffed `FF 00`, fill bytes, markers, the end of the data. Takes and
    /// returns the reader by value so the hot loop's reader never has its address taken
    /// and stays in registers (a `&mut self` call here kept it in memory: 2x slower).
    #[cold]
    #[inline(never)]
    fn refill_slow(mut self) -> Self {
        while self.n <= 56 {
            let byte = if self.at_marker {
                self.marker_padding += 8;
                0
            } else {
                match self.data.get(self.pos) {
                    None => {
                        self.eof_padding += 1;
                        0
                    }
                    Some(&0xFF) => match self.data.get(self.pos + 1) {
                        Some(&0x00) => {
                            self.pos += 2;
                            0xFF
                        }
                        // Fill bytes before a marker.
                        Some(&0xFF) => {
                            self.pos += 1;
                            continue;
                        }
                        _ => {
                            self.at_marker = true;
                            self.marker_padding += 8;
                            0
                        }
                    },
                    Some(&b) => {
                        self.pos += 1;
                        b
                    }
                }
            };
            self.acc |= u64::from(byte) << (56 - self.n);
            self.n += 8;
        }
        self
    }

    #[inline(always)]
    fn consume(&mut self, len: u32) {
        self.acc <<= len;
        self.n = self.n.saturating_sub(len);
    }

    /// Decodes one Huffman symbol. Assumes at least 16 valid bits (caller refills).
    #[inline(always)]
    fn symbol(&mut self, t: &Huffman) -> Option<u8> {
        let e = t.fast[(self.acc >> (64 - LOOKAHEAD)) as usize];
        if e != 0 {
            self.consume(u32::from(e >> 8));
            return Some(e as u8);
        }
        for len in (LOOKAHEAD + 1)..=16 {
            let code = (self.acc >> (64 - len)) as i32;
            if code <= t.maxcode[len as usize] {
                self.consume(len);
                let idx = t.valptr[len as usize] + code - t.mincode[len as usize];
                return t.values.get(usize::try_from(idx).ok()?).copied();
            }
        }
        None
    }

    /// Reads `s` bits (s <= 16) as a signed JPEG magnitude.
    #[inline(always)]
    fn extend(&mut self, s: u8) -> i32 {
        if s == 0 {
            return 0;
        }
        let s = u32::from(s.min(16));
        let v = (self.acc >> (64 - s)) as i32;
        self.consume(s);
        if v < (1 << (s - 1)) {
            v - (1 << s) + 1
        } else {
            v
        }
    }

    /// Decodes one block: returns its DC difference, skips its AC coefficients (their bits
    /// consumed, never stored). Works on a copy of the reader, written back at the end, so the
    /// whole loop runs in registers.
    #[inline(never)]
    fn block(&mut self, dc_t: &Huffman, ac_t: &Huffman) -> Option<i32> {
        let mut r = *self;
        r.refill();
        let s = r.symbol(dc_t)?;
        if s > 11 {
            return None; // no 8-bit JPEG has a DC difference this large
        }
        let diff = r.extend(s);
        let mut k = 1;
        while k < 64 {
            if r.n < 32 {
                r.refill();
            }
            let e = ac_t.fast_ac[(r.acc >> (64 - LOOKAHEAD)) as usize];
            if e != 0 {
                r.consume(u32::from(e & 31));
                match e >> 9 {
                    AC_COEF => k += usize::from((e >> 5) & 15) + 1,
                    AC_ZRL => k += 16,
                    _ => break,
                }
                continue;
            }
            let rs = r.symbol(ac_t)?;
            let (run, size) = (rs >> 4, rs & 15);
            if size == 0 {
                if run != 15 {
                    break;
                }
                k += 16;
            } else {
                k += usize::from(run) + 1;
                r.consume(u32::from(size));
            }
        }
        *self = r;
        Some(diff)
    }

    /// Skips to just after the next RSTn marker and resets the bit buffer. By value, like
    /// [`Self::refill_slow`].
    #[inline(never)]
    fn restarted(mut self) -> Self {
        self.acc = 0;
        self.n = 0;
        self.at_marker = false;
        self.marker_padding = 0;
        while let Some(&b) = self.data.get(self.pos) {
            if b == 0xFF
                && let Some(&m) = self.data.get(self.pos + 1)
                && (0xD0..=0xD7).contains(&m)
            {
                self.pos += 2;
                return self;
            }
            if b == 0xFF && matches!(self.data.get(self.pos + 1), Some(m) if *m != 0 && *m != 0xFF)
            {
                return self; // some other marker: leave it, decoding will pad with zeros
            }
            self.pos += 1;
        }
        self
    }
}

/// Whether any byte of `word` is 0xFF, without a loop or a call (a zero byte of `!word`,
/// the classic SWAR test): `contains` compiled to a `memchr` call, which made the hot loop
/// spill its bit buffer to memory.
#[inline(always)]
fn has_ff_byte(word: u64) -> bool {
    let x = !word;
    x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

/// Decodes `bytes` at 1/8 scale, or `None` when this fast path does not apply.
pub(crate) fn decode(bytes: &[u8]) -> Option<DcImage> {
    walk(bytes, true).map(|(image, _)| image)
}

/// True when `bytes` is a JPEG this decoder handles whose entropy-coded data is
/// consistent from end to end: every block decodes with the file's Huffman tables, the last
/// block ends within the final byte (padded with 1-bits, as the standard requires) and
/// the EOI marker follows. A desynchronised or cut stream almost never lands exactly
/// there. This is the upload check: the Huffman walk without pixels, colour conversion
/// or resizing. `false` says nothing (the caller asks the general decoder).
pub(crate) fn verify(bytes: &[u8]) -> bool {
    walk(bytes, false).is_some_and(|(_, clean_end)| clean_end)
}

impl Bits<'_> {
    /// After the last block of the scan or of a restart interval: does the entropy-coded
    /// data end here, exactly, followed by `marker` (EOI, or the RSTn due next)? See
    /// [`verify`]. Takes a copy: the reader itself is left as it is.
    fn ends_cleanly(mut self, marker: u8) -> bool {
        self.refill();
        if !self.at_marker || self.eof_padding > 0 {
            return false;
        }
        // Bits loaded from the stream and not consumed: the final byte's padding only.
        let Some(left) = self.n.checked_sub(self.marker_padding) else {
            return false; // blocks read past the end of the data
        };
        let all_ones = left == 0 || self.acc >> (64 - left) == (1u64 << left) - 1;
        left < 8 && all_ones && self.data.get(self.pos..self.pos + 2) == Some(&[0xFF, marker][..])
    }
}

const EOI: u8 = 0xD9;
const RST0: u8 = 0xD0;

/// The decoder proper; with `pixels == false` it only walks the entropy-coded data (no
/// planes, no colour conversion) and returns an empty image. Also tells whether every
/// restart interval and the scan end cleanly, each followed by the marker due there
/// ([`Bits::ends_cleanly`]). The reader is not returned
/// itself: handing it out made the compiler keep it in memory through the hot loop.
fn walk(bytes: &[u8], pixels: bool) -> Option<(DcImage, bool)> {
    let mut quant_dc = [0i32; 4];
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut comps: Vec<Component> = Vec::new();
    let (mut width, mut height) = (0usize, 0usize);
    let mut restart_interval = 0usize;
    let mut pos = 2;
    // Headers up to the (single) scan.
    let scan_start = loop {
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if bytes.get(pos) != Some(&0xFF) {
            return None;
        }
        let marker = *bytes.get(pos + 1)?;
        pos += 2;
        if matches!(marker, 0xD0..=0xD8 | 0x01) {
            continue;
        }
        let len = be16(bytes, pos)?;
        let seg = bytes.get(pos + 2..pos + len)?;
        match marker {
            0xDB => {
                let mut p = 0;
                while p < seg.len() {
                    let (pq, tq) = (seg[p] >> 4, usize::from(seg[p] & 15));
                    let dc = if pq == 0 {
                        i32::from(*seg.get(p + 1)?)
                    } else {
                        i32::try_from(be16(seg, p + 1)?).ok()?
                    };
                    *quant_dc.get_mut(tq)? = dc;
                    p += 1 + if pq == 0 { 64 } else { 128 };
                }
            }
            0xC4 => {
                let mut p = 0;
                while p < seg.len() {
                    let (class, id) = (seg[p] >> 4, usize::from(seg[p] & 15));
                    let counts: [u8; 16] = seg.get(p + 1..p + 17)?.try_into().ok()?;
                    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let values = seg.get(p + 17..p + 17 + total)?;
                    let table = Huffman::new(&counts, values)?;
                    match class {
                        0 => *dc_tables.get_mut(id)? = Some(table),
                        1 => *ac_tables.get_mut(id)? = Some(table),
                        _ => return None,
                    }
                    p += 17 + total;
                }
            }
            0xC0 | 0xC1 => {
                if *seg.first()? != 8 {
                    return None;
                }
                height = be16(seg, 1)?;
                width = be16(seg, 3)?;
                let n = usize::from(*seg.get(5)?);
                for i in 0..n {
                    let c = seg.get(6 + 3 * i..9 + 3 * i)?;
                    comps.push(Component {
                        id: c[0],
                        h: usize::from(c[1] >> 4),
                        v: usize::from(c[1] & 15),
                        quant: usize::from(c[2]),
                        dc_table: 0,
                        ac_table: 0,
                    });
                }
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
            0xDD => restart_interval = be16(seg, 0)?,
            // Adobe APP14 with transform 0: the components are RGB, not YCbCr.
            0xEE if seg.starts_with(b"Adobe") && seg.get(11) == Some(&0) => return None,
            0xDA => {
                let ns = usize::from(*seg.first()?);
                if ns != comps.len() {
                    return None; // multi-scan sequential: rare, let the general decoder do it
                }
                for i in 0..ns {
                    let id = *seg.get(1 + 2 * i)?;
                    let tables = *seg.get(2 + 2 * i)?;
                    let c = comps.iter_mut().find(|c| c.id == id)?;
                    c.dc_table = usize::from(tables >> 4);
                    c.ac_table = usize::from(tables & 15);
                }
                break pos + len;
            }
            0xD9 => return None,
            _ => {}
        }
        pos += len;
    };

    if width == 0 || height == 0 || !matches!(comps.len(), 1 | 3) {
        return None;
    }
    // RGB-coded JPEGs name their components 'R', 'G', 'B'.
    if comps.iter().map(|c| c.id).eq(*b"RGB") {
        return None;
    }
    let single = comps.len() == 1;
    if single {
        comps[0].h = 1;
        comps[0].v = 1;
    }
    let hmax = comps.iter().map(|c| c.h).max()?;
    let vmax = comps.iter().map(|c| c.v).max()?;
    for c in &comps {
        if !(1..=4).contains(&c.h)
            || !(1..=4).contains(&c.v)
            || hmax % c.h != 0
            || vmax % c.v != 0
            || c.quant > 3
            || quant_dc[c.quant] == 0
            || dc_tables.get(c.dc_table)?.is_none()
            || ac_tables.get(c.ac_table)?.is_none()
        {
            return None;
        }
    }
    let mcus_x = width.div_ceil(8 * hmax);
    let mcus_y = height.div_ceil(8 * vmax);
    // One DC value per block, per component plane (MCU-padded).
    let mut planes: Vec<(usize, Vec<u8>)> = comps
        .iter()
        .map(|c| {
            let pw = mcus_x * c.h;
            let len = if pixels { pw * mcus_y * c.v } else { 0 };
            (pw, vec![0u8; len])
        })
        .collect();

    let mut bits = Bits::new(bytes, scan_start);
    let mut preds = [0i32; 4];
    let total_mcus = mcus_x * mcus_y;
    let mut clean = true;
    let mut restarts = 0u8;
    for mcu in 0..total_mcus {
        if restart_interval > 0 && mcu > 0 && mcu % restart_interval == 0 {
            clean &= bits.ends_cleanly(RST0 + restarts % 8);
            restarts = restarts.wrapping_add(1);
            bits = bits.restarted();
            preds = [0; 4];
        }
        let (mx, my) = (mcu % mcus_x, mcu / mcus_x);
        for (ci, c) in comps.iter().enumerate() {
            let dc_t = dc_tables[c.dc_table].as_ref()?;
            let ac_t = ac_tables[c.ac_table].as_ref()?;
            let q = quant_dc[c.quant];
            for by in 0..c.v {
                for bx in 0..c.h {
                    // Wrapping, as in libjpeg: absurd tables must not panic.
                    preds[ci] = preds[ci].wrapping_add(bits.block(dc_t, ac_t)?);
                    let value = (preds[ci].wrapping_mul(q).wrapping_add(4) >> 3) + 128;
                    let (plane_w, plane) = &mut planes[ci];
                    let x = mx * c.h + bx;
                    let y = my * c.v + by;
                    if let Some(px) = plane.get_mut(y * *plane_w + x) {
                        *px = value.clamp(0, 255) as u8;
                    }
                }
            }
            if bits.eof_padding > 8 {
                return None; // truncated entropy data
            }
        }
    }

    let out_w = width.div_ceil(8);
    let out_h = height.div_ceil(8);
    if !pixels {
        let empty = DcImage {
            width: 0,
            height: 0,
            channels: 0,
            data: Vec::new(),
        };
        return Some((empty, clean && bits.ends_cleanly(EOI)));
    }
    if single {
        let (plane_w, plane) = &planes[0];
        let mut data = Vec::with_capacity(out_w * out_h);
        for y in 0..out_h {
            data.extend_from_slice(plane.get(y * plane_w..y * plane_w + out_w)?);
        }
        let image = DcImage {
            width: u32::try_from(out_w).ok()?,
            height: u32::try_from(out_h).ok()?,
            channels: 1,
            data,
        };
        return Some((image, clean && bits.ends_cleanly(EOI)));
    }
    let mut data = Vec::with_capacity(out_w * out_h * 3);
    // Chroma planes may be subsampled: upsample with centred bilinear interpolation (like
    // libjpeg's "fancy" upsampling), which matters here because each sample covers 16+ px.
    let sample = |ci: usize, x: usize, y: usize| -> i32 {
        let c = &comps[ci];
        let (pw, plane) = &planes[ci];
        let at = |sx: usize, sy: usize| f32::from(plane.get(sy * pw + sx).copied().unwrap_or(128));
        if c.h == hmax && c.v == vmax {
            return at(x, y) as i32;
        }
        let ph = plane.len() / pw.max(&1);
        let coord = |v: usize, num: usize, den: usize, len: usize| -> (usize, usize, f32) {
            let f = ((v as f32 + 0.5) * num as f32 / den as f32 - 0.5).max(0.0);
            let i0 = (f as usize).min(len.saturating_sub(1));
            let i1 = (i0 + 1).min(len.saturating_sub(1));
            (i0, i1, f - i0 as f32)
        };
        let (x0, x1, fx) = coord(x, c.h, hmax, *pw);
        let (y0, y1, fy) = coord(y, c.v, vmax, ph);
        let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
        let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
        (top * (1.0 - fy) + bottom * fy).round() as i32
    };
    for y in 0..out_h {
        for x in 0..out_w {
            let yy = sample(0, x, y) << 16;
            let cb = sample(1, x, y) - 128;
            let cr = sample(2, x, y) - 128;
            // JFIF YCbCr -> RGB in 16.16 fixed point.
            let r = (yy + 91_881 * cr + 32_768) >> 16;
            let g = (yy - 22_554 * cb - 46_802 * cr + 32_768) >> 16;
            let b = (yy + 116_130 * cb + 32_768) >> 16;
            data.extend_from_slice(&[
                r.clamp(0, 255) as u8,
                g.clamp(0, 255) as u8,
                b.clamp(0, 255) as u8,
            ]);
        }
    }
    let image = DcImage {
        width: u32::try_from(out_w).ok()?,
        height: u32::try_from(out_h).ok()?,
        channels: 3,
        data,
    };
    Some((image, clean && bits.ends_cleanly(EOI)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::{Format, testdata};

    /// Reference: `jpeg-decoder`'s own 1/8-scale decode of the same file.
    fn reference(bytes: &[u8], w: u32, h: u32) -> (u16, u16, Vec<u8>) {
        let mut d = jpeg_decoder::Decoder::new(bytes);
        let scaled = d.scale(w.div_ceil(8) as u16, h.div_ceil(8) as u16);
        let pixels = d.decode();
        match (scaled, pixels) {
            (Ok((sw, sh)), Ok(p)) => (sw, sh, p),
            (a, b) => panic!("reference decode failed: {:?} {:?}", a.err(), b.err()),
        }
    }

    #[test]
    fn matches_the_general_decoder_at_one_eighth() {
        for (w, h) in [(640, 480), (333, 97), (8, 8), (1, 1)] {
            for img in [testdata::gradient(w, h), testdata::noise(w, h)] {
                let bytes = testdata::encode(&img, Format::Jpeg);
                let Some(fast) = decode(&bytes) else {
                    panic!("fast path declined a baseline JPEG {w}x{h}");
                };
                let (rw, rh, expected) = reference(&bytes, w, h);
                assert_eq!((fast.width, fast.height), (u32::from(rw), u32::from(rh)));
                assert_eq!(fast.channels, 3);
                let diff: u64 = fast
                    .data
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| u64::from(a.abs_diff(*b)))
                    .sum();
                let mean = diff as f64 / expected.len() as f64;
                assert!(mean < 3.0, "{w}x{h}: mean abs diff {mean}");
            }
        }
    }

    #[test]
    fn grey_jpeg() {
        let img = testdata::gradient(100, 60).to_luma8();
        let mut bytes = Vec::new();
        let encoder = jpeg_encoder::Encoder::new(&mut bytes, 85);
        if let Err(e) = encoder.encode(img.as_raw(), 100, 60, jpeg_encoder::ColorType::Luma) {
            panic!("encode: {e}");
        }
        let fast = decode(&bytes).unwrap_or_else(|| panic!("declined grey JPEG"));
        assert_eq!((fast.width, fast.height, fast.channels), (13, 8, 1));
        let (_, _, expected) = reference(&bytes, 100, 60);
        let worst = fast
            .data
            .iter()
            .zip(&expected)
            .map(|(a, b)| a.abs_diff(*b))
            .max();
        assert!(worst.unwrap_or(0) <= 2, "{worst:?}");
    }

    #[test]
    fn restart_intervals() {
        // Smooth content: chroma upsampling differences stay small, a desync would not.
        let img = testdata::gradient(200, 120).to_rgb8();
        for interval in [0, 1, 3] {
            let mut bytes = Vec::new();
            let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 85);
            enc.set_restart_interval(interval);
            if let Err(e) = enc.encode(img.as_raw(), 200, 120, jpeg_encoder::ColorType::Rgb) {
                panic!("encode: {e}");
            }
            let fast = decode(&bytes).unwrap_or_else(|| panic!("declined restart-interval JPEG"));
            let (_, _, expected) = reference(&bytes, 200, 120);
            let diff: u64 = fast
                .data
                .iter()
                .zip(&expected)
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum();
            let mean = diff as f64 / expected.len() as f64;
            assert!(
                mean < 3.0,
                "restart interval {interval}: mean abs diff {mean}"
            );
        }
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        let img = testdata::noise(64, 64).to_rgb8();
        let mut progressive = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut progressive, 85);
        enc.set_progressive(true);
        if let Err(e) = enc.encode(img.as_raw(), 64, 64, jpeg_encoder::ColorType::Rgb) {
            panic!("encode: {e}");
        }
        assert!(decode(&progressive).is_none());
        let bytes = testdata::encode(&testdata::noise(64, 64), Format::Jpeg);
        // Truncated entropy data.
        assert!(decode(&bytes[..bytes.len() / 2]).is_none());
        // Garbage and header-only cuts never panic.
        for cut in 0..bytes.len().min(700) {
            let _ = decode(&bytes[..cut]);
        }
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0xD9]).is_none());
    }

    #[test]
    fn verify_checks_every_restart_interval() {
        let img = testdata::noise(256, 256).to_rgb8();
        let mut bytes = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 85);
        enc.set_restart_interval(4);
        if let Err(e) = enc.encode(img.as_raw(), 256, 256, jpeg_encoder::ColorType::Rgb) {
            panic!("encode: {e}");
        }
        assert!(verify(&bytes));
        // Where the RSTn markers are (entropy data has no other FF followed by D0..D7).
        let rst: Vec<usize> = (0..bytes.len() - 1)
            .filter(|&i| bytes[i] == 0xFF && (0xD0..=0xD7).contains(&bytes[i + 1]))
            .collect();
        assert!(rst.len() > 12, "{} restart markers", rst.len());
        // Renumbered markers (all RST0): the general decoder refuses them, so must we.
        let mut renumbered = bytes.clone();
        for &i in &rst {
            renumbered[i + 1] = 0xD0;
        }
        assert!(!verify(&renumbered));
        // A third of one interval cut out: the last interval still ends cleanly, this one not.
        let (from, to) = (rst[10] + 2, rst[11]);
        let cut = (to - from) / 3;
        let mut shortened = bytes[..from + cut].to_vec();
        shortened.extend_from_slice(&bytes[from + 2 * cut..]);
        assert!(!verify(&shortened));
    }

    #[test]
    fn ff_bytes_are_found_anywhere_in_a_word() {
        assert!(!has_ff_byte(0));
        assert!(!has_ff_byte(0xFEFE_FEFE_FEFE_FEFE));
        assert!(!has_ff_byte(0x7F80_00FE_0102_0304));
        for i in 0..8 {
            assert!(has_ff_byte(0xFF << (8 * i)), "byte {i}");
            assert!(has_ff_byte(
                (0xFF << (8 * i)) | 0x0101_0101_0101_0101 & !(0xFF << (8 * i))
            ));
        }
    }

    #[test]
    fn verify_accepts_whole_streams_and_refuses_cut_or_scrambled_ones() {
        let mut accepted = 0;
        for (w, h) in [(640, 480), (333, 97), (8, 8), (1, 1), (96, 64)] {
            for img in [testdata::gradient(w, h), testdata::noise(w, h)] {
                let bytes = testdata::encode(&img, Format::Jpeg);
                assert!(verify(&bytes), "{w}x{h} whole");
                accepted += 1;
                // Cut anywhere inside the entropy data: refused.
                let scan_end = bytes.len() - 2;
                for cut in [scan_end / 2, scan_end - 1, scan_end] {
                    assert!(!verify(&bytes[..cut]), "{w}x{h} cut at {cut}");
                }
                // Trailing bytes after EOI are not our business.
                let mut trailing = bytes.clone();
                trailing.extend_from_slice(b"camera maker notes");
                assert!(verify(&trailing), "{w}x{h} with trailing bytes");
            }
        }
        assert_eq!(accepted, 10);
        // Restart intervals.
        let img = testdata::noise(200, 120).to_rgb8();
        for interval in [1, 3] {
            let mut bytes = Vec::new();
            let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 85);
            enc.set_restart_interval(interval);
            if let Err(e) = enc.encode(img.as_raw(), 200, 120, jpeg_encoder::ColorType::Rgb) {
                panic!("encode: {e}");
            }
            assert!(verify(&bytes), "restart interval {interval}");
        }
        // One flipped byte in the middle of the entropy data desynchronises the stream:
        // the walk no longer ends exactly at EOI (or hits an invalid code).
        let bytes = testdata::encode(&testdata::noise(320, 240), Format::Jpeg);
        let (mut refused, mut general_refused) = (0, 0);
        let positions: Vec<usize> = (1..=40).map(|i| bytes.len() / 2 + i * 97).collect();
        for &at in &positions {
            let mut bad = bytes.clone();
            bad[at] ^= 0x5A;
            if bad[at] == 0xFF || bytes[at] == 0xFF {
                continue;
            }
            refused += usize::from(!verify(&bad));
            general_refused += usize::from(image::load_from_memory(&bad).is_err());
        }
        // Flips inside raw magnitude bits keep the stream in sync: no decoder can see them.
        assert!(
            refused >= 30 && refused >= general_refused,
            "{refused} of 40 corruptions refused (general decoder: {general_refused})"
        );
    }
}

#[cfg(test)]
mod timing {
    use std::time::Instant;

    use crate::imaging::{Format, testdata};

    /// `cargo test --release -p sis jpeg_dc_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "timing information, run by hand in release mode"]
    fn jpeg_dc_timing() {
        for img in [
            testdata::gradient(4000, 3000),
            testdata::noise(4000, 3000),
            photo(4000, 3000),
        ] {
            let bytes = testdata::encode(&img, Format::Jpeg);
            let mut best = [f64::MAX; 3];
            for _ in 0..5 {
                let t = Instant::now();
                let fast = super::decode(&bytes);
                best[0] = best[0].min(t.elapsed().as_secs_f64());
                assert!(fast.is_some());
                let t = Instant::now();
                let mut d = jpeg_decoder::Decoder::new(&bytes[..]);
                let _ = d.scale(500, 375);
                let _ = d.decode();
                best[1] = best[1].min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                let _ = image::load_from_memory(&bytes);
                best[2] = best[2].min(t.elapsed().as_secs_f64());
            }
            println!(
                "{} bytes: dc-only {:.1} ms, jpeg-decoder 1/8 {:.1} ms, zune full {:.1} ms",
                bytes.len(),
                best[0] * 1e3,
                best[1] * 1e3,
                best[2] * 1e3
            );
        }
    }

    fn photo(w: u32, h: u32) -> image::DynamicImage {
        let mut state = 0x9E37_79B9_u32;
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let n = (state & 0x1F) as i32 - 16;
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let ring = (((fx - 0.5).powi(2) + (fy - 0.4).powi(2)).sqrt() * 40.0).sin() * 40.0;
            let c = |v: f32| (v as i32 + n).clamp(0, 255) as u8;
            image::Rgb([
                c(60.0 + 150.0 * fx + ring),
                c(90.0 + 120.0 * fy - ring),
                c(140.0 + 60.0 * (fx * fy * 9.0).sin()),
            ])
        }))
    }
}
