//! CPython's authentication handshake (placeholder).

/// Which challenge a [`Listener`](super::Listener) sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthDialect {
    /// CPython 3.12+: `{sha256}`-tagged challenges.
    #[default]
    Modern,
    /// CPython 3.11 and older: 20 random bytes, HMAC-MD5.
    Legacy,
}
