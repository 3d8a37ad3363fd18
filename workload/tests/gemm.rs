//! Both GEMM paths against the naive reference on random inputs.
//!
//! Error bound: ||C - C_ref||_F / ||C_ref||_F <= 1e-5 for single products. f32 blocked GEMM with
//! inner dimension k has a worst-case relative error ~ k * 2^-24 (6e-8 per step); on random data the
//! observed error is far lower, so 1e-5 leaves headroom while still catching any indexing bug
//! (those give errors of order 1).

use gpu_workload::compute::matrix;
use gpu_workload::gemm::cpu::CpuDevice;
use gpu_workload::gemm::cublas::{self, CudaDevice};
use gpu_workload::gemm::reference::ReferenceDevice;
use gpu_workload::gemm::{Backend, BackendChoice, BackendError, BackendKind, Device, GemmDims};
use gpu_workload::rng::SplitMix64;

const REL_TOL: f64 = 1e-5;

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (f64::from(*g) - f64::from(*w)).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| f64::from(*w).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn check_gemm<D: Device>(dev: &D) {
    let reference = ReferenceDevice;
    let mut rng = SplitMix64::new(7);
    // Odd and prime extents exercise the kernels' edge handling; (1,1,1) the degenerate case.
    for &(m, n, k) in &[
        (1, 1, 1),
        (7, 13, 5),
        (64, 64, 64),
        (129, 67, 201),
        (256, 300, 96),
    ] {
        let dims = GemmDims { m, n, k };
        let a = rng.fill_signed(m * k);
        let b = rng.fill_signed(k * n);
        let c0 = rng.fill_signed(m * n);
        for &(alpha, beta) in &[(1.0f32, 0.0f32), (0.5, 1.0), (-2.0, 0.25)] {
            let (da, db) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
            let mut dc = dev.upload(&c0).unwrap();
            dev.gemm(dims, alpha, &da, &db, beta, &mut dc).unwrap();
            let got = dev.download(&dc).unwrap();
            let mut want = c0.clone();
            reference
                .gemm(dims, alpha, &a, &b, beta, &mut want)
                .unwrap();
            let err = rel_err(&got, &want);
            assert!(
                err <= REL_TOL,
                "{m}x{n}x{k} alpha={alpha} beta={beta}: relative error {err:e}"
            );
        }
    }
}

fn check_elementwise<D: Device>(dev: &D) {
    let mut rng = SplitMix64::new(11);
    let x = rng.fill_signed(100_003);
    let y = rng.fill_signed(100_003);
    let (dx, mut dy) = (dev.upload(&x).unwrap(), dev.upload(&y).unwrap());
    dev.mul_assign(&mut dy, &dx).unwrap();
    dev.axpby(2.0, &dx, -0.5, &mut dy).unwrap();
    dev.scale(&mut dy, 3.0).unwrap();
    let got = dev.download(&dy).unwrap();
    let want: Vec<f32> = x
        .iter()
        .zip(&y)
        .map(|(x, y)| 3.0 * (2.0 * x - 0.5 * (y * x)))
        .collect();
    assert!(rel_err(&got, &want) <= 1e-6);
}

#[test]
fn cpu_gemm_matches_reference() {
    check_gemm(&CpuDevice::new(2).unwrap());
    check_gemm(&CpuDevice::new(1).unwrap());
}

#[test]
fn cpu_elementwise_matches_reference() {
    check_elementwise(&CpuDevice::new(2).unwrap());
}

#[test]
fn shape_mismatch_is_an_error_not_a_panic() {
    let dev = CpuDevice::new(1).unwrap();
    let a = dev.upload(&[1.0; 6]).unwrap();
    let mut c = dev.zeros(4).unwrap();
    let err = dev
        .gemm(GemmDims::square(2), 1.0, &a, &a, 0.0, &mut c)
        .unwrap_err();
    assert!(matches!(err, BackendError::Shape(_)), "{err}");
}

