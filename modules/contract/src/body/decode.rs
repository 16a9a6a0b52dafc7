//! Bounded decoding of a request body's `Content-Encoding`, for a module
//! that opts in to it (the WAF's `"decompress"`): gzip (and `x-gzip`),
//! deflate and br, within a limit on the bytes out and on their ratio to
//! the bytes in. Past a limit, or a stream that is corrupt, cut short or
//! followed by other bytes, or codings stacked or unknown, the body is
//! undecidable: the caller's step fails and its failure policy answers.
//!
//! The one decoder of graft: the Rust modules call it in place, the Lua
//! side through `graft_ffi_decode` (`graft.body.decode`).
//!
//! - gzip (RFC 1952): every member of the body, one after the other (as
//!   `gzip -d`, Go, Python, Node and Java read concatenated members), each
//!   with its header (reserved flags refused, its header CRC checked when
//!   it has one), its CRC-32 and its length checked. Any byte after the
//!   last member that does not start another member is refused.
//! - deflate: the zlib format (RFC 1950, which RFC 9110 names "deflate",
//!   its Adler-32 checked; no preset dictionary) and raw deflate (RFC
//!   1951, which some clients send and some backends accept), as backends
//!   that try the one and then the other do. A body that reads as both,
//!   each to its end, is refused: the two could be different documents.
//! - br (RFC 7932): a window of at most 16 MiB (no large-window stream).
//!
//! Decoding streams: the output grows a chunk at a time and stops as soon
//! as it passes [`Limits::cap`], so a bomb costs at most the cap (and, for
//! br, the window its stream declares, at most 16 MiB), never what it
//! claims to expand to; nothing it declares (gzip's length) is trusted.
//! Every stream must end where the body ends: a cut body is undecidable
//! (a zone's `"over": "inspect"` inspects a cut body, but never a cut
//! compressed one).

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::{Crc, Decompress, FlushDecompress, Status};

use crate::{ConfigError, RequestView};

/// The largest `max_bytes` a body may decode to.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// The largest `max_ratio` of bytes out to bytes in.
pub const MAX_RATIO: usize = 100_000;

/// How far a compressed body is decoded: `{ "max_bytes": N, "max_ratio": R }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most bytes a body may decode to.
    pub max_bytes: usize,
    /// The most bytes out for each byte in.
    pub max_ratio: usize,
}

impl Limits {
    /// Refuses limits out of range, naming the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_BYTES).contains(&self.max_bytes) {
            return Err(ConfigError::new(
                "max_bytes",
                format!(
                    "{} is not a size from 1 to {MAX_BYTES} bytes",
                    self.max_bytes
                ),
            ));
        }
        if !(1..=MAX_RATIO).contains(&self.max_ratio) {
            return Err(ConfigError::new(
                "max_ratio",
                format!("{} is not a ratio from 1 to {MAX_RATIO}", self.max_ratio),
            ));
        }
        Ok(())
    }

    /// The most bytes a body of `encoded` bytes may decode to.
    pub fn cap(&self, encoded: usize) -> usize {
        self.max_bytes.min(self.max_ratio.saturating_mul(encoded))
    }
}

/// A coding graft decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Br,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Br => "br",
        }
    }
}

/// Every `Content-Encoding` header of the request, in order, joined by
/// `", "` as one list (the Lua side joins them alike).
pub fn content_encoding(req: &dyn RequestView) -> Vec<u8> {
    let mut list = Vec::new();
    req.for_each_header(&mut |name, value| {
        if name.trim_ascii().eq_ignore_ascii_case(b"content-encoding") {
            if !list.is_empty() {
                list.extend_from_slice(b", ");
            }
            list.extend_from_slice(value);
        }
        std::ops::ControlFlow::Continue(())
    });
    list
}

