//! Function pointers as offsets within the executable image.
//!
//! A child started with the `spawn` method re-executes the exact file its parent runs
//! (`/proc/self/exe`, which names the parent's inode even if the path was replaced). The
//! distance between two items of one image does not change between two executions of it,
//! so the parent sends `f - anchor` and the child computes `anchor + offset`. Address space
//! layout randomisation moves the whole image, never the distances.
//!
//! That holds only for functions of the image the anchor lives in. A function of another
//! loaded object (a `cdylib` opened with `dlopen`, a Python extension module) is placed
//! independently of the anchor, so [`offset_of`] asks the dynamic loader (`dladdr`) which
//! object holds the function and refuses one that is not the anchor's, and refuses as well
//! when the anchor's object is not the main program (which is what a child re-executes).
//!
//! The anchor is a `static`, not a function: a static has exactly one address, while the
//! optimiser may give a small function one copy per crate that calls it (and two copies
//! would put parent and child on different anchors).

use std::ffi::CStr;
use std::fmt;
use std::sync::OnceLock;

/// The reference point. Its value is irrelevant; its address is the anchor.
static ANCHOR: u8 = 0;

fn anchor_ptr() -> *const u8 {
    std::ptr::addr_of!(ANCHOR)
}

/// A function-pointer type: the only types whose values [`offset_of`] takes and
/// [`resolve`] makes.
///
/// Implemented for `fn() -> R` and `fn(A) -> R` below, and for other concrete
/// function-pointer types with [`impl_fn_ptr!`]; both implement it by a plain cast to an
/// address and by a `transmute` from a code address.
///
/// # Safety
/// Implement it only for function-pointer types (an `unsafe impl`, so only in `sys`).
pub(crate) unsafe trait FnPtr: Copy {
    /// The function's address.
    fn addr(self) -> *const ();
    /// The function pointer of type `Self` at `addr`.
    ///
    /// # Safety
    /// `addr` must be the address of a function whose signature is `Self`.
    unsafe fn from_addr(addr: *const ()) -> Self;
}

/// Implements [`FnPtr`] for function-pointer types the generic implementations do not
/// cover: higher-ranked ones (`for<'a> fn(&'a [u8])`) and aliases generic over a type
/// (`impl_fn_ptr!([O] Trampoline<O>)`).
macro_rules! impl_fn_ptr {
    ($t:ty) => {
        $crate::sys::fnptr::impl_fn_ptr!([] $t);
    };
    ([$($g:ident),*] $t:ty) => {
        // SAFETY: the cast in `addr` compiles only for a function-pointer type.
        unsafe impl<$($g),*> $crate::sys::fnptr::FnPtr for $t {
            fn addr(self) -> *const () {
                self as *const ()
            }
            unsafe fn from_addr(addr: *const ()) -> Self {
                // SAFETY: `Self` is a function-pointer type (the cast in `addr` compiles
                // only for one), which has the size and representation of a code address;
                // the caller guarantees a function of this signature lives at `addr`.
                unsafe { std::mem::transmute::<*const (), $t>(addr) }
            }
        }
    };
}
pub(crate) use impl_fn_ptr;

// SAFETY: a function-pointer type.
unsafe impl<R> FnPtr for fn() -> R {
    fn addr(self) -> *const () {
        self as *const ()
    }
    unsafe fn from_addr(addr: *const ()) -> Self {
        // SAFETY: as in `impl_fn_ptr!`.
        unsafe { std::mem::transmute::<*const (), fn() -> R>(addr) }
    }
}

// SAFETY: a function-pointer type.
unsafe impl<A, R> FnPtr for fn(A) -> R {
    fn addr(self) -> *const () {
        self as *const ()
    }
    unsafe fn from_addr(addr: *const ()) -> Self {
        // SAFETY: as in `impl_fn_ptr!`.
        unsafe { std::mem::transmute::<*const (), fn(A) -> R>(addr) }
    }
}

/// A function that a re-executed child could not find by its offset: it lives in another
/// loaded object than the anchor, or the anchor is not in the main program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotInImage {
    /// The object holding the function (its path as the loader knows it).
    pub(crate) function_object: String,
    /// The object holding this library.
    pub(crate) library_object: String,
    /// Whether the library itself is outside the main program.
    pub(crate) library_outside_main: bool,
}

impl fmt::Display for NotInImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.library_outside_main {
            write!(
                f,
                "multiproc is loaded from the shared object {}, not from the main program; a \
                 child started by re-executing the program cannot run a function from it \
                 (use StartMethod::Fork)",
                self.library_object
            )
        } else {
            write!(
                f,
                "the target function lives in the shared object {}, not in the program {} \
                 that a spawned child runs; a spawned child cannot call it (define the target \
                 in the program itself, or use StartMethod::Fork)",
                self.function_object, self.library_object
            )
        }
    }
}

