//! A budget of log lines per second, so that no request can make graft
//! write without bound: every per-request line family (decision lines of
//! blocks and limits, failures, shadow differences, declines) spends from its own
//! budget, and the first line after a second that ran out says how many
//! were left out. What is left out of the log is still counted in the
//! metrics.

/// One family's budget, for one worker (a worker is one thread).
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    second: u64,
    used: u32,
    skipped: u64,
}

impl LogBudget {
    pub const fn new(per_second: u32) -> Self {
        LogBudget {
            per_second,
            second: 0,
            used: 0,
            skipped: 0,
        }
    }

    /// Whether a line may be written at `now_secs`: `Some(n)` with how many
    /// lines of the family were left out since the last one written, or
    /// `None` when this one is to be left out (and is counted as such).
    pub fn allow(&mut self, now_secs: u64) -> Option<u64> {
        if now_secs != self.second {
            self.second = now_secs;
            self.used = 0;
        }
        if self.used >= self.per_second {
            self.skipped += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.skipped))
    }
}

/// The per-request log line families, each with its own budget a second
/// in each worker (`GRAFT_LOG_*` in the ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFamily {
    /// Lines a decision carries (a block, a limit): warn.
    Decision = 0,
    /// A step that could not decide, a Rust error or panic: error.
    Failure = 1,
    /// A shadow difference: warn.
    Diff = 2,
    /// A Rust side that declined: info.
    Decline = 3,
    /// A Rust call over its step's time budget: warn.
    Budget = 4,
}

impl LogFamily {
    pub const ALL: [LogFamily; 5] = [
        LogFamily::Decision,
        LogFamily::Failure,
        LogFamily::Diff,
        LogFamily::Decline,
        LogFamily::Budget,
    ];
}

/// Lines a second each family may write, per worker.
pub const LOG_LINES_PER_SECOND: u32 = 10;

thread_local! {
    static BUDGETS: std::cell::RefCell<[LogBudget; LogFamily::ALL.len()]> = const {
        std::cell::RefCell::new(
            [const { LogBudget::new(LOG_LINES_PER_SECOND) }; LogFamily::ALL.len()],
        )
    };
}

/// Whether this thread (a worker) may write a line of `family` at
/// `now_secs`: as [`LogBudget::allow`], one budget per family.
pub fn allow(family: LogFamily, now_secs: u64) -> Option<u64> {
    BUDGETS.with_borrow_mut(|b| b[family as usize].allow(now_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_per_second_and_reports_what_it_left_out() {
        let mut b = LogBudget::new(3);
        assert_eq!(b.allow(10), Some(0));
        assert_eq!(b.allow(10), Some(0));
        assert_eq!(b.allow(10), Some(0));
        for _ in 0..1000 {
            assert_eq!(b.allow(10), None);
        }
        assert_eq!(b.allow(11), Some(1000), "the next second says how many");
        assert_eq!(b.allow(11), Some(0));
    }
}
