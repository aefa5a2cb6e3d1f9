//! The only unsafe code of the crate, behind an explicit contract.
//!
//! Everything else in multiproc is `#![deny(unsafe_code)]` and reaches the operating system
//! through `rustix` (safe wrappers) or through the functions below. Each function here
//! states what it needs from its caller; each `unsafe` block states why it holds.
//!
//! | item | what it does |
//! |---|---|
//! | [`fnptr`] | turns a function pointer into an image-relative offset and back, so a re-executed child can call the function its parent named; refuses functions of other loaded objects |
//! | [`mem`] | advice to the kernel about large receive buffers |
//! | [`pid`] | the current pid and thread id, cached across calls and forgotten across `fork`; the current CPU; a lock-free cell of leaked values |
//! | [`shm`] | POSIX and anonymous shared memory segments and their mappings (atomics, copies, volatile access and fills; slice views only as `unsafe fn`) |
//! | [`spawn`] | the constructor that runs a spawned child before `main`, the `fork` start method, and the `exec` of the current binary |
#![allow(unsafe_code)]

pub(crate) mod fnptr;
pub(crate) mod mem;
pub(crate) mod pid;
#[allow(dead_code)] // used by the shared-state modules as they land
pub(crate) mod shm;
pub(crate) mod spawn;
