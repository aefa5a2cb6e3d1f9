//! CPython's authentication handshake (`multiprocessing.connection.deliver_challenge` and
//! `answer_challenge`), both dialects.
//!
//! The handshake is mutual. The side that *delivers* a challenge sends
//! `#CHALLENGE#` + message, reads the peer's answer (at most 256 bytes), checks it and sends
//! `#WELCOME#` or `#FAILURE#`. The side that *answers* reads the challenge, sends an HMAC of
//! the message keyed with the shared authkey, and expects `#WELCOME#`. A listener delivers
//! first and then answers; a client answers first and then delivers.
//!
//! Two dialects exist on the wire:
//! - **Modern** (CPython 3.12+): the message is `{sha256}` followed by 40 random bytes, and
//!   the answer is `{digest}` followed by the HMAC of the whole message with that digest.
//! - **Legacy** (CPython 3.11 and older): the message is 20 random bytes and the answer is
//!   the raw 16-byte HMAC-MD5.
//!
//! Like CPython 3.12+, we answer whichever challenge we receive in its own dialect, and when
//! checking an answer we accept a raw 16-byte HMAC-MD5 (what a 3.11 peer sends, whatever the
//! challenge) as well as a `{digest}`-prefixed one. The prefix is part of the MAC'd message,
//! so a peer cannot downgrade a modern challenge. Answers are compared in constant time.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Sha256, Sha384};

use super::Connection;
use crate::error::{Error, Result};

/// Which challenge a [`Listener`](super::Listener) (or a [`Client`](super::Client)) sends
/// to its peer during the authentication handshake.
///
/// Both dialects interoperate with every CPython from 3.11 on: a 3.11 peer answers a modern
/// challenge with HMAC-MD5, which we accept. Choose [`Legacy`](AuthDialect::Legacy) only to
/// talk to software that expects exactly the old 20-byte challenge.
///
/// ```
/// use multiproc::connection::{AuthDialect, Client, Listener};
///
/// let listener = Listener::bind("127.0.0.1:0", Some(b"secret"))?.with_dialect(AuthDialect::Legacy);
/// assert_eq!(listener.dialect(), AuthDialect::Legacy);
/// let address = listener.address().to_string();
/// let client = std::thread::spawn(move || Client::connect(&address, Some(b"secret")));
/// let server_side = listener.accept()?;
/// let client_side = client.join().unwrap()?;
/// client_side.send_bytes(b"authenticated")?;
/// assert_eq!(server_side.recv_bytes()?, b"authenticated");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthDialect {
    /// CPython 3.12+: `#CHALLENGE#{sha256}` + 40 random bytes, answered with a
    /// `{sha256}`-prefixed HMAC-SHA256.
    ///
    /// ```
    /// assert_eq!(multiproc::connection::AuthDialect::default(),
    ///            multiproc::connection::AuthDialect::Modern);
    /// ```
    #[default]
    Modern,
    /// CPython 3.11 and older: `#CHALLENGE#` + 20 random bytes, answered with a raw
    /// HMAC-MD5.
    ///
    /// ```
    /// use multiproc::connection::{AuthDialect, Listener};
    /// let l = Listener::bind("127.0.0.1:0", Some(b"k"))?.with_dialect(AuthDialect::Legacy);
    /// assert_eq!(l.dialect(), AuthDialect::Legacy);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    Legacy,
}

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a modern challenge (CPython's `MESSAGE_LENGTH`).
const MODERN_LENGTH: usize = 40;
/// Random bytes in a legacy challenge; also the shortest challenge anyone may send.
const LEGACY_LENGTH: usize = 20;
/// Length of a raw HMAC-MD5.
const MD5_LENGTH: usize = 16;
/// Every handshake message we read is at most this long (as in CPython).
const MAX_MESSAGE: usize = 256;
/// The longest digest name that may appear between braces.
const MAX_DIGEST_NAME: usize = 8; // "sha3_384"

/// The HMAC algorithms a peer may name. CPython also allows `sha3_256` and `sha3_384`;
/// no CPython listener or client sends those by default, and we report them as unsupported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
}

