//! One memory arena for every intermediate tensor, planned from tensor lifetimes the way
//! TFLite's greedy planner does: largest tensors first, each at the lowest offset that does
//! not overlap a tensor alive at the same time.

/// Offsets are multiples of this, so every element type is aligned and SIMD loads are happy.
pub const ARENA_ALIGNMENT: usize = 64;

/// A tensor that needs arena space: its size and the operator steps during which it is live.
#[derive(Clone, Copy, Debug)]
pub struct Lifetime {
    pub tensor: usize,
    pub bytes: usize,
    pub first_step: usize,
    pub last_step: usize,
}

#[derive(Clone, Debug, Default)]
pub struct ArenaPlan {
    /// Byte offset of each tensor of the subgraph that lives in the arena.
    pub offsets: Vec<Option<usize>>,
    pub size: usize,
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ARENA_ALIGNMENT) * ARENA_ALIGNMENT
}

/// Plans offsets for `lifetimes` over a subgraph of `num_tensors` tensors.
pub fn plan(num_tensors: usize, lifetimes: &[Lifetime]) -> ArenaPlan {
    let mut order: Vec<&Lifetime> = lifetimes.iter().collect();
    order.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(a.first_step.cmp(&b.first_step))
            .then(a.tensor.cmp(&b.tensor))
    });
    let mut placed: Vec<(Lifetime, usize)> = Vec::with_capacity(order.len());
    let mut plan = ArenaPlan {
        offsets: vec![None; num_tensors],
        size: 0,
    };
    for life in order {
        let size = round_up(life.bytes.max(1));
        let mut live: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(other, _)| {
                other.first_step <= life.last_step && life.first_step <= other.last_step
            })
            .map(|(other, offset)| (*offset, *offset + round_up(other.bytes.max(1))))
            .collect();
        live.sort_unstable();
        let mut offset = 0;
        for (start, end) in live {
            if offset + size <= start {
                break;
            }
            offset = offset.max(end);
        }
        plan.offsets[life.tensor] = Some(offset);
        plan.size = plan.size.max(offset + size);
        placed.push((*life, offset));
    }
    plan
}

/// The allocator could not provide the memory.
#[derive(Debug)]
pub struct AllocationFailed;

/// Zeroed, `ARENA_ALIGNMENT`-aligned bytes: an aligned window into a byte vector allocated
/// `ARENA_ALIGNMENT - 1` bytes longer.
pub struct AlignedBytes {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBytes {
    pub fn zeroed(len: usize) -> Self {
        Self::aligned_within(vec![0; Self::padded(len)], len)
    }

    /// Like `zeroed`, but reports an allocation failure instead of aborting. The bytes come
    /// zeroed from the allocator (`calloc`: fresh pages from the OS for a large arena, never
    /// written), so a big arena costs no resident memory until tensors are written: loading a
    /// model whose shapes ask for gigabytes does not touch them.
    pub fn try_zeroed(len: usize) -> Result<Self, AllocationFailed> {
        let size = Self::padded(len);
        let layout = std::alloc::Layout::array::<u8>(size).map_err(|_| AllocationFailed)?;
        // SAFETY: `layout` has a non-zero size (at least `ARENA_ALIGNMENT - 1`).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(AllocationFailed);
        }
        // SAFETY: allocated by the global allocator with the layout of `size` bytes (align 1,
        // which keeps `calloc`'s lazy zeroing), all initialised to zero.
        let bytes = unsafe { Vec::from_raw_parts(ptr, size, size) };
        Ok(Self::aligned_within(bytes, len))
    }

    /// Bytes to allocate for `len` aligned ones (`usize::MAX`, which no allocator grants, when
    /// that overflows). Never zero, so even an empty slice is aligned.
    fn padded(len: usize) -> usize {
        len.saturating_add(ARENA_ALIGNMENT - 1)
    }

    fn aligned_within(bytes: Vec<u8>, len: usize) -> Self {
        let start = (ARENA_ALIGNMENT - bytes.as_ptr().addr() % ARENA_ALIGNMENT) % ARENA_ALIGNMENT;
        debug_assert!(start + len <= bytes.len());
        Self { bytes, start, len }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl std::fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBytes({} bytes)", self.len)
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(tensor: usize, bytes: usize, first_step: usize, last_step: usize) -> Lifetime {
        Lifetime {
            tensor,
            bytes,
            first_step,
            last_step,
        }
    }

    #[test]
    fn tensors_with_disjoint_lifetimes_share_space() {
        // A chain a → b → c: a and c never live together, so they can share offset 0.
        let plan = plan(
            3,
            &[life(0, 1000, 0, 0), life(1, 500, 0, 1), life(2, 1000, 1, 2)],
        );
        assert_eq!(plan.offsets[0], Some(0));
        assert_eq!(plan.offsets[2], Some(0));
        assert_eq!(plan.offsets[1], Some(1024));
        assert_eq!(plan.size, 1024 + 512);
    }

    #[test]
    fn overlapping_tensors_never_overlap_in_memory() {
        let lifetimes: Vec<_> = (0..20)
            .map(|i| life(i, 100 + 37 * i, i / 3, i / 3 + 2))
            .collect();
        let plan = plan(20, &lifetimes);
        for a in &lifetimes {
            for b in &lifetimes {
                if a.tensor >= b.tensor || a.last_step < b.first_step || b.last_step < a.first_step
                {
                    continue;
                }
                let (oa, ob) = (
                    plan.offsets[a.tensor].unwrap(),
                    plan.offsets[b.tensor].unwrap(),
                );
                assert!(
                    oa + a.bytes <= ob || ob + b.bytes <= oa,
                    "{a:?} and {b:?} overlap"
                );
            }
        }
    }

    #[test]
    fn aligned_bytes_are_aligned() {
        let bytes = AlignedBytes::zeroed(100);
        assert_eq!(bytes.as_slice().len(), 100);
        assert_eq!(bytes.as_slice().as_ptr() as usize % ARENA_ALIGNMENT, 0);
    }

    #[test]
    fn try_zeroed_bytes_are_zero_aligned_or_an_error() {
        for len in [0, 1, 63, 64, 65, 1 << 20] {
            let mut bytes = AlignedBytes::try_zeroed(len).expect("small");
            assert_eq!(bytes.len(), len);
            assert!(bytes.as_slice().iter().all(|&b| b == 0));
            assert_eq!(bytes.as_slice().as_ptr() as usize % ARENA_ALIGNMENT, 0);
            bytes.as_mut_slice().fill(7);
        }
        // More than the address space can hold: an error, not an abort.
        assert!(AlignedBytes::try_zeroed(usize::MAX - 1).is_err());
    }
}
