//! `/tryon`: a load model with the compute shape of a virtual try-on network.
//!
//! It is NOT a trained model. Person and garment images are decoded, resized to a fixed
//! resolution and stacked into a 6-channel tensor that goes through a fixed convolutional
//! encoder-decoder (two stride-2 encoders, a bottleneck, two upsampling decoders with skip
//! connections, a 1x1 head). Weights come from a fixed seed. Every convolution is im2col + GEMM on
//! the chosen backend, so a request costs what a small try-on generator costs. The head's mask,
//! restricted to the torso region, blends the garment into the person image; the result is a PNG.

use std::io::Cursor;
use std::time::Instant;

use image::{ImageFormat, ImageReader, RgbImage};

use crate::executor::Cancel;
use crate::gemm::{BackendError, Device, GemmDims};
use crate::rng::SplitMix64;

/// Working resolution (height x width), the classic VITON size.
pub const HEIGHT: usize = 256;
pub const WIDTH: usize = 192;
/// Seed of the fixed weights.
pub const WEIGHT_SEED: u64 = 0x7472_796f_6e00_0001;
/// Upper bound on one im2col tile (floats) so memory per request stays small at any resolution.
const TILE_FLOATS: usize = 1 << 21;

#[derive(Debug, thiserror::Error)]
pub enum TryOnError {
    #[error("{field}: {message}")]
    BadImage {
        field: &'static str,
        message: String,
    },
    #[error("{field}: {message}")]
    ImageTooLarge {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("encoding the PNG result failed: {0}")]
    Encode(String),
}

/// Limits applied while decoding an uploaded image.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_width: u32,
    pub max_height: u32,
}

/// A CHW float tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Tensor {
    fn zeros(c: usize, h: usize, w: usize) -> Self {
        Self {
            c,
            h,
            w,
            data: vec![0.0; c * h * w],
        }
    }
}

/// One convolution with "same" padding; weights are `cout x (cin * k * k)` row-major.
#[derive(Debug, Clone)]
pub struct Conv {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Conv {
    fn seeded(rng: &mut SplitMix64, cin: usize, cout: usize, k: usize, stride: usize) -> Self {
        let fan_in = cin * k * k;
        // He-style scale keeps activations in a sane range through the ReLU stack.
        let scale = (6.0 / fan_in as f32).sqrt();
        let weights = rng
            .fill_signed(cout * fan_in)
            .into_iter()
            .map(|v| v * scale)
            .collect();
        let bias = rng
            .fill_signed(cout)
            .into_iter()
            .map(|v| v * 0.01)
            .collect();
        Self {
            cin,
            cout,
            k,
            stride,
            weights,
            bias,
        }
    }

    fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(self.stride), w.div_ceil(self.stride))
    }

    pub fn flops(&self, h: usize, w: usize) -> f64 {
        let (ho, wo) = self.out_hw(h, w);
        GemmDims {
            m: self.cout,
            n: ho * wo,
            k: self.cin * self.k * self.k,
        }
        .flops()
    }

    /// im2col of output rows `[r0, r1)` into `cols` (`(cin*k*k) x ((r1-r0)*wo)` row-major).
    fn im2col(&self, x: &Tensor, r0: usize, r1: usize, wo: usize, cols: &mut [f32]) {
        let pad = (self.k / 2) as isize;
        let npix = (r1 - r0) * wo;
        for ci in 0..self.cin {
            let plane = &x.data[ci * x.h * x.w..(ci + 1) * x.h * x.w];
            for ky in 0..self.k {
                for kx in 0..self.k {
                    let row = (ci * self.k + ky) * self.k + kx;
                    let out = &mut cols[row * npix..(row + 1) * npix];
                    for (oy, chunk) in (r0..r1).zip(out.chunks_mut(wo)) {
                        let iy = (oy * self.stride) as isize + ky as isize - pad;
                        if iy < 0 || iy >= x.h as isize {
                            chunk.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * x.w..(iy as usize + 1) * x.w];
                        for (ox, v) in chunk.iter_mut().enumerate() {
                            let ix = (ox * self.stride) as isize + kx as isize - pad;
                            *v = if ix < 0 || ix >= x.w as isize {
                                0.0
                            } else {
                                src[ix as usize]
                            };
                        }
                    }
                }
            }
        }
    }

    /// Convolution as tiled im2col + GEMM on the device, then bias and optional ReLU on the host.
    pub fn forward<D: Device>(
        &self,
        dev: &D,
        x: &Tensor,
        relu: bool,
    ) -> Result<Tensor, BackendError> {
        let (ho, wo) = self.out_hw(x.h, x.w);
        let kdim = self.cin * self.k * self.k;
        let mut y = Tensor::zeros(self.cout, ho, wo);
        let weights = dev.upload(&self.weights)?;
        let rows_per_tile = (TILE_FLOATS / (kdim * wo)).clamp(1, ho);
        let mut cols = vec![0.0f32; kdim * rows_per_tile * wo];
        let mut r0 = 0;
        while r0 < ho {
            let r1 = (r0 + rows_per_tile).min(ho);
            let npix = (r1 - r0) * wo;
            let cols = &mut cols[..kdim * npix];
            self.im2col(x, r0, r1, wo, cols);
            let dcols = dev.upload(cols)?;
            let mut dout = dev.zeros(self.cout * npix)?;
            dev.gemm(
                GemmDims {
                    m: self.cout,
                    n: npix,
                    k: kdim,
                },
                1.0,
                &weights,
                &dcols,
                0.0,
                &mut dout,
            )?;
            let tile = dev.download(&dout)?;
            for co in 0..self.cout {
                let dst = &mut y.data[co * ho * wo + r0 * wo..co * ho * wo + r1 * wo];
                let b = self.bias[co];
                for (d, &s) in dst.iter_mut().zip(&tile[co * npix..(co + 1) * npix]) {
                    let v = s + b;
                    *d = if relu { v.max(0.0) } else { v };
                }
            }
            r0 = r1;
        }
        Ok(y)
    }
}

