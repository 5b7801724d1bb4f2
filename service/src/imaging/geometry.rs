//! Where a cover crop goes: focal points (named gravities are focal points on the edges and
//! corners), the content-aware `smart` anchor, and mapping a crop chosen in displayed (EXIF
//! oriented) space back onto the stored pixels.
//!
//! Pure arithmetic on rectangles and one pass over a small luma grid; no decoding, no
//! allocation proportional to the source beyond that grid.
//!
//! # Smart crop
//! [`smart_offset`] picks the crop window that holds the most *edge energy*: the decoded
//! source is box-averaged down to a luma grid of at most [`SMART_GRID`] cells on its long side,
//! each cell scores `|∂x| + |∂y|` of luma plus a colourfulness term (`max(r,g,b) − min(r,g,b)`,
//! halved), and the window (full extent on the kept axis) slides along the cropped axis.
//! Windows within 2 % of the best score are ties, broken by closeness to the energy centroid,
//! then by the lower offset. Flat backgrounds score ~0, so an off-centre subject stays in frame.
//! The result depends only on the pixels: the same source and box always give the same crop.

/// Where a cover crop is anchored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Gravity {
    /// Keep the point (`x`, `y`), in thousandths of the displayed width and height, as close to
    /// the centre of the crop as the image edges allow. Named gravities are focal points:
    /// `north` = (500, 0), `south_east` = (1000, 1000), `center` = (500, 500).
    Focal { x: u16, y: u16 },
    /// Content-aware, see the module docs.
    Smart,
}

impl Default for Gravity {
    fn default() -> Self {
        Self::CENTER
    }
}

impl Gravity {
    pub const CENTER: Gravity = Gravity::Focal { x: 500, y: 500 };

    /// Parses a `gravity=` value: `center|north|south|east|west|north_east|north_west|
    /// south_east|south_west|smart` (case-insensitive; `centre` and `ne`-style short forms are
    /// not accepted).
    pub fn from_param(s: &str) -> Option<Gravity> {
        let focal = |x, y| Some(Gravity::Focal { x, y });
        match s.to_ascii_lowercase().as_str() {
            "center" => focal(500, 500),
            "north" => focal(500, 0),
            "south" => focal(500, 1000),
            "east" => focal(1000, 500),
            "west" => focal(0, 500),
            "north_east" => focal(1000, 0),
            "north_west" => focal(0, 0),
            "south_east" => focal(1000, 1000),
            "south_west" => focal(0, 1000),
            "smart" => Some(Gravity::Smart),
            _ => None,
        }
    }
}

/// Top-left of a window of length `window` on an axis of length `full`, centred on
/// `focus` (0..=1 of `full`) as far as the edges allow.
pub(crate) fn focal_offset(full: f64, window: f64, focus: f64) -> f64 {
    (focus * full - window / 2.0).clamp(0.0, (full - window).max(0.0))
}

/// Cells on the long side of the energy grid [`smart_offset`] searches.
pub const SMART_GRID: u32 = 96;

/// A view of tightly packed 8-bit pixels for the energy search.
pub(crate) struct PixelView<'a> {
    pub data: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
    pub channels: usize,
}

/// The smart crop's offset along the axis with slack: returns `(left, top)` in the view's
/// pixels for a window of `win_w` × `win_h` view pixels (one of them equal to the view's side).
pub(crate) fn smart_offset(view: &PixelView<'_>, win_w: f64, win_h: f64) -> (f64, f64) {
    let (vw, vh) = (f64::from(view.width), f64::from(view.height));
    let horizontal = vw - win_w > vh - win_h;
    let slack = if horizontal { vw - win_w } else { vh - win_h };
    if slack < 1.0 || view.width == 0 || view.height == 0 {
        return (0.0, 0.0);
    }
    let (gw, gh, cells) = energy_grid(view);
    // Energy profile along the cropped axis.
    let profile: Vec<f64> = if horizontal {
        (0..gw)
            .map(|x| (0..gh).map(|y| cells[y * gw + x]).sum())
            .collect()
    } else {
        (0..gh)
            .map(|y| (0..gw).map(|x| cells[y * gw + x]).sum())
            .collect()
    };
    let n = profile.len();
    let cell = if horizontal {
        vw / gw as f64
    } else {
        vh / gh as f64
    };
    let win_cells = ((if horizontal { win_w } else { win_h }) / cell)
        .round()
        .clamp(1.0, n as f64) as usize;
    let total: f64 = profile.iter().sum();
    if total <= f64::EPSILON {
        // Nothing stands out: centre.
        return if horizontal {
            (slack / 2.0, 0.0)
        } else {
            (0.0, slack / 2.0)
        };
    }
    let centroid = profile
        .iter()
        .enumerate()
        .map(|(i, e)| (i as f64 + 0.5) * e)
        .sum::<f64>()
        / total;
    let mut sums = Vec::with_capacity(n - win_cells + 1);
    let mut s: f64 = profile[..win_cells].iter().sum();
    sums.push(s);
    for i in win_cells..n {
        s += profile[i] - profile[i - win_cells];
        sums.push(s);
    }
    let best = sums.iter().copied().fold(f64::MIN, f64::max);
    let mut chosen = 0usize;
    let mut chosen_dist = f64::MAX;
    for (i, &v) in sums.iter().enumerate() {
        if v >= best * 0.98 {
            let dist = (i as f64 + win_cells as f64 / 2.0 - centroid).abs();
            if dist < chosen_dist {
                chosen = i;
                chosen_dist = dist;
            }
        }
    }
    let offset = (chosen as f64 * cell).clamp(0.0, slack);
    if horizontal {
        (offset, 0.0)
    } else {
        (0.0, offset)
    }
}

