//! The element types: [`CType`], the Rust types that stand for Python's ctypes type codes
//! (`'i'` is `i32`, `'d'` is `f64`, …), and [`CInt`], the integer ones, which have
//! lock-free read-modify-write operations. Both are sealed: the conversions to and from
//! the bytes an element occupies in shared memory stay inside this module.

use std::fmt;

mod sealed {
    /// Conversions between an element and the bytes it occupies in shared memory, kept
    /// out of the public API so that only the types listed in [`super::CType`] qualify.
    pub trait Sealed: Copy {
        /// The element's native-endian bytes in the first `size_of::<Self>()` bytes.
        fn to_ne(self) -> [u8; 8];
        /// The element from the first `size_of::<Self>()` bytes (any bit pattern).
        fn from_ne(bytes: [u8; 8]) -> Self;
    }

    /// Wrapping arithmetic of the integer element types.
    pub trait Int: Sealed {
        fn wrapping_add(self, other: Self) -> Self;
        fn wrapping_sub(self, other: Self) -> Self;
    }
}

/// An element type of a [`Value`](super::Value) or [`Array`](super::Array): the Rust type
/// of one of Python's ctypes type codes (see the [module
/// documentation](crate::sharedctypes#type-codes)). Sealed: implemented for `i8 u8 i16 u16
/// i32 u32 i64 u64 f32 f64 bool` only.
///
/// ```
/// use multiproc::sharedctypes::CType;
/// assert_eq!(<i32 as CType>::TYPECODE, 'i');
/// assert_eq!(<f64 as CType>::CTYPE, "c_double");
/// ```
pub trait CType: sealed::Sealed + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// Python's type code (`'i'` for `i32`, …); `u8` reports `'B'` and also serves `'c'`.
    const TYPECODE: char;
    /// The ctypes name (`"c_int"` for `i32`, …).
    const CTYPE: &'static str;
}

/// The integer element types, which have lock-free read-modify-write operations
/// ([`RawValue::fetch_add`](super::RawValue::fetch_add) and friends). Sealed.
///
/// ```
/// use multiproc::sharedctypes::{CInt, RawValue};
/// fn bump<T: CInt>(v: &RawValue<T>, by: T) -> T { v.fetch_add(by) }
/// let v = RawValue::new(1_u16)?;
/// assert_eq!(bump(&v, 2), 1);
/// assert_eq!(v.get(), 3);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait CInt: CType + sealed::Int {}

macro_rules! ctype_num {
    ($($ty:ty => $code:literal, $ctype:literal, $int:tt;)*) => {$(
        impl sealed::Sealed for $ty {
            fn to_ne(self) -> [u8; 8] {
                let mut out = [0u8; 8];
                out[..size_of::<$ty>()].copy_from_slice(&self.to_ne_bytes());
                out
            }
            fn from_ne(bytes: [u8; 8]) -> Self {
                let mut own = [0u8; size_of::<$ty>()];
                own.copy_from_slice(&bytes[..size_of::<$ty>()]);
                <$ty>::from_ne_bytes(own)
            }
        }
        impl CType for $ty {
            const TYPECODE: char = $code;
            const CTYPE: &'static str = $ctype;
        }
        ctype_num!(@int $ty, $int);
    )*};
    (@int $ty:ty, int) => {
        impl sealed::Int for $ty {
            fn wrapping_add(self, other: Self) -> Self {
                <$ty>::wrapping_add(self, other)
            }
            fn wrapping_sub(self, other: Self) -> Self {
                <$ty>::wrapping_sub(self, other)
            }
        }
        impl CInt for $ty {}
    };
    (@int $ty:ty, float) => {};
}

ctype_num! {
    i8 => 'b', "c_byte", int;
    u8 => 'B', "c_ubyte", int;
    i16 => 'h', "c_short", int;
    u16 => 'H', "c_ushort", int;
    i32 => 'i', "c_int", int;
    u32 => 'I', "c_uint", int;
    i64 => 'q', "c_longlong", int;
    u64 => 'Q', "c_ulonglong", int;
    f32 => 'f', "c_float", float;
    f64 => 'd', "c_double", float;
}

impl sealed::Sealed for bool {
    fn to_ne(self) -> [u8; 8] {
        [self as u8, 0, 0, 0, 0, 0, 0, 0]
    }
    fn from_ne(bytes: [u8; 8]) -> Self {
        // ctypes reads any non-zero byte as True.
        bytes[0] != 0
    }
}

impl CType for bool {
    const TYPECODE: char = '?';
    const CTYPE: &'static str = "c_bool";
}