impl Digest {
    fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
        }
    }

    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length, so this cannot fail.
            match <M as Mac>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(message);
                    mac.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        match self {
            Digest::Md5 => run::<Hmac<Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<Sha384>>(key, message),
        }
    }

    /// Checks `tag` against the HMAC of `message` in constant time.
    fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
            match <M as Mac>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(message);
                    mac.verify_slice(tag).is_ok()
                }
                Err(_) => false,
            }
        }
        match self {
            Digest::Md5 => run::<Hmac<Md5>>(key, message, tag),
            Digest::Sha256 => run::<Hmac<Sha256>>(key, message, tag),
            Digest::Sha384 => run::<Hmac<Sha384>>(key, message, tag),
        }
    }

    fn output_len(self) -> usize {
        match self {
            Digest::Md5 => 16,
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
        }
    }
}

/// How a challenge message or an answer is to be read.
#[derive(Debug, PartialEq, Eq)]
enum Parsed<'a> {
    /// Unprefixed: legacy HMAC-MD5 over the whole message.
    Legacy(&'a [u8]),
    /// `{digest}payload`.
    Tagged(Digest, &'a [u8]),
}

/// Splits a challenge message or an answer into its digest and payload, as CPython 3.12's
/// `_get_digest_name_and_payload`: 16- or 20-byte messages are legacy, everything else
/// must carry a `{digest}` prefix.
fn parse(message: &[u8]) -> Result<Parsed<'_>> {
    if message.len() == MD5_LENGTH || message.len() == LEGACY_LENGTH {
        return Ok(Parsed::Legacy(message));
    }
    if message.first() == Some(&b'{') {
        let search_end = message.len().min(MAX_DIGEST_NAME + 2);
        if let Some(close) = message[1..search_end].iter().position(|&b| b == b'}') {
            let name = &message[1..1 + close];
            let payload = &message[2 + close..];
            let digest = match name {
                b"md5" => Some(Digest::Md5),
                b"sha256" => Some(Digest::Sha256),
                b"sha384" => Some(Digest::Sha384),
                _ => None,
            };
            return match digest {
                Some(d) => Ok(Parsed::Tagged(d, payload)),
                None => Err(Error::Authentication(format!(
                    "the peer asked for an unsupported digest {:?}",
                    String::from_utf8_lossy(name)
                ))),
            };
        }
    }
    Err(Error::Authentication(format!(
        "unsupported message length ({} bytes), missing digest prefix, or unsupported digest",
        message.len()
    )))
}

/// The answer to challenge `message` (without the `#CHALLENGE#` tag).
fn create_response(authkey: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    match parse(message)? {
        Parsed::Legacy(_) => Ok(Digest::Md5.mac(authkey, message)),
        Parsed::Tagged(digest, _) => {
            let mut out = format!("{{{}}}", digest.name()).into_bytes();
            out.extend_from_slice(&digest.mac(authkey, message));
            Ok(out)
        }
    }
}