/// Box-averaged luma (and chroma spread) grid, then per-cell edge energy.
fn energy_grid(view: &PixelView<'_>) -> (usize, usize, Vec<f64>) {
    let (w, h) = (view.width as usize, view.height as usize);
    let long = w.max(h);
    let grid_long = (SMART_GRID as usize).min(long).max(1);
    let gw = (w * grid_long).div_ceil(long).max(1);
    let gh = (h * grid_long).div_ceil(long).max(1);
    let mut luma = vec![0f64; gw * gh];
    let mut chroma = vec![0f64; gw * gh];
    let mut count = vec![0u32; gw * gh];
    let ch = view.channels;
    // Sample at most ~4 pixels per cell side to bound the work on large decodes.
    let step_x = (w / (gw * 4)).max(1);
    let step_y = (h / (gh * 4)).max(1);
    for y in (0..h).step_by(step_y) {
        let gy = y * gh / h;
        for x in (0..w).step_by(step_x) {
            let i = (y * w + x) * ch;
            let Some(px) = view.data.get(i..i + ch) else {
                continue;
            };
            let (l, c) = match ch {
                1 | 2 => (f64::from(px[0]), 0.0),
                _ => {
                    let (r, g, b) = (px[0], px[1], px[2]);
                    let l = 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
                    let c = f64::from(r.max(g).max(b) - r.min(g).min(b));
                    (l, c)
                }
            };
            // Transparent pixels carry no subject.
            let a = if ch == 2 || ch == 4 {
                f64::from(px[ch - 1]) / 255.0
            } else {
                1.0
            };
            let gi = gy * gw + x * gw / w;
            luma[gi] += l * a;
            chroma[gi] += c * a;
            count[gi] += 1;
        }
    }
    for i in 0..luma.len() {
        let n = f64::from(count[i].max(1));
        luma[i] /= n;
        chroma[i] /= n;
    }
    let at = |x: usize, y: usize| luma[y * gw + x];
    let mut cells = vec![0f64; gw * gh];
    for y in 0..gh {
        for x in 0..gw {
            let dx = if x + 1 < gw {
                (at(x + 1, y) - at(x, y)).abs()
            } else {
                0.0
            };
            let dy = if y + 1 < gh {
                (at(x, y + 1) - at(x, y)).abs()
            } else {
                0.0
            };
            let e = dx + dy + chroma[y * gw + x] / 2.0;
            // Below one grey level is averaging noise, not content.
            cells[y * gw + x] = if e < 1.0 { 0.0 } else { e };
        }
    }
    (gw, gh, cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_gravities_are_focal_points() {
        assert_eq!(Gravity::from_param("center"), Some(Gravity::CENTER));
        assert_eq!(
            Gravity::from_param("NORTH_EAST"),
            Some(Gravity::Focal { x: 1000, y: 0 })
        );
        assert_eq!(
            Gravity::from_param("south_west"),
            Some(Gravity::Focal { x: 0, y: 1000 })
        );
        assert_eq!(Gravity::from_param("smart"), Some(Gravity::Smart));
        assert_eq!(Gravity::from_param("middle"), None);
        assert_eq!(Gravity::from_param(""), None);
    }

    #[test]
    fn focal_offset_clamps_to_the_edges() {
        assert_eq!(focal_offset(300.0, 100.0, 0.5), 100.0);
        assert_eq!(focal_offset(300.0, 100.0, 0.0), 0.0);
        assert_eq!(focal_offset(300.0, 100.0, 1.0), 200.0);
        assert_eq!(focal_offset(300.0, 100.0, 0.3), 40.0);
        assert_eq!(focal_offset(100.0, 100.0, 0.9), 0.0);
    }

    fn view_with_square_at(w: u32, h: u32, sx: u32, sy: u32, side: u32) -> Vec<u8> {
        let mut data = vec![235u8; (w * h * 3) as usize];
        for y in sy..sy + side {
            for x in sx..sx + side {
                let i = ((y * w + x) * 3) as usize;
                // A textured red subject.
                data[i] = 200;
                data[i + 1] = if (x + y) % 4 < 2 { 20 } else { 90 };
                data[i + 2] = 30;
            }
        }
        data
    }

    #[test]
    fn smart_offset_finds_an_off_centre_subject() {
        // 400x100 grey, subject 60x60 near the right edge; a 100x100 window must contain it.
        let data = view_with_square_at(400, 100, 320, 20, 60);
        let v = PixelView {
            data: &data,
            width: 400,
            height: 100,
            channels: 3,
        };
        let (l, t) = smart_offset(&v, 100.0, 100.0);
        assert_eq!(t, 0.0);
        assert!(l <= 320.0 && l + 100.0 >= 380.0, "left {l}");
        // Vertical slack: subject near the top.
        let data = view_with_square_at(100, 400, 20, 10, 50);
        let v = PixelView {
            data: &data,
            width: 100,
            height: 400,
            channels: 3,
        };
        let (l, t) = smart_offset(&v, 100.0, 100.0);
        assert_eq!(l, 0.0);
        assert!(t <= 10.0 && t + 100.0 >= 60.0, "top {t}");
    }

    #[test]
    fn smart_offset_is_deterministic_and_centres_flat_images() {
        let flat = vec![128u8; 300 * 100 * 3];
        let v = PixelView {
            data: &flat,
            width: 300,
            height: 100,
            channels: 3,
        };
        assert_eq!(smart_offset(&v, 100.0, 100.0), (100.0, 0.0));
        let data = view_with_square_at(400, 100, 40, 20, 40);
        let v = PixelView {
            data: &data,
            width: 400,
            height: 100,
            channels: 3,
        };
        assert_eq!(
            smart_offset(&v, 100.0, 100.0),
            smart_offset(&v, 100.0, 100.0)
        );
    }
}
