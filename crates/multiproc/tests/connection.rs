//! Connection behaviour: framing, limits, bad input, large messages, wait().

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use multiproc::connection::wait_timeout;
use multiproc::{pipe, spawn, Connection, Error, Process};

/// A connection whose peer is a raw socket the test writes arbitrary bytes into.
fn raw_peer() -> (Connection, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (Connection::from_fd(a.into()), b)
}

#[test]
fn frames_use_cpythons_big_endian_length_prefix() {
    let (conn, mut raw) = raw_peer();
    raw.write_all(&[0, 0, 0, 3, b'a', b'b', b'c']).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"abc");
    conn.send_bytes(b"xyz").unwrap();
    let mut got = [0u8; 7];
    std::io::Read::read_exact(&mut raw, &mut got).unwrap();
    assert_eq!(got, [0, 0, 0, 3, b'x', b'y', b'z']);
}

#[test]
fn the_long_header_form_is_understood() {
    let (conn, mut raw) = raw_peer();
    let mut frame = (-1i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&5u64.to_be_bytes());
    frame.extend_from_slice(b"hello");
    raw.write_all(&frame).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"hello");
}

#[test]
fn a_length_of_two_to_the_63_is_an_error_not_an_allocation() {
    let (conn, mut raw) = raw_peer();
    let mut frame = (-1i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
    raw.write_all(&frame).unwrap();
    assert!(matches!(conn.recv_bytes(), Err(Error::MessageTooLong { .. })));
    // The stream lost its framing: later reads report it instead of decoding garbage.
    assert!(matches!(conn.recv_bytes(), Err(Error::Protocol(_))));
}

#[test]
fn a_huge_announced_length_allocates_only_what_arrives() {
    // 2^40 bytes announced, 10 delivered, then the peer hangs up.
    let (conn, mut raw) = raw_peer();
    let mut frame = (-1i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
    frame.extend_from_slice(&[7; 10]);
    raw.write_all(&frame).unwrap();
    drop(raw);
    match conn.recv_bytes() {
        Err(Error::Protocol(why)) => assert!(why.contains("ended in the middle"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_negative_length_is_a_protocol_error() {
    let (conn, mut raw) = raw_peer();
    raw.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(matches!(conn.recv_bytes(), Err(Error::Protocol(_))));
}

#[test]
fn a_frame_over_maxlength_is_refused() {
    let (conn, mut raw) = raw_peer();
    raw.write_all(&[0, 0, 1, 0]).unwrap();
    raw.write_all(&[0; 256]).unwrap();
    assert!(matches!(
        conn.recv_bytes_max(255),
        Err(Error::MessageTooLong { len: 256, limit: 255 })
    ));
}

#[test]
fn a_truncated_frame_is_an_error_and_a_clean_close_is_eof() {
    let (conn, mut raw) = raw_peer();
    raw.write_all(&[0, 0, 0, 10, 1, 2, 3]).unwrap();
    drop(raw);
    assert!(matches!(conn.recv_bytes(), Err(Error::Protocol(_))));

    let (conn, raw) = raw_peer();
    drop(raw);
    assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
    assert!(matches!(conn.recv::<u32>(), Err(Error::Eof)));
}

#[test]
fn garbage_that_does_not_decode_is_a_codec_error_and_the_stream_goes_on() {
    let (conn, mut raw) = raw_peer();
    raw.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).unwrap();
    raw.write_all(&[0, 0, 0, 1, 42]).unwrap();
    assert!(matches!(conn.recv::<String>(), Err(Error::Codec(_))));
    assert_eq!(conn.recv::<u8>().unwrap(), 42);
}

#[test]
fn sending_to_a_closed_peer_is_eof() {
    let (a, b) = pipe(true).unwrap();
    drop(b);
    assert!(matches!(a.send_bytes(b"x"), Err(Error::Eof)));
}

#[test]
fn one_way_pipes_refuse_the_wrong_direction() {
    let (r, w) = pipe(false).unwrap();
    assert!(r.send_bytes(b"x").is_err());
    assert!(w.recv_bytes().is_err());
    w.send_bytes(b"ok").unwrap();
    assert_eq!(r.recv_bytes().unwrap(), b"ok");
}

#[test]
fn recv_bytes_into_hands_back_a_message_that_does_not_fit() {
    let (a, b) = pipe(true).unwrap();
    a.send_bytes(&[9; 100]).unwrap();
    let mut small = [0u8; 10];
    match b.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort(whole)) => assert_eq!(whole, vec![9; 100]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn many_small_messages_arrive_in_order() {
    let (a, b) = pipe(true).unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..20_000u32 {
            a.send(&i).unwrap();
        }
    });
    for i in 0..20_000u32 {
        assert_eq!(b.recv::<u32>().unwrap(), i);
    }
    writer.join().unwrap();
}

#[test]
fn concurrent_senders_never_interleave_frames() {
    let (a, b) = pipe(true).unwrap();
    let a = std::sync::Arc::new(a);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    a.send_bytes(&vec![t; 100_000]).unwrap();
                }
            })
        })
        .collect();
    for _ in 0..800 {
        let m = b.recv_bytes().unwrap();
        assert_eq!(m.len(), 100_000);
        assert!(m.iter().all(|&x| x == m[0]));
    }
    for t in threads {
        t.join().unwrap();
    }
}

