//! Kiln's CPU training kernels: forward, input gradient, weight gradient and bias gradient
//! of 2-D convolutions over NCHW batches, max pooling, ReLU/ReLU6 and batch normalization
//! with their gradients. Burn-free (slices in, slices out); the Burn backend extension in `kiln-nn` calls
//! them for the flex backend.
//!
//! - stride-1 dense convolutions, on a CPU with AVX-512, read shifted views of a padded
//!   input plane in place (`plane_conv`, no im2col): their own register-tiled products for
//!   the forward, the input gradient (the adjoint is the same product) and the weight
//!   gradient (channels in the lanes);
//! - other dense and grouped convolutions are im2col + GEMM (`gemm`'s AVX-512 microkernels
//!   where the CPU has them), one image per thread; 1×1 stride-1 convolutions skip im2col;
//! - a convolution followed by ReLU and 2×2 max pooling trains as one block
//!   (`conv_relu_pool`): each image's output pooled while in cache, one byte per pooled value
//!   remembering its window's winner for the backward pass;
//! - depthwise convolutions are direct loops: per channel plane, vectorized along rows, for
//!   large stride-1 planes; channels-last (channels in the SIMD lanes) for small planes and
//!   strides;
//! - every reduction runs in a fixed order, so results are bit-identical run to run whatever
//!   the thread count.

mod activation;
mod batch_norm;
mod conv2d;
mod conv_relu_pool;
mod denormals;
mod depthwise;
mod depthwise_nhwc;
mod error;
mod gemm_conv;
mod im2col;
mod matmul;
mod max_pool;
mod parallel;
mod plane_conv;
#[cfg(test)]
mod reference;
mod relu_pool;
mod shape;
mod shifted_gemm;
mod simd;
#[cfg(test)]
mod tests;
mod uninit;

pub use activation::{
    clamp_backward, clamp_backward_in_place, clamp_forward, clamp_forward_in_place,
};
pub use batch_norm::{
    BatchNormShape, batch_norm_train_backward, batch_norm_train_backward_vec,
    batch_norm_train_forward, batch_norm_train_forward_vec, channel_affine_backward,
    channel_affine_backward_vec, channel_affine_forward, channel_affine_forward_vec,
};
pub use conv_relu_pool::{
    ConvGradients, NOT_ROUTED, conv2d_relu_pool_backward, conv2d_relu_pool_forward, relu_pool_size,
};
pub use conv2d::{
    conv2d_bias_grad, conv2d_forward, conv2d_forward_vec, conv2d_input_grad, conv2d_input_grad_vec,
    conv2d_weight_grad,
};
pub use denormals::FlushToZero;
pub use error::KernelError;
pub use max_pool::{
    Pool2dShape, max_pool2d_backward, max_pool2d_backward_vec, max_pool2d_forward,
    max_pool2d_forward_vec,
};
pub use shape::Conv2dShape;
