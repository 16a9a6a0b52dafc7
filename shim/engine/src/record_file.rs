//! The files a module's log phase writes its records to (request_log's),
//! one implementation for every server: each line appended with one
//! `write` to a file opened once per thread and path (`O_APPEND`, so that
//! lines from several threads or processes never interleave), created
//! mode 0640, as nginx writes its access logs (blocking, as theirs are).
//! A file is opened again after a failed write (rotated, removed). Where a
//! file may be is the server's check, at load (`Config::check_files`).
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

thread_local! {
    /// This thread's open record files, by path.
    static FILES: RefCell<HashMap<Arc<str>, std::fs::File>> = RefCell::new(HashMap::new());
}

/// Appends one line (and its newline) to the record file at `path`.
pub fn append(path: &Arc<str>, line: &str) -> std::io::Result<()> {
    FILES.with_borrow_mut(|files| {
        if !files.contains_key(path) {
            // Records carry request text: a file graft creates is its
            // owner's and its group's to read, never every local user's.
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&**path)?;
            files.insert(path.clone(), f);
        }
        let Some(f) = files.get_mut(path) else {
            return Err(std::io::Error::other("the record file was not kept"));
        };
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let r = f.write_all(&buf);
        if r.is_err() {
            // Opened again next time (a rotated or removed file).
            files.remove(path);
        }
        r
    })
}

/// Runs `step`'s log phase for a request its server served, and writes
/// the record: `Err` why no record was written when one was due (the
/// module's error or panic, a file that cannot be written), for the
/// server to count and log as the step's failure. A record over the
/// module's rate is counted `dropped`.
pub fn log_step(
    step: &crate::Step,
    req: &dyn graft_contract::RequestView,
    done: &graft_contract::Completed<'_>,
) -> Result<(), String> {
    use graft_contract::LogOutcome;
    match crate::run_log_phase(step, req, done)? {
        LogOutcome::NotSampled => Ok(()),
        LogOutcome::Dropped { .. } => {
            step.counters.add(crate::Count::Dropped);
            Ok(())
        }
        LogOutcome::Write { path, line } => {
            append(&path, &line).map_err(|e| format!("cannot write to {path}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_and_a_file_that_cannot_be_opened_is_an_error() {
        let dir = std::env::temp_dir().join(format!("graft-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path: Arc<str> = dir.join("r.jsonl").to_str().unwrap().into();
        append(&path, "{\"a\":1}").unwrap();
        append(&path, "{\"a\":2}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&*path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        let mode = std::fs::metadata(&*path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o640
        );
        let missing: Arc<str> = dir.join("no/such/dir.jsonl").to_str().unwrap().into();
        assert!(append(&missing, "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