/// The one coding a `Content-Encoding` list names, its `identity` and
/// empty entries left out: `None` for none. More than one (stacked), or
/// one graft does not decode, is why the body is undecidable.
pub fn coding(list: &[u8]) -> Result<Option<Coding>, String> {
    let mut codings = list
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"));
    let Some(first) = codings.next() else {
        return Ok(None);
    };
    let shown = || String::from_utf8_lossy(list.trim_ascii()).into_owned();
    let more = codings.count();
    if more > 0 {
        return Err(format!(
            "its Content-Encoding \"{}\" stacks {} codings: graft decodes one",
            shown(),
            more + 1
        ));
    }
    let c = first.to_ascii_lowercase();
    match c.as_slice() {
        b"gzip" | b"x-gzip" => Ok(Some(Coding::Gzip)),
        b"deflate" => Ok(Some(Coding::Deflate)),
        b"br" => Ok(Some(Coding::Br)),
        _ => Err(format!(
            "its Content-Encoding \"{}\" is not one graft decodes (gzip, x-gzip, deflate, br)",
            shown()
        )),
    }
}

/// The body decoded by the codings `list` names (a `Content-Encoding`
/// value, or several joined by commas), within `limits`: `Ok(None)` when
/// it names none (identity), or why the body is undecidable.
pub fn decode(list: &[u8], body: &[u8], limits: Limits) -> Result<Option<Vec<u8>>, String> {
    let Some(coding) = coding(list)? else {
        return Ok(None);
    };
    let cap = limits.cap(body.len());
    decode_as(coding, body, cap)
        .map(Some)
        .map_err(|f| f.describe(coding, body.len(), limits))
}

/// Why a stream is not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It decodes to more than the cap.
    Past,
    /// It is not a stream of its coding.
    Corrupt(&'static str),
    /// The body ends before the stream does.
    Cut,
    /// Bytes follow the end of the stream.
    Trailing(usize),
    /// deflate: it reads as both zlib and raw deflate.
    Ambiguous,
}

impl Failure {
    fn describe(self, coding: Coding, encoded: usize, limits: Limits) -> String {
        let c = coding.name();
        match self {
            Failure::Past if limits.max_bytes <= limits.max_ratio.saturating_mul(encoded) => {
                format!(
                    "its {c} body decodes to more than {} bytes (decompress.max_bytes)",
                    limits.max_bytes
                )
            }
            Failure::Past => format!(
                "its {c} body of {encoded} bytes decodes to more than {} times that (decompress.max_ratio)",
                limits.max_ratio
            ),
            Failure::Corrupt(why) => format!("its {c} body is corrupt: {why}"),
            Failure::Cut => format!("its {c} body ends inside its stream"),
            Failure::Trailing(n) => format!("its {c} body has {n} bytes after its stream"),
            Failure::Ambiguous => {
                format!("its {c} body reads both as zlib and as raw deflate")
            }
        }
    }
}

/// The body decoded as `coding`, to at most `cap` bytes.
pub fn decode_as(coding: Coding, body: &[u8], cap: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    match coding {
        Coding::Gzip => gzip(body, cap, &mut out)?,
        Coding::Deflate => return deflate(body, cap),
        Coding::Br => brotli(body, cap, &mut out)?,
    }
    Ok(out)
}

/// Output is made this much at a time (and never past the cap and one).
const CHUNK: usize = 16 * 1024;

/// Room for the next chunk: up to one byte past the cap, which tells a
/// stream that reaches the cap from one that passes it.
fn room(out: &[u8], cap: usize) -> usize {
    (cap + 1).saturating_sub(out.len()).min(CHUNK)
}

/// Inflates one deflate stream (with the zlib wrapper or raw) from the
/// start of `input`, appending to `out`; the bytes it took.
fn inflate(input: &[u8], zlib: bool, cap: usize, out: &mut Vec<u8>) -> Result<usize, Failure> {
    let mut d = Decompress::new(zlib);
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = room(out, cap);
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let at = usize::try_from(in_before).map_err(|_| Failure::Corrupt("too long"))?;
        let status = d
            .decompress(&input[at..], &mut chunk[..n], FlushDecompress::None)
            .map_err(|_| Failure::Corrupt("not a deflate stream"))?;
        let produced = (d.total_out() - out_before) as usize;
        out.extend_from_slice(&chunk[..produced]);
        if out.len() > cap {
            return Err(Failure::Past);
        }
        let used = d.total_in() as usize;
        match status {
            Status::StreamEnd => return Ok(used),
            // No progress with room to write: it wants input there is not.
            _ if produced == 0 && d.total_in() == in_before => {
                return Err(if used == input.len() {
                    Failure::Cut
                } else {
                    Failure::Corrupt("not a deflate stream")
                });
            }
            _ => {}
        }
    }
}

