//! Single flight: concurrent requests for one image share one download.
//!
//! The first request for a key spawns the work as its own task (so a caller that gives up does
//! not cancel the download for the others) and everyone, the first included, waits for its
//! result on a watch channel.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::error::ImageError;

type Shared<T> = Option<Result<T, Arc<ImageError>>>;

pub struct Flights<T> {
    running: Mutex<HashMap<String, watch::Receiver<Shared<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// Runs `work` unless a flight for `key` is already running, and returns its result.
    /// The flag is true for the request that started the flight.
    pub async fn run<F, Fut>(self: &Arc<Self>, key: &str, work: F) -> (Result<T, ImageError>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ImageError>> + Send + 'static,
    {
        let (mut rx, leader) = {
            let mut running = self.lock();
            match running.get(key) {
                Some(rx) => (rx.clone(), false),
                None => {
                    let (tx, rx) = watch::channel(None);
                    running.insert(key.to_string(), rx.clone());
                    let fut = work();
                    let flights = Arc::clone(self);
                    let key = key.to_string();
                    tokio::spawn(async move {
                        let result = fut.await.map_err(Arc::new);
                        // Remove before publishing: a request arriving after this sees the
                        // finished master instead of a finished flight.
                        flights.lock().remove(&key);
                        tx.send_replace(Some(result));
                    });
                    (rx, true)
                }
            }
        };
        let result = match rx.wait_for(Option::is_some).await {
            Ok(done) => match done.as_ref() {
                Some(Ok(v)) => Ok(v.clone()),
                Some(Err(e)) => Err(ImageError::Shared(Arc::clone(e))),
                None => unreachable!("wait_for returned before the value was set"),
            },
            // The task ended without publishing: it panicked. Its entry is stale.
            Err(_) => {
                self.lock().remove(key);
                Err(ImageError::Download {
                    href: key.to_string(),
                    attempts: 1,
                    reason: "the download task ended unexpectedly".into(),
                })
            }
        };
        (result, leader)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<Shared<T>>>> {
        // A poisoned map only means a panic happened while it was held; the map itself is valid.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(Flights::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let flights = Arc::clone(&flights);
            let runs = Arc::clone(&runs);
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        Ok(7)
                    })
                    .await
            }));
        }
        let mut leaders = 0;
        for t in tasks {
            let (v, leader) = t.await.unwrap();
            assert_eq!(v.unwrap(), 7);
            leaders += leader as usize;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        // Finished flights are forgotten: the next call runs again.
        let (v, leader) = flights.run("k", || async { Ok(8) }).await;
        assert_eq!((v.unwrap(), leader), (8, true));
    }

    #[tokio::test]
    async fn errors_reach_every_caller() {
        let flights = Arc::new(Flights::<u32>::default());
        let a = flights.run("k", || async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Err(ImageError::Settings("boom".into()))
        });
        let b = flights.run("k", || async { Ok(1) });
        let ((ra, _), (rb, _)) = tokio::join!(a, b);
        assert_eq!(ra.unwrap_err().to_string(), "invalid cache settings: boom");
        assert_eq!(rb.unwrap_err().to_string(), "invalid cache settings: boom");
    }
}
