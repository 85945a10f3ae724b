//! Shared, immutable byte storage so buffers read from a model file borrow the file's bytes
//! (or a memory map of it) instead of copying every weight.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// A cheaply clonable view into reference-counted bytes.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl SharedBytes {
    /// Takes ownership of any byte container (a `Vec<u8>`, a memory map, ...).
    pub fn new<T: AsRef<[u8]> + Send + Sync + 'static>(owner: T) -> Self {
        let len = owner.as_ref().len();
        Self {
            owner: Arc::new(owner),
            range: 0..len,
        }
    }

    pub fn empty() -> Self {
        Self::new(Vec::new())
    }

    /// A sub-view sharing the same storage; `None` when the range is out of bounds.
    pub fn slice(&self, range: Range<usize>) -> Option<Self> {
        if range.start > range.end || range.end > self.range.len() {
            return None;
        }
        let start = self.range.start + range.start;
        Some(Self {
            owner: Arc::clone(&self.owner),
            range: start..start + range.len(),
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Whether `inner` is a view into the same storage as `self` (used to check that weights
    /// are borrowed, not copied).
    pub fn shares_storage_with(&self, inner: &SharedBytes) -> bool {
        Arc::ptr_eq(&self.owner, &inner.owner)
    }
}

impl From<Vec<u8>> for SharedBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBytes({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_storage_and_check_bounds() {
        let all = SharedBytes::from(vec![1u8, 2, 3, 4, 5]);
        let mid = all.slice(1..4).unwrap();
        assert_eq!(mid.as_slice(), &[2, 3, 4]);
        assert!(all.shares_storage_with(&mid));
        assert_eq!(mid.slice(1..3).unwrap().as_slice(), &[3, 4]);
        assert!(mid.slice(2..4).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = mid.slice(2..1);
        assert!(backwards.is_none());
    }
}
