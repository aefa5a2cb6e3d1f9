//! `RawValue` and `RawArray` of numbers on the crate's shared cells: one class each,
//! holding the crate's typed cell for one of the type codes `b B h H i I q Q f d ?`.
//! The Python layer maps ctypes types and the platform's `l`/`L`/`c` codes onto these,
//! and builds the synchronized `Value` and `Array` (a lock beside the cell) on them.

use std::os::fd::{AsRawFd, RawFd};

use multiproc::sharedctypes::{RawArray as CoreArray, RawValue as CoreValue};
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::IntoPyObjectExt;

use crate::{dup_fd, to_pyerr};

macro_rules! cells {
    ($($code:literal => $ty:ty, $variant:ident;)*) => {
        /// One shared number, of the type its code names.
        enum ValueCell {
            $($variant(CoreValue<$ty>),)*
        }

        /// A shared array of numbers, of the type its code names.
        enum ArrayCell {
            $($variant(CoreArray<$ty>),)*
        }

        impl ValueCell {
            /// A new cell holding `init`.
            fn new(code: char, init: &Bound<'_, PyAny>) -> PyResult<multiproc::Result<ValueCell>> {
                Ok(match code {
                    $($code => CoreValue::<$ty>::new(init.extract()?).map(ValueCell::$variant),)*
                    _ => return Err(unknown_code(code)),
                })
            }

            /// The cell whose descriptor `fd` is.
            fn from_fd(code: char, fd: std::os::fd::OwnedFd) -> PyResult<multiproc::Result<ValueCell>> {
                Ok(match code {
                    $($code => CoreValue::<$ty>::from_fd(fd).map(ValueCell::$variant),)*
                    _ => return Err(unknown_code(code)),
                })
            }

            /// The number, as a Python object.
            fn get<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                match self {
                    $(ValueCell::$variant(v) => v.get().into_bound_py_any(py),)*
                }
            }

            /// Stores a Python number.
            fn set(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
                match self {
                    $(ValueCell::$variant(v) => v.set(value.extract()?),)*
                }
                Ok(())
            }

            /// The segment's descriptor.
            fn fd(&self) -> RawFd {
                match self {
                    $(ValueCell::$variant(v) => v.export_fd().as_raw_fd(),)*
                }
            }
        }

        impl ArrayCell {
            /// A new array of `size` zeros.
            fn new(code: char, size: usize) -> PyResult<multiproc::Result<ArrayCell>> {
                Ok(match code {
                    $($code => CoreArray::<$ty>::new(size).map(ArrayCell::$variant),)*
                    _ => return Err(unknown_code(code)),
                })
            }

            /// A new array holding a copy of the sequence `values`.
            fn from_values(code: char, values: &Bound<'_, PyAny>) -> PyResult<multiproc::Result<ArrayCell>> {
                Ok(match code {
                    $($code => {
                        let values: Vec<$ty> = values.extract()?;
                        CoreArray::from_values(&values).map(ArrayCell::$variant)
                    })*
                    _ => return Err(unknown_code(code)),
                })
            }

            fn from_fd(code: char, fd: std::os::fd::OwnedFd) -> PyResult<multiproc::Result<ArrayCell>> {
                Ok(match code {
                    $($code => CoreArray::<$ty>::from_fd(fd).map(ArrayCell::$variant),)*
                    _ => return Err(unknown_code(code)),
                })
            }

            /// The number of elements.
            fn len(&self) -> usize {
                match self {
                    $(ArrayCell::$variant(a) => a.len(),)*
                }
            }

            /// Element `i` (within bounds, checked by the crate).
            fn get<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyAny>> {
                match self {
                    $(ArrayCell::$variant(a) => a.get(i).map_err(|e| to_pyerr(py, e))?.into_bound_py_any(py),)*
                }
            }

            /// Stores element `i`.
            fn set(&self, py: Python<'_>, i: usize, value: &Bound<'_, PyAny>) -> PyResult<()> {
                match self {
                    $(ArrayCell::$variant(a) => a.set(i, value.extract()?).map_err(|e| to_pyerr(py, e)),)*
                }
            }

            /// Elements `start..end` as a list.
            fn get_range<'py>(&self, py: Python<'py>, start: usize, end: usize) -> PyResult<Bound<'py, PyList>> {
                match self {
                    $(ArrayCell::$variant(a) => {
                        let values = a.get_range(start..end).map_err(|e| to_pyerr(py, e))?;
                        PyList::new(py, values)
                    })*
                }
            }

            /// Stores `values` from `start` on.
            fn set_range(&self, py: Python<'_>, start: usize, values: &Bound<'_, PyAny>) -> PyResult<()> {
                match self {
                    $(ArrayCell::$variant(a) => {
                        let values: Vec<$ty> = values.extract()?;
                        a.set_range(start, &values).map_err(|e| to_pyerr(py, e))
                    })*
                }
            }

            /// The segment's descriptor.
            fn fd(&self) -> RawFd {
                match self {
                    $(ArrayCell::$variant(a) => a.export_fd().as_raw_fd(),)*
                }
            }
        }
    };
}

