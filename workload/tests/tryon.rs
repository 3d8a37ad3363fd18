//! The try-on load model: output shape, determinism, FLOP count, and image validation.

use gpu_workload::compute::tryon::{self, Conv, ImageLimits, Tensor, TryOnError, TryOnModel};
use gpu_workload::gemm::cpu::CpuDevice;
use gpu_workload::gemm::reference::ReferenceDevice;
use gpu_workload::rng::SplitMix64;

mod support;

const LIMITS: ImageLimits = ImageLimits {
    max_width: 1024,
    max_height: 1024,
};

#[test]
fn output_is_a_png_at_the_working_resolution_and_deterministic() {
    let dev = CpuDevice::new(2).unwrap();
    let model = TryOnModel::default();
    let person = support::png(300, 400, 10);
    let cloth = support::jpeg(120, 90);
    let a = model.run(&dev, &person, &cloth, LIMITS).unwrap();
    let b = TryOnModel::default()
        .run(&dev, &person, &cloth, LIMITS)
        .unwrap();
    assert_eq!(
        a.png, b.png,
        "same inputs and seed must give the same bytes"
    );
    let img = image::load_from_memory_with_format(&a.png, image::ImageFormat::Png).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (tryon::WIDTH as u32, tryon::HEIGHT as u32)
    );
    // Outside the torso box the person image passes through unchanged.
    let resized = tryon::decode("person_image", &person, LIMITS).unwrap();
    assert_eq!(img.to_rgb8().get_pixel(2, 2), resized.get_pixel(2, 2));
    // Inside it, the garment is blended in.
    let (cx, cy) = (tryon::WIDTH as u32 / 2, tryon::HEIGHT as u32 / 2);
    assert_ne!(img.to_rgb8().get_pixel(cx, cy), resized.get_pixel(cx, cy));
    // A different garment changes the output.
    let c = model
        .run(&dev, &person, &support::png(64, 64, 250), LIMITS)
        .unwrap();
    assert_ne!(a.png, c.png);
}

#[test]
fn flops_match_the_layer_shapes() {
    // enc1 6->32 @256x192, enc2 32->64 s2 -> 128x96, enc3 64->128 s2 -> 64x48, bottleneck 128->128,
    // dec2 128->64 @128x96, dec1 64->32 @256x192, head 32->4 1x1 @256x192.
    let px = |h: f64, w: f64| h * w;
    let want = 2.0
        * (32.0 * 54.0 * px(256.0, 192.0)
            + 64.0 * 288.0 * px(128.0, 96.0)
            + 128.0 * 576.0 * px(64.0, 48.0)
            + 128.0 * 1152.0 * px(64.0, 48.0)
            + 64.0 * 1152.0 * px(128.0, 96.0)
            + 32.0 * 576.0 * px(256.0, 192.0)
            + 4.0 * 32.0 * px(256.0, 192.0));
    assert_eq!(TryOnModel::default().flops(), want);
}

#[test]
fn tiled_conv_on_cpu_matches_reference_backend() {
    // 64 channels x 3x3 over 64x64 needs more than one im2col tile, so tiling, padding and the
    // stride are all checked against the naive GEMM.
    let mut rng = SplitMix64::new(3);
    for stride in [1, 2] {
        let conv = Conv {
            cin: 64,
            cout: 8,
            k: 3,
            stride,
            weights: rng.fill_signed(8 * 64 * 9),
            bias: rng.fill_signed(8),
        };
        let x = Tensor {
            c: 64,
            h: 64,
            w: 64,
            data: rng.fill_signed(64 * 64 * 64),
        };
        let cpu = conv.forward(&CpuDevice::new(2).unwrap(), &x, true).unwrap();
        let want = conv.forward(&ReferenceDevice, &x, true).unwrap();
        assert_eq!((cpu.c, cpu.h, cpu.w), (8, 64 / stride, 64 / stride));
        let max_diff = cpu
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff <= 1e-4,
            "stride {stride}: max abs difference {max_diff}"
        );
        assert!(cpu.data.iter().all(|&v| v >= 0.0), "ReLU applied");
    }
}

#[test]
fn bad_images_are_rejected_with_the_field_name() {
    let bad = |bytes: &[u8]| tryon::decode("cloth_image", bytes, LIMITS).unwrap_err();
    assert!(matches!(
        bad(b""),
        TryOnError::BadImage {
            field: "cloth_image",
            ..
        }
    ));
    assert!(matches!(
        bad(b"not an image at all"),
        TryOnError::BadImage { .. }
    ));
    // A truncated PNG: right magic, broken body.
    let png = support::png(40, 40, 0);
    assert!(matches!(
        bad(&png[..png.len() / 2]),
        TryOnError::BadImage { .. }
    ));
    // GIF header: a real format, but not one we accept.
    assert!(matches!(
        bad(b"GIF89a\x01\x00\x01\x00\x00\x00\x00"),
        TryOnError::BadImage { .. }
    ));
    let too_big = support::png(1025, 10, 0);
    match bad(&too_big) {
        TryOnError::ImageTooLarge { field, message } => {
            assert_eq!(field, "cloth_image");
            assert!(message.contains("1024x1024"), "{message}");
        }
        other => panic!("expected ImageTooLarge, got {other:?}"),
    }
}