/// Checks `response` to our challenge `message`.
fn verify_response(authkey: &[u8], message: &[u8], response: &[u8]) -> Result<()> {
    let (digest, tag) = match parse(response)? {
        Parsed::Legacy(tag) => (Digest::Md5, tag),
        Parsed::Tagged(digest, tag) => (digest, tag),
    };
    if tag.len() != digest.output_len() {
        return Err(Error::Authentication(format!(
            "expected a {} digest of {} bytes, got {} bytes",
            digest.name(),
            digest.output_len(),
            tag.len()
        )));
    }
    if digest.verify(authkey, message, tag) {
        Ok(())
    } else {
        Err(Error::Authentication("digest received was wrong".into()))
    }
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Reads one handshake message of at most [`MAX_MESSAGE`] bytes. Protocol violations and
/// a closed stream become [`Error::Authentication`]; timeouts and I/O errors pass through.
fn recv_message(conn: &Connection, deadline: Option<Instant>, what: &str) -> Result<Vec<u8>> {
    let result = match remaining(deadline) {
        None => conn.recv_bytes_max(MAX_MESSAGE),
        Some(left) => conn.recv_bytes_max_timeout(MAX_MESSAGE, left),
    };
    result.map_err(|e| match e {
        Error::Eof => Error::Authentication(format!(
            "the peer closed the connection while we waited for {what}"
        )),
        Error::MessageTooLong { len, .. } => Error::Authentication(format!(
            "expected {what} of at most {MAX_MESSAGE} bytes, the peer announced {len} bytes"
        )),
        Error::Protocol(why) => {
            Error::Authentication(format!("malformed frame while waiting for {what}: {why}"))
        }
        other => other,
    })
}

fn send_message(conn: &Connection, message: &[u8], deadline: Option<Instant>) -> Result<()> {
    super::send_frame(std::os::fd::AsFd::as_fd(conn), message, deadline).map_err(|e| match e {
        Error::Eof => {
            Error::Authentication("the peer closed the connection during the handshake".into())
        }
        other => other,
    })
}

/// A new challenge message of `dialect`, `#CHALLENGE#` tag included.
fn new_challenge(dialect: AuthDialect) -> Result<Vec<u8>> {
    let mut random = [0u8; MODERN_LENGTH];
    let random = match dialect {
        AuthDialect::Modern => &mut random[..],
        AuthDialect::Legacy => &mut random[..LEGACY_LENGTH],
    };
    getrandom::fill(random).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let mut message = Vec::with_capacity(CHALLENGE.len() + 8 + MODERN_LENGTH);
    message.extend_from_slice(CHALLENGE);
    if dialect == AuthDialect::Modern {
        message.extend_from_slice(b"{sha256}");
    }
    message.extend_from_slice(random);
    Ok(message)
}

/// Our answer to the peer's challenge `message` (tag included).
fn answer_to(authkey: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    let Some(challenge) = message.strip_prefix(CHALLENGE) else {
        return Err(Error::Authentication(format!(
            "protocol error: expected a challenge, got {}",
            describe(message)
        )));
    };
    if challenge.len() < LEGACY_LENGTH {
        return Err(Error::Authentication(format!(
            "challenge too short: {} bytes",
            challenge.len()
        )));
    }
    create_response(authkey, challenge)
}

/// What the peer's verdict on our answer means.
fn check_verdict(verdict: &[u8]) -> Result<()> {
    if verdict == WELCOME {
        Ok(())
    } else if verdict == FAILURE {
        Err(Error::Authentication(
            "digest sent was rejected: the peer uses a different authkey".into(),
        ))
    } else {
        Err(Error::Authentication(format!(
            "digest sent was rejected: expected #WELCOME#, got {}",
            describe(verdict)
        )))
    }
}

/// Sends a challenge and checks the peer's answer (CPython's `deliver_challenge`).
pub(crate) fn deliver_challenge(
    conn: &Connection,
    authkey: &[u8],
    dialect: AuthDialect,
    deadline: Option<Instant>,
) -> Result<()> {
    let message = new_challenge(dialect)?;
    send_message(conn, &message, deadline)?;
    let response = recv_message(conn, deadline, "the answer to our challenge")?;
    match verify_response(authkey, &message[CHALLENGE.len()..], &response) {
        Ok(()) => send_message(conn, WELCOME, deadline),
        Err(e) => {
            // Tell the peer, as CPython does; it may already be gone.
            let _ = send_message(conn, FAILURE, deadline);
            Err(e)
        }
    }
}

/// Answers the peer's challenge (CPython's `answer_challenge`).
pub(crate) fn answer_challenge(
    conn: &Connection,
    authkey: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    let message = recv_message(conn, deadline, "a challenge")?;
    let response = answer_to(authkey, &message)?;
    send_message(conn, &response, deadline)?;
    let verdict = recv_message(conn, deadline, "the verdict on our answer")?;
    check_verdict(&verdict)
}

/// The listener's side: deliver, then answer; [`ServerHandshake`] waited on until it ends
/// (the listener itself runs many of those at once).
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
pub(crate) fn server_handshake(
    conn: &Connection,
    authkey: &[u8],
    dialect: AuthDialect,
    deadline: Option<Instant>,
) -> Result<()> {
    let fd = std::os::fd::AsFd::as_fd(conn);
    let mut handshake = ServerHandshake::new(dialect)?;
    loop {
        match handshake.advance(fd, authkey) {
            Progress::Done => return Ok(()),
            Progress::Failed(e) => return Err(e),
            Progress::Wait(events) => {
                if !super::wait_fd(fd, events, deadline)? {
                    return Err(Error::Timeout(Duration::ZERO));
                }
            }
        }
    }
}

/// The client's side: answer, then deliver.
pub(crate) fn client_handshake(
    conn: &Connection,
    authkey: &[u8],
    dialect: AuthDialect,
    deadline: Option<Instant>,
) -> Result<()> {
    answer_challenge(conn, authkey, deadline)?;
    deliver_challenge(conn, authkey, dialect, deadline)
}

/// Where a [`ServerHandshake`] stands: what it sends or waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the answer to our challenge.
    Answer,
    /// Waiting for the peer's challenge.
    Challenge,
    /// Waiting for the verdict on our answer.
    Verdict,
    /// Sending `#FAILURE#`; the handshake has failed once it is out (or cannot go out).
    Refusing,
}

