//! Helpers shared by the CPU device's test files.

use kiln_ir::Tensor;

/// xorshift64: the same inputs on every run and machine, without a rand dependency.
pub struct Rng(pub u64);

impl Rng {
    /// f32 values uniform in [-1, 1).
    pub fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::new(shape.to_vec(), v).unwrap()
    }
}
