//! Logging: every line goes to stderr (the serial console in a ramdisk) and into a bounded
//! in-memory copy that `log.collect_system_logs` hands to the conductor (a ramdisk has no
//! journal to read it back from).

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Bytes of log kept; older lines are dropped first.
const KEEP: usize = 4 << 20;

/// The in-memory copy of the log.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn append(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend_from_slice(bytes);
        if buf.len() > KEEP {
            let cut = buf.len() - KEEP / 2;
            let cut = buf[cut..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(cut, |p| cut + p + 1);
            buf.drain(..cut);
        }
    }

    /// A copy of what is kept.
    pub fn snapshot(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One log record's writer: stderr and the buffer.
pub struct Tee(LogBuffer);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        // The console may be gone or slow; losing a line there must not fail the agent.
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = Tee;
    fn make_writer(&'a self) -> Tee {
        Tee(self.clone())
    }
}

/// Installs the global subscriber (`RUST_LOG` filters; default info, debug with `ipa-debug`).
pub fn install(debug: bool) -> LogBuffer {
    let buffer = LogBuffer::default();
    let default = if debug {
        "debug,hyper=info,rustls=info,reqwest=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(buffer.clone())
        .try_init();
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_keeps_the_newest_whole_lines() {
        let b = LogBuffer::default();
        let line = vec![b'x'; 999];
        for _ in 0..(KEEP / 1000 + 10) {
            b.append(&line);
            b.append(b"\n");
        }
        let kept = b.snapshot();
        assert!(kept.len() <= KEEP);
        assert!(kept.len() >= KEEP / 2);
        assert_eq!(kept.first(), Some(&b'x'));
        assert_eq!(kept.len() % 1000, 0);
    }
}