impl Step {
    fn awaited(self) -> &'static str {
        match self {
            Step::Answer => "the answer to our challenge",
            Step::Challenge => "a challenge",
            Step::Verdict | Step::Refusing => "the verdict on our answer",
        }
    }
}

/// What [`ServerHandshake::advance`] needs next.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Call `advance` again once the socket is ready for these events.
    Wait(crate::sys::poll::PollFlags),
    /// The peer is authenticated; the socket holds nothing of the handshake any more.
    Done,
    /// The peer failed (or broke off) the handshake: close the socket.
    Failed(Error),
}

/// The listener's side of the handshake ([`server_handshake`]) driven by a socket's
/// readiness instead of by blocking calls, so that one thread can run many at once.
///
/// It reads exactly the frames of the handshake and nothing beyond, so whatever the client
/// sends right after it stays in the socket for the [`Connection`] made from it.
pub(crate) struct ServerHandshake {
    step: Step,
    /// Our challenge (tag included), to check the answer against.
    challenge: Vec<u8>,
    /// The frame being sent and how much of it is out.
    out: Vec<u8>,
    sent: usize,
    /// The frame being received: its 4-byte header, then its payload.
    input: Vec<u8>,
    /// Set when the handshake failed and `#FAILURE#` is on its way out.
    failure: Option<Error>,
}

/// A socket error in the middle of a handshake: that peer's handshake failed, whatever
/// the reason (so that a server loop takes it for one client's failure, not its own).
fn broken(e: std::io::Error) -> Error {
    Error::Authentication(format!("the connection failed during the handshake: {e}"))
}