#[test]
fn matrix_program_on_cpu_matches_reference_program() {
    for &(n, iters) in &[(1, 1), (17, 3), (48, 4)] {
        let (cpu, cpu_acc) = matrix::run(&CpuDevice::new(2).unwrap(), n, iters, 5).unwrap();
        let (reference, ref_acc) = matrix::run(&ReferenceDevice, n, iters, 5).unwrap();
        let err = rel_err(&cpu_acc, &ref_acc);
        assert!(err <= 1e-4, "n={n} iters={iters}: relative error {err:e}");
        assert!(
            (cpu.checksum - reference.checksum).abs() <= 1e-3 * reference.checksum.abs().max(1.0)
        );
        assert_eq!(cpu.flops, matrix::flops(n, iters));
        assert!(cpu_acc.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn matrix_program_stays_bounded_over_many_iterations() {
    let (out, acc) = matrix::run(&CpuDevice::new(2).unwrap(), 64, 100, 1).unwrap();
    assert!(
        acc.iter().all(|v| v.is_finite() && v.abs() < 1e3),
        "values grew: {}",
        out.checksum
    );
}

/// If this machine has CUDA, the cuBLAS path must agree with the reference too; otherwise it must
/// report itself unavailable, cleanly.
#[test]
fn cuda_backend_is_checked_or_reports_unavailable() {
    match CudaDevice::open(0) {
        Ok(dev) => {
            check_gemm(&dev);
            check_elementwise(&dev);
        }
        Err(e) => {
            assert!(matches!(e, BackendError::Unavailable(_)), "{e}");
            if !cublas::libraries_present() {
                assert!(e.to_string().contains("could not be loaded"), "{e}");
            }
        }
    }
}

#[test]
fn auto_falls_back_to_cpu_without_a_gpu() {
    let backend = Backend::open(BackendChoice::Auto, 1).unwrap();
    if CudaDevice::open(0).is_err() {
        assert_eq!(backend.kind(), BackendKind::Cpu);
        assert!(matches!(
            Backend::open(BackendChoice::Cuda, 1),
            Err(BackendError::Unavailable(_))
        ));
    } else {
        assert_eq!(backend.kind(), BackendKind::Cuda);
    }
    assert_eq!(
        Backend::open(BackendChoice::Cpu, 1).unwrap().kind(),
        BackendKind::Cpu
    );
}

/// Set in the child process of `cuda_libraries_without_their_symbols_fall_back_to_the_cpu`.
const FAKE_CUDA_CHILD: &str = "GPU_WORKLOAD_TEST_FAKE_CUDA";

/// Libraries named libcuda and libcublas that load but are not CUDA's (here the C library under
/// those names): `auto` must fall back to the CPU, saying why, and `cuda` must return the error;
/// neither may panic. The loader reads LD_LIBRARY_PATH once at start, so the check runs in a child
/// process of this test binary with the fake libraries first on that path.
#[cfg(target_os = "linux")]
#[test]
fn cuda_libraries_without_their_symbols_fall_back_to_the_cpu() {
    if std::env::var_os(FAKE_CUDA_CHILD).is_some() {
        // The child: the fake libraries are what cudarc finds.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        assert!(cublas::libraries_present(), "the fake libraries must load");
        let auto = Backend::open(BackendChoice::Auto, 1).expect("auto falls back");
        assert_eq!(auto.kind(), BackendKind::Cpu);
        match Backend::open(BackendChoice::Cuda, 1) {
            Err(e @ BackendError::LibraryUnusable { library, .. }) => {
                assert_eq!(library, "libcublas", "{e}");
                assert!(e.to_string().contains("lacks cublasCreate_v2"), "{e}");
                println!("cuda backend refused: {e}");
            }
            Err(e) => panic!("expected LibraryUnusable, got {e}"),
            Ok(_) => panic!("a fake cuBLAS opened"),
        }
        return;
    }

    // The parent: the C library this process already uses stands in for both.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libc.so.6"))
        .expect("this test binary links the C library dynamically");
    let dir = std::env::temp_dir().join(format!("fake-cuda-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["libcuda.so", "libcublas.so"] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(libc, &link).unwrap();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "cuda_libraries_without_their_symbols_fall_back_to_the_cpu",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FAKE_CUDA_CHILD, "1")
        .env("LD_LIBRARY_PATH", &dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed") && stdout.contains("cuda backend refused"),
        "the child did not run the check:\n{stdout}"
    );
    // The fallback is logged with its reason, and nothing panicked on the way.
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("falling back to the CPU backend")
            && all.contains("libcublas loaded, but it lacks"),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
}
