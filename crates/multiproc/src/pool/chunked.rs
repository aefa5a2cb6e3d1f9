//! [`Chunked`]: the pool's mapping methods with an explicit chunk size (Python's
//! `chunksize=` argument).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::results::Callbacks;
use super::{identity, AsyncResult, IMapIterator, Pool};
use crate::error::{Error, Result};

/// The mapping methods of a [`Pool`] with a chosen chunk size, made by
/// [`Pool::chunksize`]: `pool.chunksize(n).map(f, items)` is Python's
/// `pool.map(f, items, chunksize=n)`. A chunk is what a worker receives at once; larger
/// chunks cut the overhead of tiny tasks, smaller ones balance uneven tasks better. A
/// chunk size of `0` makes every call return [`Error::InvalidArgument`].
///
/// ```
/// let pool = multiproc::pool::Pool::new(2)?;
/// let by_ten = pool.chunksize(10);
/// assert_eq!(by_ten.map(|x: u32| x * 2, 0..100)?.len(), 100);
/// let first: Vec<u32> = by_ten.imap(|x: u32| x + 1, 0..)?.take(3).collect::<Result<_, _>>()?;
/// assert_eq!(first, [1, 2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Chunked<'p> {
    pub(super) pool: &'p Pool,
    pub(super) chunksize: usize,
}

impl Chunked<'_> {
    fn size(&self) -> Result<usize> {
        match self.chunksize {
            0 => Err(Error::InvalidArgument("chunksize must be at least 1".into())),
            n => Ok(n),
        }
    }

    /// [`Pool::map`] in chunks of this size.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// assert_eq!(pool.chunksize(2).map(|x: i32| -x, [1, 2, 3])?, [-1, -2, -3]);
    /// assert!(pool.chunksize(0).map(|x: i32| x, [1]).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map<A, R>(&self, f: fn(A) -> R, iterable: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, iterable)?.get()
    }

    /// [`Pool::map_async`] in chunks of this size.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let r = pool.chunksize(1).map_async(|x: u8| x + 1, [1, 2])?;
    /// assert_eq!(r.get()?, [2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.pool.submit_collect(f, iterable, Some(self.size()?), identity, Callbacks::none())
    }

    /// [`Pool::map_async_with`] in chunks of this size.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let r = pool.chunksize(3).map_async_with(|x: u8| x, 0..9, |v: &Vec<u8>| assert_eq!(v.len(), 9), |_| {})?;
    /// assert_eq!(r.get()?.len(), 9);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
        callback: impl FnOnce(&Vec<R>) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let callbacks = Callbacks::new(callback, error_callback);
        self.pool.submit_collect(f, iterable, Some(self.size()?), identity, callbacks)
    }

    /// [`Pool::starmap`] in chunks of this size.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// assert_eq!(pool.chunksize(1).starmap(|(a, b): (u8, u8)| a + b, [(1, 2), (3, 4)])?, [3, 7]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map(f, iterable)
    }

    /// [`Pool::starmap_async`] in chunks of this size.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let r = pool.chunksize(2).starmap_async(|(a, b): (i32, i32)| a * b, vec![(2, 5), (3, 3)])?;
    /// assert_eq!(r.get()?, [10, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_async<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, iterable)
    }

    /// [`Pool::imap`] in chunks of this size.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let v: Vec<u64> = pool.chunksize(4).imap(|x: u64| x * x, 0..6)?.collect::<Result<_, _>>()?;
    /// assert_eq!(v, [0, 1, 4, 9, 16, 25]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Result<IMapIterator<R, I::IntoIter>>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        IMapIterator::start(self.pool, f, iterable.into_iter(), self.size()?, true)
    }

    /// [`Pool::imap_unordered`] in chunks of this size.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let mut v: Vec<u32> =
    ///     pool.chunksize(3).imap_unordered(|x: u32| x, 0..10)?.collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, (0..10).collect::<Vec<_>>());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
    ) -> Result<IMapIterator<R, I::IntoIter>>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        IMapIterator::start(self.pool, f, iterable.into_iter(), self.size()?, false)
    }
}

impl std::fmt::Debug for Chunked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunked").field("chunksize", &self.chunksize).finish_non_exhaustive()
    }
}