/// One frame (CPython's 4-byte big-endian length, then the payload).
fn frame(message: &[u8]) -> Vec<u8> {
    // Handshake messages are far below 2 GiB.
    let mut out = Vec::with_capacity(4 + message.len());
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

impl ServerHandshake {
    /// A handshake that starts by sending a challenge of `dialect`.
    pub(crate) fn new(dialect: AuthDialect) -> Result<ServerHandshake> {
        let challenge = new_challenge(dialect)?;
        Ok(ServerHandshake {
            step: Step::Answer,
            out: frame(&challenge),
            challenge,
            sent: 0,
            input: Vec::with_capacity(4 + MAX_MESSAGE),
            failure: None,
        })
    }

    /// Sends and receives what the socket `fd` allows without blocking.
    pub(crate) fn advance(&mut self, fd: BorrowedFd<'_>, authkey: &[u8]) -> Progress {
        use crate::sys::poll::PollFlags;
        use crate::sys::socket::{recv_nonblocking, send_nonblocking};
        use std::io::ErrorKind;
        loop {
            if self.sent < self.out.len() {
                match send_nonblocking(fd, &self.out[self.sent..]) {
                    Ok(n) => self.sent += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        return Progress::Wait(PollFlags::OUT)
                    }
                    Err(e) => {
                        return Progress::Failed(self.failure.take().unwrap_or_else(|| {
                            if matches!(
                                e.kind(),
                                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                            ) {
                                Error::Authentication(
                                    "the peer closed the connection during the handshake".into(),
                                )
                            } else {
                                broken(e)
                            }
                        }))
                    }
                }
                continue;
            }
            if let Some(e) = self.failure.take() {
                return Progress::Failed(e);
            }
            // Read the header, then exactly the payload it announces.
            let want = match self.input.get(..4) {
                None => 4,
                Some(header) => {
                    let len = i32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                    match usize::try_from(len) {
                        Ok(len) if len <= MAX_MESSAGE => 4 + len,
                        _ => {
                            let announced = if len == -1 {
                                "more than 2 GiB".to_string()
                            } else {
                                format!("{len} bytes")
                            };
                            return Progress::Failed(Error::Authentication(format!(
                                "expected {} of at most {MAX_MESSAGE} bytes, the peer announced {announced}",
                                self.step.awaited()
                            )));
                        }
                    }
                }
            };
            if self.input.len() < want {
                let have = self.input.len();
                self.input.resize(want, 0);
                match recv_nonblocking(fd, &mut self.input[have..]) {
                    Ok(n) => {
                        self.input.truncate(have + n);
                        if n == 0 {
                            return Progress::Failed(Error::Authentication(format!(
                                "the peer closed the connection while we waited for {}",
                                self.step.awaited()
                            )));
                        }
                    }
                    Err(e) => {
                        self.input.truncate(have);
                        match e.kind() {
                            ErrorKind::Interrupted => {}
                            ErrorKind::WouldBlock => return Progress::Wait(PollFlags::IN),
                            ErrorKind::ConnectionReset => {
                                return Progress::Failed(Error::Authentication(format!(
                                    "the peer closed the connection while we waited for {}",
                                    self.step.awaited()
                                )))
                            }
                            _ => return Progress::Failed(broken(e)),
                        }
                    }
                }
                continue;
            }
            // A whole frame is in: its header was read, so `want` counted its payload.
            let message = std::mem::take(&mut self.input);
            let message = &message[4..];
            self.input.reserve(4 + MAX_MESSAGE);
            self.sent = 0;
            match self.step {
                Step::Answer => {
                    match verify_response(authkey, &self.challenge[CHALLENGE.len()..], message) {
                        Ok(()) => {
                            self.out = frame(WELCOME);
                            self.step = Step::Challenge;
                        }
                        Err(e) => {
                            // Tell the peer, as CPython does; it may already be gone.
                            self.out = frame(FAILURE);
                            self.failure = Some(e);
                            self.step = Step::Refusing;
                        }
                    }
                }
                Step::Challenge => match answer_to(authkey, message) {
                    Ok(response) => {
                        self.out = frame(&response);
                        self.step = Step::Verdict;
                    }
                    Err(e) => return Progress::Failed(e),
                },
                Step::Verdict => {
                    return match check_verdict(message) {
                        Ok(()) => Progress::Done,
                        Err(e) => Progress::Failed(e),
                    }
                }
                // `failure` ended the handshake before anything more was read.
                Step::Refusing => {
                    return Progress::Failed(Error::Authentication(
                        "digest received was wrong".into(),
                    ))
                }
            }
        }
    }
}

