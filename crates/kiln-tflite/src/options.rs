//! Builtin operator options, owned. Each variant mirrors one options table of the format.

use crate::types::{Activation, Padding, TensorType};

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Conv2DOptions {
    pub padding: Padding,
    pub stride_w: i32,
    pub stride_h: i32,
    pub activation: Activation,
    pub dilation_w: i32,
    pub dilation_h: i32,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct DepthwiseConv2DOptions {
    pub padding: Padding,
    pub stride_w: i32,
    pub stride_h: i32,
    pub depth_multiplier: i32,
    pub activation: Activation,
    pub dilation_w: i32,
    pub dilation_h: i32,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Pool2DOptions {
    pub padding: Padding,
    pub stride_w: i32,
    pub stride_h: i32,
    pub filter_w: i32,
    pub filter_h: i32,
    pub activation: Activation,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct FullyConnectedOptions {
    pub activation: Activation,
    /// 0 = DEFAULT; other weight formats (shuffled int8) are read so they can be rejected by name.
    pub weights_format: i8,
    pub keep_num_dims: bool,
    pub asymmetric_quantize_inputs: bool,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct StridedSliceOptions {
    pub begin_mask: i32,
    pub end_mask: i32,
    pub ellipsis_mask: i32,
    pub new_axis_mask: i32,
    pub shrink_axis_mask: i32,
    pub offset: bool,
}

/// The options attached to an operator. `Unknown` keeps the union tag of an options table
/// Kiln does not model, so the runtime can say which one it met.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum BuiltinOptions {
    #[default]
    None,
    Conv2D(Conv2DOptions),
    DepthwiseConv2D(DepthwiseConv2DOptions),
    Pool2D(Pool2DOptions),
    FullyConnected(FullyConnectedOptions),
    Softmax {
        beta: f32,
    },
    Concatenation {
        axis: i32,
        activation: Activation,
    },
    Add {
        activation: Activation,
    },
    Mul {
        activation: Activation,
    },
    Sub {
        activation: Activation,
    },
    /// `new_shape` is absent when the target shape comes from the second input tensor.
    Reshape {
        new_shape: Option<Vec<i32>>,
    },
    ResizeBilinear {
        align_corners: bool,
        half_pixel_centers: bool,
    },
    Reducer {
        keep_dims: bool,
    },
    Squeeze {
        squeeze_dims: Vec<i32>,
    },
    StridedSlice(StridedSliceOptions),
    Shape {
        out_type: TensorType,
    },
    Pack {
        values_count: i32,
        axis: i32,
    },
    LeakyRelu {
        alpha: f32,
    },
    DepthToSpace {
        block_size: i32,
    },
    Pad,
    PadV2,
    Transpose,
    Dequantize,
    Quantize,
    HardSwish,
    Densify,
    Unknown {
        tag: u8,
    },
}
