//! Naive reference backend: textbook triple loop with f64 accumulation. It exists so tests can
//! check the fast backends and the programs against an implementation that is obviously right.

use super::{check_same_len, BackendError, BackendKind, Device, GemmDims};

#[derive(Debug, Default)]
pub struct ReferenceDevice;

impl Device for ReferenceDevice {
    type Buf = Vec<f32>;

    fn kind(&self) -> BackendKind {
        BackendKind::Reference
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>, BackendError> {
        Ok(host.to_vec())
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>, BackendError> {
        Ok(vec![0.0; len])
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>, BackendError> {
        Ok(buf.clone())
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn gemm(
        &self,
        dims: GemmDims,
        alpha: f32,
        a: &Vec<f32>,
        b: &Vec<f32>,
        beta: f32,
        c: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        dims.check(a.len(), b.len(), c.len())?;
        let GemmDims { m, n, k } = dims;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for p in 0..k {
                    acc += f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
                }
                let prev = if beta == 0.0 {
                    0.0
                } else {
                    f64::from(beta) * f64::from(c[i * n + j])
                };
                c[i * n + j] = (f64::from(alpha) * acc + prev) as f32;
            }
        }
        Ok(())
    }

    fn mul_assign(&self, y: &mut Vec<f32>, x: &Vec<f32>) -> Result<(), BackendError> {
        check_same_len(y.len(), x.len())?;
        y.iter_mut().zip(x).for_each(|(y, x)| *y *= x);
        Ok(())
    }

    fn axpby(
        &self,
        alpha: f32,
        x: &Vec<f32>,
        beta: f32,
        y: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        check_same_len(y.len(), x.len())?;
        y.iter_mut()
            .zip(x)
            .for_each(|(y, x)| *y = alpha * x + beta * *y);
        Ok(())
    }

    fn scale(&self, y: &mut Vec<f32>, alpha: f32) -> Result<(), BackendError> {
        y.iter_mut().for_each(|v| *v *= alpha);
        Ok(())
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
