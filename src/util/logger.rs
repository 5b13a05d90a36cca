//! The CLI's logger: warnings and errors from anywhere in Kiln go to stderr
//! as `kiln: warning: …`. `KILN_LOG` (error, warn, info, debug, trace)
//! sets the level; the default is warn.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let what = match r.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        eprintln!("kiln: {what}: {}", r.args());
    }
    fn flush(&self) {}
}

/// Installs the logger (a second call does nothing).
pub fn init() {
    static LOGGER: Stderr = Stderr;
    let level = match std::env::var("KILN_LOG").as_deref() {
        Ok("error") => LevelFilter::Error,
        Ok("info") => LevelFilter::Info,
        Ok("debug") => LevelFilter::Debug,
        Ok("trace") => LevelFilter::Trace,
        Ok("off") => LevelFilter::Off,
        _ => LevelFilter::Warn,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
