//! Function pointers as offsets within the executable image.
//!
//! A child started with the `spawn` method re-executes the exact file its parent runs
//! (`/proc/self/exe`, which names the parent's inode even if the path was replaced). The
//! distance between two items of one image does not change between two executions of it,
//! so the parent sends `f - anchor` and the child computes `anchor + offset`. Address space
//! layout randomisation moves the whole image, never the distances.
//!
//! The anchor is a `static`, not a function: a static has exactly one address, while the
//! optimiser may give a small function one copy per crate that calls it (and two copies
//! would put parent and child on different anchors).

/// The reference point. Its value is irrelevant; its address is the anchor.
static ANCHOR: u8 = 0;

fn anchor_addr() -> isize {
    std::ptr::addr_of!(ANCHOR) as usize as isize
}

/// The image-relative offset of a function pointer.
///
/// `F` must be a function-pointer type (`fn(A) -> R`); other types are rejected at run time.
pub(crate) fn offset_of<F: Copy>(f: F) -> isize {
    assert_eq!(
        std::mem::size_of::<F>(),
        std::mem::size_of::<usize>(),
        "offset_of takes a function pointer"
    );
    // SAFETY: `F` is pointer-sized (checked above) and, by this module's contract, a
    // function pointer; reading its bits as an integer is always valid.
    let addr: usize = unsafe { std::mem::transmute_copy(&f) };
    addr as isize - anchor_addr()
}

/// A value identifying this image's layout, sent with every offset and compared by the
/// child before it trusts any offset: the distance from the anchor to this very function
/// (kept out of line so that it exists exactly once).
#[inline(never)]
pub(crate) fn layout_check() -> isize {
    offset_of(layout_check as fn() -> isize)
}

/// The function pointer at `offset` from the anchor.
///
/// # Safety
/// `offset` must have been produced by [`offset_of`] with the same `F`, in a process that
/// runs the same executable image (checked with [`layout_check`] by the caller).
pub(crate) unsafe fn resolve<F: Copy>(offset: isize) -> F {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    let addr = (anchor_addr() + offset) as usize;
    // SAFETY: the caller guarantees `addr` is the address of a function of type `F` in this
    // image; a function pointer has the size and representation of `usize` (checked).
    unsafe { std::mem::transmute_copy(&addr) }
}
