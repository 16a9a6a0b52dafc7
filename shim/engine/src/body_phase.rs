//! The response-body phase of one response, whichever server streams it:
//! the rewriters of the zone's body steps that Rust serves for it
//! (`Module::on_response_body`), fed in step order, each one's output the
//! next one's input. Every call runs guarded (a panic is the step's
//! failure, counted on it), and what a step may write from one piece of
//! the body is bounded ([`MAX_HELD`]): with the rewriter's own bound
//! (`html_rewrite`: `lol_html`'s 8 MiB), that bounds what a response
//! holds, whatever its body. A step that fails is taken out, and the rest
//! of the body passes it as it is (what it held of a tag it was reading is
//! lost); the server says what the step's failure policy makes of a
//! response that has started ([`Failed`]).
use graft_contract::{BodyRewriter, ModuleError, ResponseHead};

use crate::{guarded_module, start_response_body, Count, Step, Zone};

/// The most a step may write from one piece of the body: past it the step
/// fails, and the rest of the body passes it as it is.
pub const MAX_HELD: usize = 16 << 20;

/// A body step that failed for this response, and why (counted on the
/// step as an error or a panic; `Count::Failed` is the server's, which
/// knows what served instead).
#[derive(Debug)]
pub struct Failed {
    pub step: usize,
    pub why: String,
}

/// One response's rewriters, in step order.
#[derive(Default)]
pub struct Rewriters {
    active: Vec<(usize, Box<dyn BodyRewriter>)>,
}

impl Rewriters {
    /// The rewriters of `zone`'s body steps for a response with `head`.
    /// `serves(step)`: `Ok` when Rust serves the step's body phase for
    /// this response, else why not (a failure: no side serves it). A step
    /// whose module leaves this response as it is (not HTML, compressed)
    /// is counted `untouched`.
    pub fn start(
        zone: &Zone,
        head: &ResponseHead<'_>,
        serves: impl Fn(&Step) -> Result<(), String>,
        failed: &mut Vec<Failed>,
    ) -> Rewriters {
        let mut rewriters = Rewriters::default();
        for (i, step) in zone.steps.iter().enumerate() {
            if !step.module.rewrites_bodies() {
                continue;
            }
            if let Err(why) = serves(step) {
                failed.push(Failed { step: i, why });
                continue;
            }
            if let Err(why) = rewriters.start_step(i, step, head) {
                failed.push(Failed { step: i, why });
            }
        }
        rewriters
    }

    /// Starts step `i`'s rewriter for a response with `head` (steps are
    /// started in step order): added, or counted `untouched` when its
    /// module leaves this response as it is; `Err`: why it failed (counted
    /// on the step as an error or a panic).
    pub fn start_step(
        &mut self,
        i: usize,
        step: &Step,
        head: &ResponseHead<'_>,
    ) -> Result<(), String> {
        match start_response_body(step, head)? {
            Some(rw) => self.active.push((i, rw)),
            None => step.counters.add(Count::Untouched),
        }
        Ok(())
    }

    /// Takes every rewriter out: the rest of the body passes as it is.
    pub fn clear(&mut self) {
        self.active.clear();
    }

    /// Whether no step rewrites this response (any longer).
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// What the rewriters write of the next piece of the body (`last`:
    /// the body's end), in step order. A step that fails, or writes more
    /// than [`MAX_HELD`] from the piece, is added to `failed` and taken
    /// out: the piece and the rest of the body pass it as they are.
    pub fn write(
        &mut self,
        zone: &Zone,
        piece: &[u8],
        last: bool,
        failed: &mut Vec<Failed>,
    ) -> Vec<u8> {
        let mut data = piece.to_vec();
        let mut k = 0;
        while k < self.active.len() {
            let (i, rw) = &mut self.active[k];
            let Some(step) = zone.steps.get(*i) else {
                k += 1;
                continue;
            };
            let mut out = Vec::with_capacity(data.len() + 64);
            let result = guarded_module(step, || {
                rw.write(&data, &mut out)?;
                if last {
                    rw.end(&mut out)?;
                }
                bounded(&out, &data)
            });
            match result {
                Ok(()) => {
                    data = out;
                    k += 1;
                }
                Err(why) => {
                    failed.push(Failed { step: *i, why });
                    self.active.remove(k);
                }
            }
        }
        if last {
            self.active.clear();
        }
        data
    }
}

