//! Wall-clock time in seconds since the epoch, as channels_redis scores
//! messages and group memberships in Redis; the in-memory layer dates its
//! memberships the same way.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
