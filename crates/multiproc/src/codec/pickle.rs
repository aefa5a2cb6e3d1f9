//! The pickle codec (placeholder until the CPython-compatible codec lands).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    serde_pickle::to_writer(out, &value, serde_pickle::SerOptions::new())
        .map_err(|e| Error::Codec(e.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_pickle::from_slice(bytes, serde_pickle::DeOptions::new())
        .map_err(|e| Error::Codec(e.to_string()))
}
