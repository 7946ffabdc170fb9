//! Handshake and channel throughput, next to the raw AEADs measured in the same run.
//!
//! `cargo bench -p nullport-protocol` (add `-- --quick` for a smoke run). Prints a Markdown
//! table: handshakes and resumed opens per second, and seal+open MB/s for 64 B, 1 KiB and 64 KiB messages over
//! a nullport channel, raw AES-256-GCM (ring, the cipher our channel uses) and raw
//! ChaCha20-Poly1305 (RustCrypto), with the channel's ratio to each. The channel is measured
//! twice: appending to vectors (`seal`/`open`) and into buffers it reuses (`seal_into`/
//! `open_into`, what the node's channel does).

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use nullport_protocol::resume::{self, Answered, Early, Opening, Resumed};
use nullport_protocol::{
    Channel, Deframer, DialRequest, HandshakeKeys, Identity, Initiator, Limits, Received,
    Responder, ServiceName, SessionId,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = if quick {
        Duration::from_millis(150)
    } else {
        Duration::from_secs(2)
    };
    let a = Identity::from_seed([1; 32]);
    let b = Identity::from_seed([2; 32]);
    let (ka, kb) = (HandshakeKeys::new(&a)?, HandshakeKeys::new(&b)?);

    let (n, elapsed) = repeat(budget, || handshake(&ka, &kb).map(drop))?;
    println!("| measurement | value |\n| --- | --- |");
    println!(
        "| handshakes/s (XX + proofs + accept, one core) | {:.0} |",
        n as f64 / elapsed.as_secs_f64()
    );
    // Resumed opens between the same two keys (the full handshake above left a ticket), of
    // both kinds.
    let mut session = 1u64;
    for (dh, what) in [
        (false, "keyed: HKDF + AES-GCM + accept"),
        (true, "with a DH: NNpsk0 + accept"),
    ] {
        let limits = Limits {
            resume_dh: dh,
            ..Limits::default()
        };
        let (n, elapsed) = repeat(budget, || {
            session += 1;
            resumed(&ka, &kb, session, limits).map(drop)
        })?;
        println!(
            "| resumed opens/s ({what}, one core) | {:.0} |",
            n as f64 / elapsed.as_secs_f64()
        );
    }
    println!();
    println!(
        "| message size | channel seal+open MB/s | channel into buffers MB/s | raw AES-256-GCM (ring) MB/s | raw ChaCha20-Poly1305 MB/s | channel / AES-GCM | buffers / AES-GCM | channel / ChaCha |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for size in [64usize, 1024, 65_518] {
        let (mut ca, mut cb) = handshake(&ka, &kb)?;
        let data = vec![0x5au8; size];
        let mut wire = Vec::with_capacity(size + 64);
        let mut plain = Vec::with_capacity(size);
        let mut deframer = Deframer::new(65_535);
        let channel = mbps(budget, size, || {
            wire.clear();
            plain.clear();
            ca.seal(&data, &mut wire)?;
            deframer.push(&wire);
            while let Some(m) = deframer.next_message()? {
                cb.open(m, &mut plain)?;
            }
            black_box(&plain);
            Ok(())
        })?;
        let mut sealed = vec![0u8; nullport_protocol::channel::max_sealed_len(size)];
        let mut opened = vec![0u8; 65_535];
        let buffers = mbps(budget, size, || {
            // Through a deframer like the vector form (the node reads the stream into one).
            let n = ca.seal_into(&data, &mut sealed)?;
            deframer.push(&sealed[..n]);
            while let Some(m) = deframer.next_message()? {
                if let Received::Data(k) = cb.open_into(m, &mut opened)? {
                    black_box(&opened[1..1 + k]);
                }
            }
            Ok(())
        })?;
        let ring_key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[7; 32])
                .map_err(|_| "ring key")?,
        );
        let mut counter = 0u64;
        let mut buf = data.clone();
        let aes = mbps(budget, size, || {
            counter += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_be_bytes());
            buf.truncate(size);
            let tag = ring_key
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::empty(),
                    &mut buf,
                )
                .map_err(|_| "seal")?;
            buf.extend_from_slice(tag.as_ref());
            ring_key
                .open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::empty(),
                    &mut buf,
                )
                .map_err(|_| "open")?;
            black_box(&buf);
            Ok(())
        })?;
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into());
        let chacha = mbps(budget, size, || {
            counter += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_be_bytes());
            buf.truncate(size);
            cipher
                .encrypt_in_place(&nonce.into(), b"", &mut buf)
                .map_err(|_| "seal")?;
            cipher
                .decrypt_in_place(&nonce.into(), b"", &mut buf)
                .map_err(|_| "open")?;
            black_box(&buf);
            Ok(())
        })?;
        println!(
            "| {size} B | {channel:.0} | {buffers:.0} | {aes:.0} | {chacha:.0} | {:.2} | {:.2} | {:.2} |",
            channel / aes,
            buffers / aes,
            channel / chacha
        );
    }
    Ok(())
}