/// A step's error when it wrote more than [`MAX_HELD`] from one piece.
pub fn bounded(written: &[u8], from: &[u8]) -> Result<(), ModuleError> {
    if written.len() > MAX_HELD {
        return Err(ModuleError::new(format!(
            "wrote {} bytes from {} bytes of the body, more than the {MAX_HELD} graft holds for a response",
            written.len(),
            from.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    fn zone(head_end: &str) -> Config {
        let text = serde_json::json!({ "zones": { "a.test": { "modules": [
            { "module": "html_rewrite", "mode": "rust", "config": { "head_end": head_end } },
            { "module": "html_rewrite", "mode": "rust", "config": { "obfuscate_emails": true } } ] } } })
        .to_string();
        Config::parse(Path::new("/etc/graft/graft.json"), text.as_bytes()).unwrap()
    }

    const HTML: ResponseHead<'static> = ResponseHead {
        status: 200,
        content_type: Some(b"text/html"),
        content_encoding: None,
    };

    #[test]
    fn steps_rewrite_in_order_piece_by_piece() {
        let config = zone("<i>a@b.example</i>");
        let z = &config.zones[0];
        let mut failed = Vec::new();
        let mut rw = Rewriters::start(z, &HTML, |_| Ok(()), &mut failed);
        let mut out = rw.write(z, b"<html><he", false, &mut failed);
        out.extend(rw.write(z, b"ad></head>x@y.example", false, &mut failed));
        out.extend(rw.write(z, b"", true, &mut failed));
        assert!(failed.is_empty(), "{failed:?}");
        // The second step obfuscates what the first inserted.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<html><head><i>a&#64;b.example</i></head>x&#64;y.example"
        );
        assert!(rw.is_empty(), "ended");
    }

    #[test]
    fn a_step_that_fails_is_taken_out_and_the_body_passes_it() {
        // Each <head> gets 600 KiB: the second passes the 1 MiB bound.
        let config = zone(&"x".repeat(60 * 1024));
        let z = &config.zones[0];
        let mut failed = Vec::new();
        let mut rw = Rewriters::start(z, &HTML, |_| Ok(()), &mut failed);
        let mut pieces = 0;
        for _ in 0..20 {
            rw.write(z, b"<head></head>", false, &mut failed);
            pieces += 1;
            if !failed.is_empty() {
                break;
            }
        }
        assert!(pieces < 20);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].step, 0);
        assert_eq!(z.steps[0].counters.get(Count::Error), 1);
        // The piece after goes through the second step alone.
        let out = rw.write(z, b"<p>m@n.example</p>", false, &mut failed);
        assert_eq!(out, b"<p>m&#64;n.example</p>");
    }

    #[test]
    fn a_step_not_served_or_not_for_this_response_is_told() {
        let config = zone("<i></i>");
        let z = &config.zones[0];
        let mut failed = Vec::new();
        let plain = ResponseHead {
            content_type: Some(b"text/plain"),
            ..HTML
        };
        let rw = Rewriters::start(z, &plain, |_| Ok(()), &mut failed);
        assert!(rw.is_empty() && failed.is_empty());
        assert_eq!(z.steps[0].counters.get(Count::Untouched), 1);
        let rw = Rewriters::start(z, &HTML, |_| Err("killed".into()), &mut failed);
        assert!(rw.is_empty());
        assert_eq!(failed.len(), 2);
    }
}
