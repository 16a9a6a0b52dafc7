//! What graft-bench (`make bench`, `make bench-smoke`) checks around its
//! measurements: that each nginx it starts is sized for the configuration
//! it runs (`sizing`), and that each variant did the work it names
//! (`work`). A run that fails either measures nothing, so it stops.
pub mod sizing;
pub mod work;
