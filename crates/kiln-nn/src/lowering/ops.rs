//! The graph builder's element-wise, reduction and padding operators: what MobileNet-style
//! blocks need around their convolutions (activations that do not fuse, squeeze-excitation,
//! residual adds, global pooling, explicit padding).

use kiln_tflite::{Activation, BuiltinOp, BuiltinOptions};

use super::builder::{GraphBuilder, TensorId};

/// NumPy broadcasting of two shapes (the runtime and TFLite broadcast the same way). Callers
/// pass shapes that broadcast; a mismatch is a bug in the lowering, not bad input.
fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], d: usize| {
        let offset = rank - s.len();
        if d < offset { 1 } else { s[d - offset] }
    };
    (0..rank)
        .map(|d| {
            let (x, y) = (at(a, d), at(b, d));
            assert!(
                x == y || x == 1 || y == 1,
                "shapes {a:?} and {b:?} do not broadcast"
            );
            x.max(y)
        })
        .collect()
}

fn as_i32(value: usize) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl GraphBuilder {
    /// PAD with zeros: `pads[d]` = (before, after) for each dimension of the input.
    pub fn pad(&mut self, name: &str, input: TensorId, pads: &[[usize; 2]]) -> TensorId {
        let shape = self.shape(input);
        assert_eq!(
            shape.len(),
            pads.len(),
            "one (before, after) pair per dimension"
        );
        let out: Vec<usize> = shape
            .iter()
            .zip(pads)
            .map(|(&d, [before, after])| d + before + after)
            .collect();
        let values: Vec<i32> = pads.iter().flatten().map(|&p| as_i32(p)).collect();
        let paddings = self.constant_i32(&format!("{name}/paddings"), &[pads.len(), 2], &values);
        let output = self.activation(name, &out);
        self.operator(
            BuiltinOp::PAD,
            &[Some(input), Some(paddings)],
            output,
            BuiltinOptions::Pad,
        );
        output
    }

    /// MEAN over `axes`, keeping them as size 1 when `keep_dims`.
    pub fn mean(
        &mut self,
        name: &str,
        input: TensorId,
        axes: &[usize],
        keep_dims: bool,
    ) -> TensorId {
        let shape = self.shape(input);
        let out: Vec<usize> = shape
            .iter()
            .enumerate()
            .filter_map(|(d, &n)| match (axes.contains(&d), keep_dims) {
                (false, _) => Some(n),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let values: Vec<i32> = axes.iter().map(|&a| as_i32(a)).collect();
        let axes = self.constant_i32(&format!("{name}/axes"), &[values.len()], &values);
        let output = self.activation(name, &out);
        self.operator(
            BuiltinOp::MEAN,
            &[Some(input), Some(axes)],
            output,
            BuiltinOptions::Reducer { keep_dims },
        );
        output
    }

    /// ADD with broadcasting and a fused activation.
    pub fn add(
        &mut self,
        name: &str,
        a: TensorId,
        b: TensorId,
        activation: Activation,
    ) -> TensorId {
        self.broadcasting(
            name,
            BuiltinOp::ADD,
            [a, b],
            BuiltinOptions::Add { activation },
        )
    }

    /// MUL with broadcasting and a fused activation.
    pub fn mul(
        &mut self,
        name: &str,
        a: TensorId,
        b: TensorId,
        activation: Activation,
    ) -> TensorId {
        self.broadcasting(
            name,
            BuiltinOp::MUL,
            [a, b],
            BuiltinOptions::Mul { activation },
        )
    }

    /// A two-input operator whose output has the inputs' broadcast shape.
    fn broadcasting(
        &mut self,
        name: &str,
        op: BuiltinOp,
        [a, b]: [TensorId; 2],
        options: BuiltinOptions,
    ) -> TensorId {
        let output = self.activation(name, &broadcast(&self.shape(a), &self.shape(b)));
        self.operator(op, &[Some(a), Some(b)], output, options);
        output
    }

    /// LOGISTIC (sigmoid).
    pub fn logistic(&mut self, name: &str, input: TensorId) -> TensorId {
        self.elementwise(name, BuiltinOp::LOGISTIC, input, BuiltinOptions::None)
    }

    /// HARD_SWISH, `x · relu6(x + 3) / 6`.
    pub fn hard_swish(&mut self, name: &str, input: TensorId) -> TensorId {
        self.elementwise(
            name,
            BuiltinOp::HARD_SWISH,
            input,
            BuiltinOptions::HardSwish,
        )
    }

    /// A one-input operator whose output has its input's shape.
    fn elementwise(
        &mut self,
        name: &str,
        op: BuiltinOp,
        input: TensorId,
        options: BuiltinOptions,
    ) -> TensorId {
        let output = self.activation(name, &self.shape(input));
        self.operator(op, &[Some(input)], output, options);
        output
    }

    /// Swish (SiLU), `x · sigmoid(x)`: TFLite has no builtin for it, so LOGISTIC then MUL, as
    /// the TensorFlow converter emits it.
    pub fn swish(&mut self, name: &str, input: TensorId) -> TensorId {
        let gate = self.logistic(&format!("{name}/sigmoid"), input);
        self.mul(name, input, gate, Activation::None)
    }
}

#[cfg(test)]
mod tests {
    use super::broadcast;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast(&[1, 4, 4, 8], &[1, 1, 1, 8]), vec![1, 4, 4, 8]);
        assert_eq!(broadcast(&[8], &[1, 2, 2, 8]), vec![1, 2, 2, 8]);
    }
}