fn echo_sizes((conn, sizes): (Connection, Vec<usize>)) {
    for _ in sizes {
        let m = conn.recv_bytes().unwrap();
        conn.send_bytes(&m).unwrap();
    }
}

#[test]
fn messages_of_every_size_cross_a_process_boundary() {
    let sizes = vec![0, 1, 16 * 1024 + 1, 64 * 1024, 64 * 1024 + 13, 1 << 20, 64 << 20];
    let (parent, child) = pipe(true).unwrap();
    let p = Process::new(echo_sizes, (child, sizes.clone()));
    p.start().unwrap();
    for size in sizes {
        let message: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        parent.send_bytes(&message).unwrap();
        let back = parent.recv_bytes().unwrap();
        assert!(back == message, "size {size} came back different");
    }
    p.join_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn a_partly_received_message_survives_a_timeout() {
    let (conn, mut raw) = raw_peer();
    let payload = vec![5u8; 200_000];
    raw.write_all(&(payload.len() as i32).to_be_bytes()).unwrap();
    raw.write_all(&payload[..1000]).unwrap();
    assert!(matches!(conn.recv_bytes_timeout(Duration::from_millis(20)), Err(Error::Timeout(_))));
    let writer = std::thread::spawn(move || raw.write_all(&payload[1000..]).unwrap());
    assert_eq!(conn.recv_bytes_timeout(Duration::from_secs(60)).unwrap(), vec![5u8; 200_000]);
    writer.join().unwrap();
}

#[test]
fn wait_covers_connections_and_process_sentinels() {
    let (a, b) = pipe(true).unwrap();
    let h = spawn(|_: ()| 1u8, ()).unwrap();
    let ready = wait_timeout(&[&a, h.process()], Duration::from_secs(60)).unwrap();
    assert_eq!(ready, vec![1], "only the process is ready");
    b.send(&0u8).unwrap();
    let ready = wait_timeout(&[&a, h.process()], Duration::from_secs(60)).unwrap();
    assert_eq!(ready, vec![0, 1]);
    assert_eq!(h.join().unwrap(), 1);
    let never_started = Process::new(|_: ()| {}, ());
    assert!(matches!(
        wait_timeout(&[&never_started], Duration::from_millis(10)),
        Err(Error::Timeout(_))
    ));
}

/// Talks over a connection that arrived through `channel`: says hello, returns what the
/// other end answers.
fn use_received_connection(channel: Connection) -> u32 {
    let conn: Connection = channel.recv().unwrap();
    conn.send(&"hello over a sent connection".to_string()).unwrap();
    conn.recv().unwrap()
}

fn use_queued_connection(q: multiproc::queues::Queue<Connection>) -> u32 {
    let conn = q.get_timeout(Duration::from_secs(60)).unwrap();
    conn.send(&"hello over a queued connection".to_string()).unwrap();
    conn.recv().unwrap()
}

#[test]
fn connections_travel_through_pipes_and_queues() {
    // Through a pipe: the sender closes its copy at once, as CPython allows.
    let (mine, theirs) = pipe(true).unwrap();
    let (channel, child_channel) = pipe(true).unwrap();
    let child = spawn(use_received_connection, child_channel).unwrap();
    channel.send(&theirs).unwrap();
    drop(theirs);
    assert_eq!(mine.recv::<String>().unwrap(), "hello over a sent connection");
    mine.send(&42u32).unwrap();
    assert_eq!(child.join().unwrap(), 42);
    // The receiver's end closed with it, and no copy stayed open anywhere: end of file.
    assert!(matches!(mine.recv::<String>(), Err(Error::Eof)));

    // Through a queue.
    let (mine, theirs) = pipe(true).unwrap();
    let q = multiproc::queues::Queue::new(0).unwrap();
    let child = spawn(use_queued_connection, q.clone()).unwrap();
    q.put(theirs).unwrap();
    assert_eq!(mine.recv::<String>().unwrap(), "hello over a queued connection");
    mine.send(&7u32).unwrap();
    assert_eq!(child.join().unwrap(), 7);
    assert!(matches!(mine.recv::<String>(), Err(Error::Eof)));
}

#[test]
fn a_sent_connection_is_handed_out_once() {
    let (a, b) = pipe(true).unwrap();
    let (c, d) = pipe(true).unwrap();
    a.send(&c).unwrap();
    drop(c);
    let bytes = b.recv_bytes().unwrap();
    let c2: Connection = multiproc::Codec::Postcard.decode(&bytes).unwrap();
    match multiproc::Codec::Postcard.decode::<Connection>(&bytes) {
        Err(Error::Codec(why)) => assert!(why.contains("already received"), "{why}"),
        other => panic!("{other:?}"),
    }
    c2.send(&1u8).unwrap();
    assert_eq!(d.recv::<u8>().unwrap(), 1);
}

/// A value whose encoding fails (after a connection before it was encoded).
struct Refuses;

impl serde::Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses to be encoded"))
    }
}

