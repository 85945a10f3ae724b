//! Outputs that a kernel writes whole, allocated without zeroing them first: a zeroed
//! allocation is a memset of every activation, as long as the kernel's own pass over it. The
//! kernels write through `MaybeUninit`, so no reference to an uninitialized value exists.

use std::mem::MaybeUninit;

use crate::KernelError;

/// `values` seen as possibly uninitialized, for a kernel that only writes through it (every
/// value written is initialized, so `values` stays initialized).
pub(crate) fn as_uninit<T: Copy>(values: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: same layout; callers only ever write initialized values through the result.
    unsafe { &mut *(values as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// Every element set to `value`, then seen as initialized.
pub(crate) fn filled<T: Copy>(values: &mut [MaybeUninit<T>], value: T) -> &mut [T] {
    for v in values.iter_mut() {
        v.write(value);
    }
    // SAFETY: every element was just written.
    unsafe { &mut *(values as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// A vector of `len` values that `write` fills.
///
/// # Safety
/// When `write` returns `Ok`, it must have written every one of the `len` elements.
pub(crate) unsafe fn new_output<T>(
    len: usize,
    write: impl FnOnce(&mut [MaybeUninit<T>]) -> Result<(), KernelError>,
) -> Result<Vec<T>, KernelError> {
    let mut values = Vec::with_capacity(len);
    write(&mut values.spare_capacity_mut()[..len])?;
    // SAFETY: the caller's contract: `write` succeeded, so all `len` values are written.
    unsafe { values.set_len(len) };
    Ok(values)
}
