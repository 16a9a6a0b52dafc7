//! Whether a variant did the work it names, read from graft's own counts
//! after its run: a variant whose steps failed, fell back, or were served
//! by the other side measured something else than its name says.
//!
//! The counts are graft's totals (`graft_requests_total` by the path that
//! served each step, summed over every zone and module, and
//! `graft_counters_lost_total`), small whatever the configuration's size.

/// The side a variant's steps must be served by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Mode `lua`: every step by its Lua side.
    Lua,
    /// Mode `rust` (through the bridge, or in the native pipeline): every
    /// step by its Rust side, none falling back.
    Rust,
    /// Mode `shadow`: Lua serves every step, and Rust runs beside it.
    Shadow,
}

/// Steps served by each path, from graft's totals text.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub lua: u64,
    pub rust: u64,
    pub fallback: u64,
    pub shadow_match: u64,
    pub shadow_diff: u64,
    pub failed: u64,
    /// Counts the shared table had no room for: the counts above are short.
    pub lost: u64,
}

impl Served {
    /// Reads the totals' Prometheus text; an error naming what is missing.
    pub fn parse(totals: &str) -> Result<Served, String> {
        let path = |name: &str| {
            let series = format!("graft_requests_total{{path=\"{name}\"}}");
            crate::metric(totals, &series).ok_or(format!("no {series} in graft's totals"))
        };
        Ok(Served {
            lua: path("lua")?,
            rust: path("rust")?,
            fallback: path("fallback")?,
            shadow_match: path("shadow_match")?,
            shadow_diff: path("shadow_diff")?,
            failed: path("failed")?,
            lost: crate::metric(totals, "graft_counters_lost_total{}")
                .ok_or("no graft_counters_lost_total in graft's totals")?,
        })
    }

    /// Why these counts are not `side`'s work, if they are not.
    pub fn check(&self, side: Side) -> Result<(), String> {
        let mut wrong = Vec::new();
        let mut none_of = |what: &str, n: u64| {
            if n > 0 {
                wrong.push(format!("{n} {what}"));
            }
        };
        none_of("failed", self.failed);
        none_of("fallback", self.fallback);
        none_of("lost counts (graft_shared_memory too small)", self.lost);
        match side {
            Side::Lua => {
                none_of("served by Rust", self.rust);
                none_of("compared in shadow", self.shadow_match + self.shadow_diff);
            }
            Side::Rust => {
                none_of("served by Lua", self.lua);
                none_of("compared in shadow", self.shadow_match + self.shadow_diff);
            }
            Side::Shadow => none_of("served by Rust", self.rust),
        }
        let (served, by) = match side {
            Side::Lua => (self.lua, "Lua"),
            Side::Rust => (self.rust, "Rust"),
            Side::Shadow => (
                self.shadow_match + self.shadow_diff,
                "Lua with Rust in shadow",
            ),
        };
        if served == 0 {
            wrong.push(format!("no step served by {by}"));
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} (steps by path: lua {}, rust {}, fallback {}, shadow_match {}, shadow_diff {}, failed {})",
                wrong.join(", "),
                self.lua,
                self.rust,
                self.fallback,
                self.shadow_match,
                self.shadow_diff,
                self.failed
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(lua: u64, rust: u64, fallback: u64, failed: u64, lost: u64) -> String {
        format!(
            "graft_requests_total{{path=\"lua\"}} {lua}\ngraft_requests_total{{path=\"rust\"}} {rust}\n\
             graft_requests_total{{path=\"fallback\"}} {fallback}\ngraft_requests_total{{path=\"shadow_match\"}} 0\n\
             graft_requests_total{{path=\"shadow_diff\"}} 0\ngraft_requests_total{{path=\"failed\"}} {failed}\n\
             graft_counters_lost_total{{}} {lost}\n"
        )
    }

    #[test]
    fn only_the_named_side_with_nothing_failed_is_the_work() {
        let ok = Served::parse(&totals(0, 900, 0, 0, 0)).unwrap();
        assert_eq!(ok.check(Side::Rust), Ok(()));
        assert!(ok
            .check(Side::Lua)
            .unwrap_err()
            .contains("900 served by Rust"));
        let failed = Served::parse(&totals(500, 0, 0, 100, 0)).unwrap();
        assert!(failed
            .check(Side::Lua)
            .unwrap_err()
            .starts_with("100 failed"));
        let lost = Served::parse(&totals(0, 10, 0, 0, 3)).unwrap();
        assert!(lost.check(Side::Rust).unwrap_err().contains("3 lost"));
        let fell = Served::parse(&totals(4, 10, 4, 0, 0)).unwrap();
        assert!(fell.check(Side::Rust).is_err());
        assert!(Served::parse(&totals(0, 0, 0, 0, 0))
            .unwrap()
            .check(Side::Rust)
            .is_err());
        assert!(Served::parse("graft_requests_total{path=\"lua\"} 1\n").is_err());
    }
}
