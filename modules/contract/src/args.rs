//! Query arguments as OpenResty's `ngx.req.get_uri_args()` gives them, so
//! that a Rust module sees exactly what its Lua twin sees.
//!
//! - arguments are separated by `&`; the first `=` splits name and value;
//! - an argument without `=` has no value (Lua: `true`), shown here as `None`;
//! - names and values are percent-decoded once, `+` becomes a space;
//! - an argument whose name is empty is skipped.
//!
//! Every argument is visited, however many there are.

/// Calls `f(name, value)` for every argument of `query`, in order.
pub fn for_each_arg(query: &[u8], mut f: impl FnMut(&[u8], Option<&[u8]>)) {
    let mut name = Vec::new();
    let mut value = Vec::new();
    for (n, v) in split(query) {
        name.clear();
        decode_component(n, &mut name);
        match v {
            Some(v) => {
                value.clear();
                decode_component(v, &mut value);
                f(&name, Some(&value));
            }
            None => f(&name, None),
        }
    }
}

/// Decodes every argument of `query` into `bytes`, back to back (a name,
/// then its value, empty when it has none), and pushes to `ends` where
/// each argument's name ends and where its value ends: [`for_each_arg`]'s
/// arguments with no copy between.
pub fn decode_args(query: &[u8], bytes: &mut Vec<u8>, ends: &mut Vec<(usize, usize)>) {
    for (n, v) in split(query) {
        decode_component(n, bytes);
        let name_end = bytes.len();
        if let Some(v) = v {
            decode_component(v, bytes);
        }
        ends.push((name_end, bytes.len()));
    }
}

/// The arguments of `query` as they come: each split at its first `=`;
/// those with an empty name left out.
fn split(query: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    let mut rest = Some(query);
    std::iter::from_fn(move || loop {
        let q = rest?;
        let part = match memchr::memchr(b'&', q) {
            Some(i) => {
                rest = Some(&q[i + 1..]);
                &q[..i]
            }
            None => {
                rest = None;
                q
            }
        };
        let (n, v) = match memchr::memchr(b'=', part) {
            Some(i) => (&part[..i], Some(&part[i + 1..])),
            None => (part, None),
        };
        if !n.is_empty() {
            return Some((n, v));
        }
    })
}

/// A hex digit's value, or 16 for any other byte.
const HEX: [u8; 256] = {
    let mut t = [16u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// How many bytes [`decode_component`] looks at at once.
const BLOCK: usize = 16;

/// Percent-decodes a query component once, appended to `out`: `+` is a
/// space, `%XX` a byte, and a `%` not followed by two hex digits stays as
/// it is.
pub fn decode_component(input: &[u8], out: &mut Vec<u8>) {
    // The decoded component is never longer than the input: it is written
    // in place of zeros, then cut to its length (no capacity check a byte).
    let start = out.len();
    out.resize(start + input.len(), 0);
    let dst = &mut out[start..];
    let (mut i, mut n) = (0, 0);
    while i < input.len() {
        // Sixteen bytes with no `%` at once: only `+` changes, and the
        // compiler does the sixteen side by side.
        if let (Some(block), Some(to)) = (input.get(i..i + BLOCK), dst.get_mut(n..n + BLOCK)) {
            if !block.iter().fold(false, |any, &b| any | (b == b'%')) {
                for (d, &b) in to.iter_mut().zip(block) {
                    *d = if b == b'+' { b' ' } else { b };
                }
                i += BLOCK;
                n += BLOCK;
                continue;
            }
        }
        let (byte, used) = match input[i] {
            b'+' => (b' ', 1),
            b'%' => {
                let h = input.get(i + 1).map_or(16, |&b| HEX[usize::from(b)]);
                let l = input.get(i + 2).map_or(16, |&b| HEX[usize::from(b)]);
                if h < 16 && l < 16 {
                    (h << 4 | l, 3)
                } else {
                    (b'%', 1)
                }
            }
            b => (b, 1),
        };
        dst[n] = byte;
        n += 1;
        i += used;
    }
    out.truncate(start + n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(q: &str) -> Vec<(String, Option<String>)> {
        let mut out = vec![];
        for_each_arg(q.as_bytes(), |n, v| {
            out.push((
                String::from_utf8_lossy(n).into_owned(),
                v.map(|v| String::from_utf8_lossy(v).into_owned()),
            ))
        });
        out
    }

    #[test]
    fn splits_and_decodes_once() {
        assert_eq!(
            args("a=1&b&c=x%20y+z&=skipped&d=%252e&e=a=b"),
            [
                ("a".into(), Some("1".into())),
                ("b".into(), None),
                ("c".into(), Some("x y z".into())),
                ("d".into(), Some("%2e".into())),
                ("e".into(), Some("a=b".into())),
            ]
        );
    }

    /// The rules as first written, a byte at a time: what the faster
    /// decoding is held to.
    fn reference(input: &[u8]) -> Vec<u8> {
        let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    if let (Some(h), Some(l)) = (hex(input.get(i + 1)), hex(input.get(i + 2))) {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    out.push(b'%');
                }
                b => out.push(b),
            }
            i += 1;
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn decodes_as_the_byte_at_a_time_rules(
            // `%` one byte in ten: runs of sixteen bytes with none come too.
            input in proptest::collection::vec(
                proptest::prop_oneof![
                    9 => proptest::sample::select(b"+&=aF9g0 \xff".to_vec()),
                    1 => proptest::strategy::Just(b'%'),
                ],
                0..80,
            ),
            prefix in proptest::collection::vec(proptest::num::u8::ANY, 0..4),
        ) {
            let mut out = prefix.clone();
            decode_component(&input, &mut out);
            let mut want = prefix;
            want.extend(reference(&input));
            proptest::prop_assert_eq!(out, want);
            // Every argument, both ways, the same.
            let (mut bytes, mut ends) = (Vec::new(), Vec::new());
            decode_args(&input, &mut bytes, &mut ends);
            let mut start = 0;
            let mut seen = Vec::new();
            for &(name_end, end) in &ends {
                seen.push((bytes[start..name_end].to_vec(), bytes[name_end..end].to_vec()));
                start = end;
            }
            let mut want = Vec::new();
            for_each_arg(&input, |n, v| want.push((n.to_vec(), v.unwrap_or_default().to_vec())));
            proptest::prop_assert_eq!(seen, want);
        }
    }

    #[test]
    fn visits_every_argument() {
        let q: Vec<String> = (0..5000).map(|i| format!("k{i}=v")).collect();
        assert_eq!(args(&q.join("&")).len(), 5000);
    }
}