/// A short printable description of a message from the peer.
fn describe(message: &[u8]) -> String {
    const SHOW: usize = 32;
    let shown: String = message[..message.len().min(SHOW)].escape_ascii().to_string();
    if message.len() > SHOW {
        format!("b\"{shown}\"… ({} bytes)", message.len())
    } else {
        format!("b\"{shown}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_follows_cpython() {
        assert_eq!(parse(&[7; 20]).unwrap(), Parsed::Legacy(&[7; 20]));
        assert_eq!(parse(&[7; 16]).unwrap(), Parsed::Legacy(&[7; 16]));
        assert_eq!(parse(b"{sha256}abc").unwrap(), Parsed::Tagged(Digest::Sha256, b"abc"));
        assert_eq!(parse(b"{md5}").unwrap(), Parsed::Tagged(Digest::Md5, b""));
        assert!(parse(b"{sha3_256}0123456789abc").is_err());
        assert!(parse(b"{whatever_long_name}0123456789").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"{").is_err());
        assert!(parse(&[0; 21]).is_err());
    }

    #[test]
    fn responses_verify() {
        let key = b"key";
        let modern = b"{sha256}0123456789012345678901234567890123456789";
        let r = create_response(key, modern).unwrap();
        assert!(r.starts_with(b"{sha256}") && r.len() == 8 + 32);
        verify_response(key, modern, &r).unwrap();
        assert!(verify_response(b"other", modern, &r).is_err());
        // A 3.11 peer answers anything with a raw HMAC-MD5.
        let md5 = Digest::Md5.mac(key, modern);
        verify_response(key, modern, &md5).unwrap();
        let legacy = [3u8; 20];
        let r = create_response(key, &legacy).unwrap();
        assert_eq!(r.len(), 16);
        verify_response(key, &legacy, &r).unwrap();
        // A truncated tag is rejected, not compared.
        assert!(verify_response(key, modern, b"{sha256}short").is_err());
    }

    fn deadline() -> Option<Instant> {
        Instant::now().checked_add(Duration::from_secs(30))
    }

    #[test]
    fn server_handshake_meets_the_blocking_client_and_leaves_its_next_frame() {
        for dialect in [AuthDialect::Modern, AuthDialect::Legacy] {
            let (server, client) = super::super::pipe(true).unwrap();
            let peer = std::thread::spawn(move || {
                client_handshake(&client, b"key", AuthDialect::Legacy, deadline())?;
                // Sent at once, before the server has necessarily finished reading.
                client.send_bytes(b"first request")
            });
            server_handshake(&server, b"key", dialect, deadline()).unwrap();
            peer.join().unwrap().unwrap();
            assert_eq!(server.recv_bytes().unwrap(), b"first request");
        }
    }

    #[test]
    fn server_handshake_refuses_a_wrong_key_and_tells_the_peer() {
        let (server, client) = super::super::pipe(true).unwrap();
        let peer = std::thread::spawn(move || {
            client_handshake(&client, b"other", AuthDialect::Modern, deadline())
        });
        let e = server_handshake(&server, b"key", AuthDialect::Modern, deadline()).unwrap_err();
        assert!(matches!(&e, Error::Authentication(m) if m.contains("wrong")), "{e:?}");
        let e = peer.join().unwrap().unwrap_err();
        assert!(matches!(&e, Error::Authentication(m) if m.contains("different authkey")), "{e:?}");
    }

    #[test]
    fn server_handshake_refuses_long_frames_and_stops_at_eof_or_deadline() {
        // A header announcing more than a handshake message, and the long-frame marker.
        for header in [300u32.to_be_bytes(), u32::MAX.to_be_bytes()] {
            let (server, client) = super::super::pipe(true).unwrap();
            crate::sys::fd::write(&client, &header).unwrap();
            let e = server_handshake(&server, b"key", AuthDialect::Modern, deadline()).unwrap_err();
            assert!(matches!(&e, Error::Authentication(m) if m.contains("at most 256")), "{e:?}");
        }
        // Half a header, then the peer hangs up.
        let (server, client) = super::super::pipe(true).unwrap();
        crate::sys::fd::write(&client, &[0, 0]).unwrap();
        drop(client);
        let e = server_handshake(&server, b"key", AuthDialect::Modern, deadline()).unwrap_err();
        assert!(matches!(&e, Error::Authentication(m) if m.contains("closed")), "{e:?}");
        // A peer that stays silent.
        let (server, _client) = super::super::pipe(true).unwrap();
        let soon = Instant::now().checked_add(Duration::from_millis(20));
        let e = server_handshake(&server, b"key", AuthDialect::Modern, soon).unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    }

    #[test]
    fn known_hmac_md5_vector() {
        // RFC 2104 test case 2.
        let mac = Digest::Md5.mac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            mac,
            [
                0x75, 0x0c, 0x78, 0x3e, 0x6a, 0xb0, 0xb5, 0x03, 0xea, 0xa8, 0x6e, 0x31, 0x0a, 0x5d,
                0xb7, 0x38
            ]
        );
    }
}