/// The fixed encoder-decoder.
#[derive(Debug, Clone)]
pub struct TryOnModel {
    enc1: Conv,
    enc2: Conv,
    enc3: Conv,
    bottleneck: Conv,
    dec2: Conv,
    dec1: Conv,
    head: Conv,
}

impl Default for TryOnModel {
    fn default() -> Self {
        Self::new(WEIGHT_SEED)
    }
}

/// Output of one forward pass.
#[derive(Debug, Clone)]
pub struct TryOnOutcome {
    pub png: Vec<u8>,
    pub flops: f64,
    pub elapsed_ms: f64,
}

impl TryOnModel {
    pub fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        Self {
            enc1: Conv::seeded(&mut rng, 6, 32, 3, 1),
            enc2: Conv::seeded(&mut rng, 32, 64, 3, 2),
            enc3: Conv::seeded(&mut rng, 64, 128, 3, 2),
            bottleneck: Conv::seeded(&mut rng, 128, 128, 3, 1),
            dec2: Conv::seeded(&mut rng, 128, 64, 3, 1),
            dec1: Conv::seeded(&mut rng, 64, 32, 3, 1),
            head: Conv::seeded(&mut rng, 32, 4, 1, 1),
        }
    }

    /// GEMM FLOPs of one request at the fixed resolution.
    pub fn flops(&self) -> f64 {
        let (h, w) = (HEIGHT, WIDTH);
        self.enc1.flops(h, w)
            + self.enc2.flops(h, w)
            + self.enc3.flops(h / 2, w / 2)
            + self.bottleneck.flops(h / 4, w / 4)
            + self.dec2.flops(h / 2, w / 2)
            + self.dec1.flops(h, w)
            + self.head.flops(h, w)
    }

    /// Forward pass on two already-decoded, already-resized images; returns the blended image.
    pub fn forward<D: Device>(
        &self,
        dev: &D,
        person: &RgbImage,
        cloth: &RgbImage,
    ) -> Result<RgbImage, BackendError> {
        let x = stack(person, cloth);
        let e1 = self.enc1.forward(dev, &x, true)?; // 32 x H x W
        let e2 = self.enc2.forward(dev, &e1, true)?; // 64 x H/2
        let e3 = self.enc3.forward(dev, &e2, true)?; // 128 x H/4
        let b = self.bottleneck.forward(dev, &e3, true)?;
        let mut d2 = self.dec2.forward(dev, &upsample2(&b), true)?; // 64 x H/2
        add_assign(&mut d2, &e2);
        let mut d1 = self.dec1.forward(dev, &upsample2(&d2), true)?; // 32 x H
        add_assign(&mut d1, &e1);
        let head = self.head.forward(dev, &d1, false)?; // 3 garment channels + 1 mask logit
        Ok(blend(person, cloth, &head))
    }

    /// Full request: decode, resize, forward, encode PNG.
    pub fn run<D: Device>(
        &self,
        dev: &D,
        person_bytes: &[u8],
        cloth_bytes: &[u8],
        limits: ImageLimits,
    ) -> Result<TryOnOutcome, TryOnError> {
        self.run_until(dev, person_bytes, cloth_bytes, limits, &Cancel::never())
    }

    /// `run`, stopping between steps once `cancel` is set.
    pub fn run_until<D: Device>(
        &self,
        dev: &D,
        person_bytes: &[u8],
        cloth_bytes: &[u8],
        limits: ImageLimits,
        cancel: &Cancel,
    ) -> Result<TryOnOutcome, TryOnError> {
        let start = Instant::now();
        let person = decode("person_image", person_bytes, limits)?;
        let cloth = decode("cloth_image", cloth_bytes, limits)?;
        cancel.check()?;
        let out = self.forward(dev, &person, &cloth)?;
        cancel.check()?;
        let mut png = Vec::new();
        out.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .map_err(|e| TryOnError::Encode(e.to_string()))?;
        Ok(TryOnOutcome {
            png,
            flops: self.flops(),
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// Decodes a PNG or JPEG within `limits` and resizes it to the working resolution.
pub fn decode(
    field: &'static str,
    bytes: &[u8],
    limits: ImageLimits,
) -> Result<RgbImage, TryOnError> {
    let bad = |message: String| TryOnError::BadImage { field, message };
    if bytes.is_empty() {
        return Err(bad("empty file; expected a PNG or JPEG image".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("could not read image: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(other) => return Err(bad(format!("{other:?} is not accepted; send PNG or JPEG"))),
        None => return Err(bad("not a PNG or JPEG image".into())),
    }
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_width);
    l.max_image_height = Some(limits.max_height);
    // RGBA8 of the largest accepted image plus decoder scratch.
    l.max_alloc = Some(u64::from(limits.max_width) * u64::from(limits.max_height) * 8 + (16 << 20));
    reader.limits(l);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => TryOnError::ImageTooLarge {
            field,
            message: format!(
                "image exceeds the accepted {}x{} pixels",
                limits.max_width, limits.max_height
            ),
        },
        other => bad(format!("could not decode image: {other}")),
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(bad("image has no pixels".into()));
    }
    Ok(image::imageops::resize(
        &img.to_rgb8(),
        WIDTH as u32,
        HEIGHT as u32,
        image::imageops::FilterType::Triangle,
    ))
}

/// Person and garment RGB stacked into a 6 x H x W tensor in [-1, 1].
fn stack(person: &RgbImage, cloth: &RgbImage) -> Tensor {
    let (h, w) = (person.height() as usize, person.width() as usize);
    let mut t = Tensor::zeros(6, h, w);
    for (offset, img) in [(0, person), (3, cloth)] {
        for (x, y, px) in img.enumerate_pixels() {
            for ch in 0..3 {
                t.data[(offset + ch) * h * w + y as usize * w + x as usize] =
                    f32::from(px[ch]) / 127.5 - 1.0;
            }
        }
    }
    t
}

/// Nearest-neighbour 2x upsampling.
fn upsample2(x: &Tensor) -> Tensor {
    let mut y = Tensor::zeros(x.c, x.h * 2, x.w * 2);
    for c in 0..x.c {
        for oy in 0..y.h {
            for ox in 0..y.w {
                y.data[(c * y.h + oy) * y.w + ox] = x.data[(c * x.h + oy / 2) * x.w + ox / 2];
            }
        }
    }
    y
}

fn add_assign(y: &mut Tensor, x: &Tensor) {
    y.data.iter_mut().zip(&x.data).for_each(|(y, x)| *y += x);
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Blends the garment into the torso region using the head's mask and colour channels.
fn blend(person: &RgbImage, cloth: &RgbImage, head: &Tensor) -> RgbImage {
    let (h, w) = (head.h, head.w);
    let plane = h * w;
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (xu, yu) = (x as usize, y as usize);
        let i = yu * w + xu;
        // Torso box: rows 25%..70%, columns 20%..80% of the frame.
        let in_torso = yu >= h / 4 && yu < h * 7 / 10 && xu >= w / 5 && xu < w * 4 / 5;
        let mask = if in_torso {
            sigmoid(head.data[3 * plane + i])
        } else {
            0.0
        };
        let p = person.get_pixel(x, y);
        let c = cloth.get_pixel(x, y);
        image::Rgb(std::array::from_fn(|ch| {
            let garment = 0.8 * f32::from(c[ch]) + 0.2 * 255.0 * sigmoid(head.data[ch * plane + i]);
            let v = (1.0 - mask) * f32::from(p[ch]) + mask * garment;
            v.round().clamp(0.0, 255.0) as u8
        }))
    })
}