cells! {
    'b' => i8, I8;
    'B' => u8, U8;
    'h' => i16, I16;
    'H' => u16, U16;
    'i' => i32, I32;
    'I' => u32, U32;
    'q' => i64, I64;
    'Q' => u64, U64;
    'f' => f32, F32;
    'd' => f64, F64;
    '?' => bool, Bool;
}

/// The error for a type code the core does not store.
fn unknown_code(code: char) -> PyErr {
    PyValueError::new_err(format!("type code {code:?} is not one of b B h H i I q Q f d ?"))
}

/// The single character of `typecode`.
fn code_of(typecode: &str) -> PyResult<char> {
    let mut chars = typecode.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(PyValueError::new_err(format!("bad type code {typecode:?}"))),
    }
}

/// One number in shared memory without a lock (`multiproc.sharedctypes` builds on it).
#[pyclass(module = "multiproc._native", frozen, subclass)]
struct RawValue {
    cell: ValueCell,
    #[pyo3(get)]
    typecode: char,
}

#[pymethods]
impl RawValue {
    /// A new value of type `typecode` holding `init`, or (with `fd`) the value whose
    /// `export_fd()` that is.
    #[new]
    #[pyo3(signature = (typecode, init = None, *, fd = None))]
    fn new(
        py: Python<'_>,
        typecode: &str,
        init: Option<&Bound<'_, PyAny>>,
        fd: Option<RawFd>,
    ) -> PyResult<Self> {
        let code = code_of(typecode)?;
        let made = match (fd, init) {
            (Some(fd), _) => ValueCell::from_fd(code, dup_fd(fd)?)?,
            (None, Some(init)) => ValueCell::new(code, init)?,
            (None, None) => ValueCell::new(code, &0_u8.into_bound_py_any(py)?)?,
        };
        Ok(RawValue { cell: made.map_err(|e| to_pyerr(py, e))?, typecode: code })
    }

    /// The number now.
    #[getter]
    fn get_value<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.cell.get(py)
    }

    /// Stores a number.
    #[setter]
    fn set_value(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.cell.set(value)
    }

    /// The segment's descriptor, for `DupFd`.
    fn export_fd(&self) -> RawFd {
        self.cell.fd()
    }
}

/// A fixed-length array of numbers in shared memory without a lock.
#[pyclass(module = "multiproc._native", frozen, subclass)]
struct RawArray {
    cell: ArrayCell,
    #[pyo3(get)]
    typecode: char,
}

impl RawArray {
    /// Python's index `i` (negative counts from the end) as a position, or `IndexError`.
    fn index(&self, i: isize) -> PyResult<usize> {
        let len = self.cell.len() as isize;
        let j = if i < 0 { i + len } else { i };
        if j < 0 || j >= len {
            return Err(PyIndexError::new_err("invalid index"));
        }
        Ok(j as usize)
    }
}

#[pymethods]
impl RawArray {
    /// A new array of type `typecode`: `size_or_initializer` zeros, or a copy of that
    /// sequence; or (with `fd`) the array whose `export_fd()` that is.
    #[new]
    #[pyo3(signature = (typecode, size_or_initializer = None, *, fd = None))]
    fn new(
        py: Python<'_>,
        typecode: &str,
        size_or_initializer: Option<&Bound<'_, PyAny>>,
        fd: Option<RawFd>,
    ) -> PyResult<Self> {
        let code = code_of(typecode)?;
        let made = match (fd, size_or_initializer) {
            (Some(fd), _) => ArrayCell::from_fd(code, dup_fd(fd)?)?,
            (None, Some(init)) => match init.extract::<usize>() {
                Ok(size) => ArrayCell::new(code, size)?,
                Err(_) => ArrayCell::from_values(code, init)?,
            },
            (None, None) => {
                return Err(PyValueError::new_err("a size or an initializer is needed"))
            }
        };
        Ok(RawArray { cell: made.map_err(|e| to_pyerr(py, e))?, typecode: code })
    }

    /// The number of elements.
    fn __len__(&self) -> usize {
        self.cell.len()
    }

    /// Element `i` (negative counts from the end).
    fn get_item<'py>(&self, py: Python<'py>, i: isize) -> PyResult<Bound<'py, PyAny>> {
        self.cell.get(py, self.index(i)?)
    }

    /// Stores element `i`.
    fn set_item(&self, py: Python<'_>, i: isize, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.cell.set(py, self.index(i)?, value)
    }

    /// Elements `start..end` as a list (the bounds already within the array).
    fn get_range<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        end: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        self.cell.get_range(py, start, end)
    }

    /// Stores `values` from `start` on.
    fn set_range(&self, py: Python<'_>, start: usize, values: &Bound<'_, PyAny>) -> PyResult<()> {
        self.cell.set_range(py, start, values)
    }

    /// The segment's descriptor, for `DupFd`.
    fn export_fd(&self) -> RawFd {
        self.cell.fd()
    }
}

/// Adds the classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RawValue>()?;
    m.add_class::<RawArray>()?;
    Ok(())
}