#[test]
fn a_connection_in_a_message_that_fails_to_encode_is_not_kept_open() {
    let (a, b) = pipe(true).unwrap();
    let (c, d) = pipe(true).unwrap();
    match a.send(&(&c, Refuses)) {
        Err(Error::Codec(why)) => assert!(why.contains("refuses"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Nothing was sent, and no copy of `c` stays shared: closing it ends `d`'s stream.
    drop(c);
    assert!(matches!(d.recv_bytes_timeout(Duration::from_secs(60)), Err(Error::Eof)));
    a.send(&1u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 1);
}

fn send_a_connection_back((channel, n): (Connection, u8)) {
    let (c, d) = pipe(true).unwrap();
    channel.send(&c).unwrap();
    d.send(&n).unwrap();
    // Stay until the parent has taken it: the sender hands its connections out.
    let _ = channel.recv::<u8>();
}

#[test]
fn a_forked_child_shares_connections_of_its_own() {
    // The parent shares first, so the forked child inherits a sharer that is not its own.
    let (a, b) = pipe(true).unwrap();
    let (c, _d) = pipe(true).unwrap();
    a.send(&c).unwrap();
    let _c2: Connection = b.recv().unwrap();
    for method in [multiproc::StartMethod::Fork, multiproc::StartMethod::Spawn] {
        let (channel, child_channel) = pipe(true).unwrap();
        let p = Process::builder(send_a_connection_back, (child_channel, 5))
            .start_method(method)
            .build();
        p.start().unwrap();
        let got: Connection = channel.recv().unwrap();
        assert_eq!(got.recv::<u8>().unwrap(), 5, "{method:?}");
        channel.send(&0u8).unwrap();
        p.join_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

fn send_a_connection_and_exit(channel: Connection) {
    let (c, _d) = pipe(true).unwrap();
    channel.send(&c).unwrap();
}

#[test]
fn a_connection_sent_by_a_process_that_exited_cannot_be_received() {
    let (channel, child_channel) = pipe(true).unwrap();
    let child = spawn(send_a_connection_and_exit, child_channel).unwrap();
    child.join().unwrap();
    match channel.recv::<Connection>() {
        Err(Error::Codec(why)) => assert!(why.contains("has it exited"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// A small deterministic generator for random inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_byte_streams_give_errors_or_messages_never_panics() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..3000 {
        let (conn, mut raw) = raw_peer();
        let len = (rng.next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half the inputs start with a plausible small header so payloads get decoded.
        if round % 2 == 0 && bytes.len() >= 4 {
            let n = (rng.next() % 60) as i32;
            bytes[..4].copy_from_slice(&n.to_be_bytes());
        }
        raw.write_all(&bytes).unwrap();
        drop(raw);
        for _ in 0..8 {
            let outcome = match round % 3 {
                0 => conn.recv::<(u32, String, Vec<i64>)>().map(|_| ()),
                1 => conn.recv_bytes_max(40).map(|_| ()),
                _ => conn.recv_bytes_into(&mut [0u8; 16]).map(|_| ()),
            };
            if matches!(
                outcome,
                Err(Error::Eof | Error::Protocol(_) | Error::MessageTooLong { .. })
            ) {
                break;
            }
        }
    }
}

#[test]
fn try_recv_and_poll_do_not_wait() {
    let (a, b) = pipe(true).unwrap();
    assert!(!b.poll().unwrap());
    assert!(matches!(b.try_recv::<u32>(), Err(Error::WouldBlock)));
    assert!(matches!(b.try_recv_bytes(), Err(Error::WouldBlock)));
    let mut buf = [0u8; 16];
    assert!(matches!(b.try_recv_bytes_into(&mut buf), Err(Error::WouldBlock)));
    a.send(&5u32).unwrap();
    assert!(b.poll_timeout(Duration::from_secs(60)).unwrap());
    assert!(b.poll().unwrap());
    assert_eq!(b.try_recv::<u32>().unwrap(), 5);
    a.send_bytes(b"abc").unwrap();
    assert!(b.poll_timeout(Duration::from_secs(60)).unwrap());
    assert_eq!(b.try_recv_bytes_into(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
}

#[test]
fn recv_bytes_into_timeout_completes_a_large_message_on_the_next_call() {
    let (b, mut stream) = raw_peer();
    let message: Vec<u8> = (0..400_000u32).map(|i| i as u8).collect();
    let (to_writer, gate) = std::sync::mpsc::channel::<()>();
    let writer = {
        let message = message.clone();
        std::thread::spawn(move || {
            // The header and half the payload, then the rest once the reader timed out.
            stream.write_all(&(message.len() as i32).to_be_bytes()).unwrap();
            stream.write_all(&message[..200_000]).unwrap();
            gate.recv().unwrap();
            stream.write_all(&message[200_000..]).unwrap();
            stream
        })
    };
    let mut buf = vec![0u8; 500_000];
    let first = b.recv_bytes_into_timeout(&mut buf, Duration::from_millis(200));
    assert!(matches!(first, Err(Error::Timeout(_))), "{first:?}");
    to_writer.send(()).unwrap();
    let n = b.recv_bytes_into_timeout(&mut buf, Duration::from_secs(60)).unwrap();
    assert_eq!(&buf[..n], &message[..]);
    drop(writer.join().unwrap());
}

#[test]
fn wait_timeout_reports_timeout_and_try_wait_reports_what_is_ready_now() {
    use multiproc::connection::{try_wait, wait};
    let (a, b) = pipe(true).unwrap();
    let (c, d) = pipe(true).unwrap();
    assert!(matches!(try_wait(&[&a, &c]), Err(Error::Timeout(_))));
    assert!(matches!(
        wait_timeout(&[&a, &c], Duration::from_millis(20)),
        Err(Error::Timeout(d)) if d == Duration::from_millis(20)
    ));
    d.send(&1u8).unwrap();
    assert_eq!(wait(&[&a, &c]).unwrap(), vec![1]);
    assert_eq!(try_wait(&[&a, &c]).unwrap(), vec![1]);
    drop(b);
    assert_eq!(wait_timeout(&[&a, &c], Duration::from_secs(60)).unwrap(), vec![0, 1]);
}