/// The loaded object holding `addr`: its base address and its path, or `None` when the
/// loader knows no object there.
fn object_of(addr: *const ()) -> Option<(usize, String)> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::uninit();
    // SAFETY: `dladdr` only reads the loader's tables and writes `info`; any address is a
    // valid question. A non-zero return means it filled `info`.
    let found = unsafe { libc::dladdr(addr.cast(), info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: `dladdr` succeeded, so it initialised `info`.
    let info = unsafe { info.assume_init() };
    let name = if info.dli_fname.is_null() {
        String::from("(unnamed object)")
    } else {
        // SAFETY: a non-null `dli_fname` is a NUL-terminated string owned by the loader,
        // valid while the object stays loaded (it holds `addr`, which we were given).
        unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned()
    };
    Some((info.dli_fbase as usize, name))
}

/// The object that holds the main program: the one containing its entry point.
fn main_program_base() -> Option<usize> {
    // SAFETY: `getauxval` reads the auxiliary vector; it has no preconditions.
    let entry = unsafe { libc::getauxval(libc::AT_ENTRY) } as usize;
    if entry == 0 {
        return None;
    }
    object_of(entry as *const ()).map(|(base, _)| base)
}

/// The anchor's object (base address, path), and whether it is the main program; found
/// once, since neither can change while this code is loaded.
fn anchor_object() -> &'static (Option<(usize, String)>, bool) {
    static OBJECT: OnceLock<(Option<(usize, String)>, bool)> = OnceLock::new();
    OBJECT.get_or_init(|| {
        let object = object_of(anchor_ptr().cast()).map(|(base, name)| {
            // The loader names the main program by an empty string.
            if name.is_empty() {
                let exe = std::env::current_exe().map(|p| p.display().to_string());
                (base, exe.unwrap_or(name))
            } else {
                (base, name)
            }
        });
        let in_main = object.as_ref().is_some_and(|(base, _)| main_program_base() == Some(*base));
        (object, in_main)
    })
}

/// Checks that `f` lies in the anchor's object, and that object is the main program.
fn check_in_image(f: *const ()) -> Result<(), NotInImage> {
    let (anchor, in_main) = anchor_object();
    if anchor.is_none() {
        // The loader knows no object at all here: a statically linked program, which is
        // one image holding every function.
        return Ok(());
    }
    let function = object_of(f);
    match (anchor, &function) {
        (Some((a, _)), Some((b, _))) if a == b && *in_main => Ok(()),
        _ => {
            let name = |o: Option<&(usize, String)>| {
                o.map_or_else(|| "(unknown object)".to_string(), |(_, n)| n.clone())
            };
            Err(NotInImage {
                function_object: name(function.as_ref()),
                library_object: name(anchor.as_ref()),
                library_outside_main: !*in_main,
            })
        }
    }
}

fn offset_from_anchor(f: *const ()) -> isize {
    (f as usize).wrapping_sub(anchor_ptr() as usize) as isize
}

/// The image-relative offset of a function pointer, or why a re-executed child could not
/// find the function by it.
pub(crate) fn offset_of<F: FnPtr>(f: F) -> Result<isize, NotInImage> {
    let addr = f.addr();
    check_in_image(addr)?;
    Ok(offset_from_anchor(addr))
}

/// A value identifying this image's layout, sent with every offset and compared by the
/// child before it trusts any offset: the distance from the anchor to this very function
/// (kept out of line so that it exists exactly once).
#[inline(never)]
pub(crate) fn layout_check() -> isize {
    let f: fn() -> isize = layout_check;
    offset_from_anchor(f.addr())
}

/// The function pointer at `offset` from the anchor.
///
/// # Safety
/// `offset` must have been produced by [`offset_of`] with the same `F`, in a process that
/// runs the same executable image (checked with [`layout_check`] by the caller).
pub(crate) unsafe fn resolve<F: FnPtr>(offset: isize) -> F {
    let addr = anchor_ptr().wrapping_byte_offset(offset).cast::<()>();
    // SAFETY: the caller guarantees that a function of type `F` lives at `addr`.
    unsafe { F::from_addr(addr) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn an_offset_resolves_to_the_same_function() {
        let f: fn(u32) -> u32 = double;
        let offset = offset_of(f).unwrap();
        // SAFETY: `offset` was taken from a `fn(u32) -> u32` in this very process.
        let g: fn(u32) -> u32 = unsafe { resolve(offset) };
        assert_eq!(g(21), 42);
    }

    #[test]
    fn a_function_of_another_object_is_refused() {
        // `libc::getpid` lives in the C library, not in this program. Its address is only
        // compared, never called through this type.
        let addr = libc::getpid as *const ();
        let err = check_in_image(addr).unwrap_err();
        assert!(!err.library_outside_main, "{err}");
        assert!(err.function_object.contains("libc"), "{err}");
        assert!(err.to_string().contains("shared object"), "{err}");
    }
}