type BenchResult = Result<(), Box<dyn std::error::Error>>;

fn repeat(
    budget: Duration,
    mut f: impl FnMut() -> BenchResult,
) -> Result<(u64, Duration), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f()?;
        n += 1;
    }
    Ok((n, start.elapsed()))
}

fn mbps(
    budget: Duration,
    size: usize,
    f: impl FnMut() -> BenchResult,
) -> Result<f64, Box<dyn std::error::Error>> {
    let (n, elapsed) = repeat(budget, f)?;
    Ok((n as f64 * size as f64) / elapsed.as_secs_f64() / 1e6)
}

fn handshake(
    ka: &HandshakeKeys,
    kb: &HandshakeKeys,
) -> Result<(Channel, Channel), Box<dyn std::error::Error>> {
    let now = Instant::now();
    let limits = Limits::default();
    let mut buf = Vec::new();
    let dial = DialRequest {
        expected: kb.node_id(),
        session: SessionId(1),
        service: ServiceName::new("bench")?,
        blob: Vec::new(),
    };
    let init = Initiator::start(ka, dial, limits, now, &mut buf)?;
    let resp = Responder::new(kb, ka.node_id(), SessionId(1), limits, now)?;
    let mut out = Vec::new();
    let resp = resp.handle_hello(&buf[2..], now, &mut out)?;
    buf.clear();
    let verdict = init.handle_response(&out[2..], now, &mut buf)?;
    let req = resp.handle_finish(&buf[2..], now)?;
    out.clear();
    let cb = req.accept(&mut out)?;
    let ca = verdict.handle_verdict(&out[2..], now)?;
    Ok((ca, cb))
}

fn resumed(
    ka: &HandshakeKeys,
    kb: &HandshakeKeys,
    session: u64,
    limits: Limits,
) -> Result<(Channel, Channel), Box<dyn std::error::Error>> {
    let now = Instant::now();
    let mut buf = Vec::new();
    let dial = DialRequest {
        expected: kb.node_id(),
        session: SessionId(session),
        service: ServiceName::new("bench")?,
        blob: Vec::new(),
    };
    let opening = Opening::start(ka, dial, Early::default(), limits, now, &mut buf)?;
    if !opening.is_resumed() {
        return Err("no resumption ticket".into());
    }
    let mut r2 = Vec::new();
    let Resumed::Opened(req) = resume::respond(
        kb,
        ka.node_id(),
        SessionId(session),
        limits,
        &buf[2..],
        now,
        &mut r2,
    )?
    else {
        return Err("resumed open refused".into());
    };
    buf.clear();
    let Answered::Verdict(verdict) = opening.handle_response(ka, &r2[2..], now, &mut buf)? else {
        return Err("resumed open answered REFUSED".into());
    };
    let mut out = Vec::new();
    let cb = req.accept(&mut out)?;
    let ca = verdict.handle_verdict(&out[2..], now)?;
    Ok((ca, cb))
}
