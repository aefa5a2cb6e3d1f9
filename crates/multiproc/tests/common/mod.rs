//! Helpers shared by several test binaries (each binary uses some of them).
#![allow(dead_code)]

pub mod python;
pub mod redis;
pub mod waits;
