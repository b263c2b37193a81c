//! A bandwidth limit: each piece of data reserves its time on a shared
//! schedule, and waits until then, so a target's transfers together never
//! average more than the rate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Pace {
    bytes_per_sec: f64,
    next: Arc<Mutex<Option<Instant>>>,
}

impl Pace {
    pub fn new(bytes_per_sec: u64) -> Pace {
        Pace {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next: Arc::new(Mutex::new(None)),
        }
    }

    /// How long to wait before sending `bytes`.
    fn reserve(&self, bytes: u64) -> Duration {
        let now = Instant::now();
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = next.filter(|t| *t > now).unwrap_or(now);
        *next = Some(start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec));
        start - now
    }

    pub async fn take(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    pub fn take_blocking(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_follow_the_rate() {
        let pace = Pace::new(1 << 20);
        assert!(pace.reserve(1 << 20).is_zero());
        let second = pace.reserve(1 << 20);
        assert!(second > Duration::from_millis(900) && second <= Duration::from_secs(1));
        let third = pace.reserve(512 << 10);
        assert!(third > Duration::from_millis(1900) && third <= Duration::from_secs(2));
    }
}
