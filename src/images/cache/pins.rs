//! Pins: a master in use by a request is never evicted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Keeps a master out of eviction while requests hold it.
#[derive(Debug)]
pub(super) struct Pin {
    name: String,
    pins: Arc<Mutex<HashMap<String, usize>>>,
}

impl Pin {
    pub(super) fn new(pins: &Arc<Mutex<HashMap<String, usize>>>, name: &str) -> Arc<Self> {
        *lock(pins).entry(name.to_string()).or_default() += 1;
        Arc::new(Self {
            name: name.to_string(),
            pins: Arc::clone(pins),
        })
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = lock(&self.pins);
        if let Some(n) = pins.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.name);
            }
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps stay valid if a holder panicked; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