/// A deflate body: zlib or raw, whichever it is; refused when it is both.
fn deflate(body: &[u8], cap: usize) -> Result<Vec<u8>, Failure> {
    let whole = |zlib: bool| {
        let mut out = Vec::new();
        let used = inflate(body, zlib, cap, &mut out)?;
        if used < body.len() {
            return Err(Failure::Trailing(body.len() - used));
        }
        Ok(out)
    };
    let looks_zlib = body.len() >= 2
        && body[0] & 0x0f == 8
        && body[0] >> 4 <= 7
        && (u16::from(body[0]) << 8 | u16::from(body[1])) % 31 == 0;
    let raw = whole(false);
    if !looks_zlib {
        return raw;
    }
    match (whole(true), raw) {
        (Ok(_), Ok(_)) => Err(Failure::Ambiguous),
        (Ok(out), Err(_)) | (Err(_), Ok(out)) => Ok(out),
        (Err(e), Err(_)) => Err(e),
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The length of the gzip member header at the start of `input`.
fn gzip_header(input: &[u8]) -> Result<usize, Failure> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    if input.len() < 10 {
        // A prefix of a header is a cut one; anything else is not one.
        let magic = [0x1f, 0x8b, 8];
        let n = input.len().min(3);
        return Err(if input[..n] == magic[..n] {
            Failure::Cut
        } else {
            Failure::Corrupt("not a gzip member")
        });
    }
    if input[..2] != [0x1f, 0x8b] || input[2] != 8 {
        return Err(Failure::Corrupt("not a gzip member"));
    }
    let flags = input[3];
    if flags & 0xe0 != 0 {
        return Err(Failure::Corrupt("its header has reserved flags set"));
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let xlen = input.get(at..at + 2).ok_or(Failure::Cut)?;
        at += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = input.get(at..).ok_or(Failure::Cut)?;
            let nul = rest.iter().position(|&b| b == 0).ok_or(Failure::Cut)?;
            at += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        let sum = input.get(at..at + 2).ok_or(Failure::Cut)?;
        let mut crc = Crc::new();
        crc.update(&input[..at]);
        if crc.sum() as u16 != u16::from_le_bytes([sum[0], sum[1]]) {
            return Err(Failure::Corrupt("its header CRC does not match"));
        }
        at += 2;
    }
    if at > input.len() {
        return Err(Failure::Cut);
    }
    Ok(at)
}

/// Every gzip member of the body, one after the other.
fn gzip(body: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), Failure> {
    let mut at = 0;
    loop {
        let member = &body[at..];
        let header = gzip_header(member)
            // After the first member, bytes that start no other one.
            .map_err(|e| match e {
                Failure::Corrupt(_) if at > 0 => Failure::Trailing(member.len()),
                e => e,
            })?;
        let start = out.len();
        let used = inflate(&member[header..], false, cap, out)?;
        let trailer = member
            .get(header + used..header + used + 8)
            .ok_or(Failure::Cut)?;
        let mut crc = Crc::new();
        crc.update(&out[start..]);
        if crc.sum() != le32(&trailer[..4]) {
            return Err(Failure::Corrupt("its CRC-32 does not match"));
        }
        if (out.len() - start) as u32 != le32(&trailer[4..]) {
            return Err(Failure::Corrupt("its length does not match"));
        }
        at += header + used + 8;
        if at == body.len() {
            return Ok(());
        }
    }
}

/// A br body: one brotli stream, to its end.
fn brotli(body: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), Failure> {
    // RFC 7932's windows (at most 16 MiB), not the large-window extension.
    let mut state = BrotliState::new_strict(
        StandardAlloc::default(),
        StandardAlloc::default(),
        StandardAlloc::default(),
    );
    let mut chunk = vec![0u8; CHUNK];
    let (mut available_in, mut input_offset, mut total_out) = (body.len(), 0, 0);
    loop {
        let n = room(out, cap);
        let (mut available_out, mut output_offset) = (n, 0);
        let result = BrotliDecompressStream(
            &mut available_in,
            &mut input_offset,
            body,
            &mut available_out,
            &mut output_offset,
            &mut chunk[..n],
            &mut total_out,
            &mut state,
        );
        out.extend_from_slice(&chunk[..output_offset]);
        if out.len() > cap {
            return Err(Failure::Past);
        }
        match result {
            BrotliResult::ResultSuccess if available_in > 0 => {
                return Err(Failure::Trailing(available_in))
            }
            BrotliResult::ResultSuccess => return Ok(()),
            BrotliResult::NeedsMoreOutput => {}
            // All of the body was given: the stream goes on past it.
            BrotliResult::NeedsMoreInput => return Err(Failure::Cut),
            BrotliResult::ResultFailure => return Err(Failure::Corrupt("not a brotli stream")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SQLI: &[u8] = b"q=1'+UNION+SELECT+password+FROM+users";

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn br(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 11, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    const ROOMY: Limits = Limits {
        max_bytes: 1 << 20,
        max_ratio: 1000,
    };

    fn dec(list: &str, body: &[u8]) -> Result<Option<Vec<u8>>, String> {
        decode(list.as_bytes(), body, ROOMY)
    }

    #[test]
    fn gzip_deflate_zlib_and_raw_and_br_decode_to_the_body_sent() {
        for (list, body) in [
            ("gzip", gz(SQLI)),
            ("x-gzip", gz(SQLI)),
            ("GZIP", gz(SQLI)),
            (" gzip ", gz(SQLI)),
            ("deflate", zlib(SQLI)),
            ("deflate", raw(SQLI)),
            ("br", br(SQLI)),
            ("identity, br", br(SQLI)),
            ("br,identity,", br(SQLI)),
        ] {
            assert_eq!(dec(list, &body), Ok(Some(SQLI.to_vec())), "{list}");
        }
        // Concatenated gzip members are one body, as gzip -d reads them.
        let mut two = gz(b"q=1'+UNION");
        two.extend(gz(b"+SELECT+password+FROM+users"));
        assert_eq!(dec("gzip", &two), Ok(Some(SQLI.to_vec())));
        // A header with every optional field.
        let mut e = flate2::GzBuilder::new()
            .extra(b"xx".to_vec())
            .filename("f.txt")
            .comment("c")
            .write(Vec::new(), flate2::Compression::fast());
        e.write_all(SQLI).unwrap();
        assert_eq!(dec("gzip", &e.finish().unwrap()), Ok(Some(SQLI.to_vec())));
        // Empty output is output.
        assert_eq!(dec("gzip", &gz(b"")), Ok(Some(vec![])));
        assert_eq!(dec("br", &br(b"")), Ok(Some(vec![])));
    }

    #[test]
    fn identity_or_no_coding_decodes_nothing() {
        for list in ["", "identity", "IDENTITY", " , identity ,"] {
            assert_eq!(dec(list, SQLI), Ok(None), "{list:?}");
        }
    }

    #[test]
    fn stacked_or_unknown_codings_are_undecidable() {
        for list in [
            "gzip, gzip",
            "gzip, br",
            "deflate,gzip",
            "br, identity, gzip",
        ] {
            let e = dec(list, &gz(SQLI)).unwrap_err();
            assert!(e.contains("stacks"), "{list}: {e}");
        }
        for list in ["compress", "x-compress", "zstd", "gzip;q=1", "gz ip"] {
            let e = dec(list, &gz(SQLI)).unwrap_err();
            assert!(e.contains("is not one graft decodes"), "{list}: {e}");
        }
    }

    #[test]
    fn a_bomb_stops_at_max_bytes_and_never_decodes_further() {
        let zeros = vec![0u8; 8 << 20];
        let limits = Limits {
            max_bytes: 64 * 1024,
            max_ratio: 100_000,
        };
        for (list, body) in [
            ("gzip", gz(&zeros)),
            ("deflate", zlib(&zeros)),
            ("deflate", raw(&zeros)),
            ("br", br(&zeros)),
        ] {
            assert_eq!(
                decode_as(coding(list.as_bytes()).unwrap().unwrap(), &body, 65536),
                Err(Failure::Past),
                "{list}"
            );
            let e = decode(list.as_bytes(), &body, limits).unwrap_err();
            assert!(
                e.ends_with("decodes to more than 65536 bytes (decompress.max_bytes)"),
                "{list}: {e}"
            );
        }
        // Exactly at the limit is within it.
        let at = vec![b'a'; 1000];
        for c in [Coding::Gzip, Coding::Br] {
            let body = if c == Coding::Gzip { gz(&at) } else { br(&at) };
            assert_eq!(decode_as(c, &body, 1000), Ok(at.clone()));
            assert_eq!(decode_as(c, &body, 999), Err(Failure::Past));
        }
    }

    #[test]
    fn a_ratio_bomb_stops_at_max_ratio_times_its_size() {
        // 1 MiB of zeros in about a kilobyte (gzip) or a few bytes (br):
        // within max_bytes, but far past 100 times the bytes sent.
        let zeros = vec![0u8; 1 << 20];
        let limits = Limits {
            max_bytes: 16 << 20,
            max_ratio: 100,
        };
        for (list, body) in [("gzip", gz(&zeros)), ("br", br(&zeros))] {
            let e = decode(list.as_bytes(), &body, limits).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "its {list} body of {} bytes decodes to more than 100 times that (decompress.max_ratio)",
                    body.len()
                )
            );
        }
        // An ordinary body is well within a ratio of 100.
        let text = b"a=1&b=2&c=3&d=4".repeat(100);
        assert_eq!(decode(b"gzip", &gz(&text), limits), Ok(Some(text.clone())));
        assert_eq!(limits.cap(0), 0);
        assert_eq!(limits.cap(usize::MAX), 16 << 20);
    }

    #[test]
    fn a_stream_cut_short_is_undecidable() {
        for (c, body) in [
            (Coding::Gzip, gz(SQLI)),
            (Coding::Deflate, zlib(SQLI)),
            (Coding::Br, br(SQLI)),
        ] {
            for cut in [0, 1, 2, 5, 10, body.len() / 2, body.len() - 1] {
                let r = decode_as(c, &body[..cut], 1 << 20);
                assert!(
                    matches!(r, Err(Failure::Cut | Failure::Corrupt(_))),
                    "{c:?} cut at {cut}: {r:?}"
                );
            }
        }
        // A gzip member without its trailer, or with half of it.
        let g = gz(SQLI);
        assert_eq!(
            decode_as(Coding::Gzip, &g[..g.len() - 8], 1 << 20),
            Err(Failure::Cut)
        );
        assert_eq!(
            decode_as(Coding::Gzip, &g[..g.len() - 3], 1 << 20),
            Err(Failure::Cut)
        );
        assert_eq!(
            dec("gzip", &g[..g.len() - 4]).unwrap_err(),
            "its gzip body ends inside its stream"
        );
        // A raw deflate stream cut short.
        let r = raw(SQLI);
        assert!(decode_as(Coding::Deflate, &r[..r.len() - 1], 1 << 20).is_err());
    }

    #[test]
    fn corrupt_streams_and_bytes_after_them_are_undecidable() {
        let g = gz(SQLI);
        let n = g.len();
        let mut bad_crc = g.clone();
        bad_crc[n - 8] ^= 1;
        assert_eq!(
            decode_as(Coding::Gzip, &bad_crc, 1 << 20),
            Err(Failure::Corrupt("its CRC-32 does not match"))
        );
        let mut bad_len = g.clone();
        bad_len[n - 4] ^= 1;
        assert_eq!(
            decode_as(Coding::Gzip, &bad_len, 1 << 20),
            Err(Failure::Corrupt("its length does not match"))
        );
        let mut reserved = g.clone();
        reserved[3] |= 0x20;
        assert!(matches!(
            decode_as(Coding::Gzip, &reserved, 1 << 20),
            Err(Failure::Corrupt(_))
        ));
        let mut trailing = g.clone();
        trailing.extend_from_slice(b"x=1' OR 1=1");
        assert_eq!(
            decode_as(Coding::Gzip, &trailing, 1 << 20),
            Err(Failure::Trailing(11))
        );
        let mut z = zlib(SQLI);
        let zn = z.len();
        z[zn - 1] ^= 1;
        assert!(decode_as(Coding::Deflate, &z, 1 << 20).is_err(), "Adler-32");
        let mut z = zlib(SQLI);
        z.push(0);
        assert!(decode_as(Coding::Deflate, &z, 1 << 20).is_err(), "trailing");
        let mut b = br(SQLI);
        b.push(0);
        assert_eq!(
            decode_as(Coding::Br, &b, 1 << 20),
            Err(Failure::Trailing(1))
        );
        // One coding's stream under another's name.
        assert!(decode_as(Coding::Gzip, &br(SQLI), 1 << 20).is_err());
        assert!(decode_as(Coding::Br, &gz(SQLI), 1 << 20).is_err());
        assert!(decode_as(Coding::Deflate, &gz(SQLI), 1 << 20).is_err());
        assert!(decode_as(Coding::Gzip, SQLI, 1 << 20).is_err());
        // A zlib stream that needs a preset dictionary (FDICT, and a
        // DICTID): refused, not read without it.
        let dict = [0x78, 0x3f, 0, 0, 0, 1, 0x03, 0x00];
        assert_eq!(
            decode_as(Coding::Deflate, &dict, 1 << 20),
            Err(Failure::Corrupt("not a deflate stream"))
        );
        // A large-window brotli stream (not RFC 7932's).
        let params = brotli::enc::BrotliEncoderParams {
            large_window: true,
            lgwin: 26,
            ..Default::default()
        };
        let mut large = Vec::new();
        brotli::BrotliCompress(&mut &SQLI.repeat(100)[..], &mut large, &params).unwrap();
        assert!(matches!(
            decode_as(Coding::Br, &large, 1 << 20),
            Err(Failure::Corrupt(_))
        ));
    }

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        b << 16 | a
    }

    #[test]
    fn a_body_that_reads_both_as_zlib_and_as_raw_deflate_is_undecidable() {
        // A zlib header's first byte (CM 8) is, read as raw deflate, a
        // stored block: 78 01 01 fe fe 01 01 is a zlib header and a final
        // stored block of 0xfefe bytes, and as raw deflate a stored block
        // of 0x0101 bytes (from the fifth byte on), inside which a final
        // stored block starts that runs to the body's end, over zlib's
        // Adler-32. Two documents in one body.
        let zlen = 0xfefe;
        let total = 7 + zlen + 4;
        let mut data = vec![b'a'; zlen];
        let len3 = (total - 267) as u16;
        data[255] = 0x01;
        data[256..258].copy_from_slice(&len3.to_le_bytes());
        data[258..260].copy_from_slice(&(!len3).to_le_bytes());
        data[260..280].copy_from_slice(b"q=1' UNION SELECT x ");
        let mut body = vec![0x78, 0x01, 0x01, 0xfe, 0xfe, 0x01, 0x01];
        body.extend_from_slice(&data);
        body.extend_from_slice(&adler32(&data).to_be_bytes());
        assert_eq!(body.len(), total);
        let (mut z, mut r) = (Vec::new(), Vec::new());
        assert_eq!(inflate(&body, true, 1 << 20, &mut z), Ok(total));
        assert_eq!(inflate(&body, false, 1 << 20, &mut r), Ok(total));
        assert_ne!(z, r);
        assert_eq!(
            decode_as(Coding::Deflate, &body, 1 << 20),
            Err(Failure::Ambiguous)
        );
        assert_eq!(
            dec("deflate", &body).unwrap_err(),
            "its deflate body reads both as zlib and as raw deflate"
        );
        // A zlib stream, and a raw one, read as themselves.
        assert_eq!(
            decode_as(Coding::Deflate, &zlib(SQLI), 1 << 20),
            Ok(SQLI.to_vec())
        );
        assert_eq!(
            decode_as(Coding::Deflate, &raw(SQLI), 1 << 20),
            Ok(SQLI.to_vec())
        );
    }
}
