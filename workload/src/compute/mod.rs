//! The programs the service runs, each generic over [`crate::gemm::Device`].

pub mod busy;
pub mod matrix;
pub mod tryon;
