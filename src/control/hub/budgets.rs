//! Per-node token buckets (`governor`'s keyed GCRA limiter: well-kept, lock-light, and its
//! table is trimmed with `retain_recent`) for what a node can make the hub do: presence
//! updates, recorded facts, stream opens and one-shot full maps (`core::limits`).

use crate::core::ids::NodeId;
use crate::core::limits;
use governor::clock::Clock as _;
use std::num::NonZeroU32;
use std::time::Duration;

/// One token bucket per node.
pub(super) type NodeLimiter = governor::DefaultKeyedRateLimiter<NodeId>;

pub(super) fn limiter(period: Duration, burst: u32) -> NodeLimiter {
    let quota = governor::Quota::with_period(period)
        .expect("a non-zero period")
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    governor::RateLimiter::keyed(quota)
}

/// Whether `node` may do one more of what `limiter` counts; if not, how long until it may.
pub(super) fn admit(limiter: &NodeLimiter, node: NodeId) -> Result<(), Duration> {
    limiter.check_key(&node).map_err(|not_until| {
        not_until.wait_time_from(governor::clock::DefaultClock::default().now())
    })
}

/// Per-node budgets for the map requests that cost the hub an O(peers) render (M6).
pub(super) struct RequestLimits {
    /// Non-streaming full maps (`limits::FULL_MAP_*`).
    pub full_maps: NodeLimiter,
    /// Stream (re)opens (`limits::STREAM_OPEN_*`).
    pub stream_opens: NodeLimiter,
}

impl RequestLimits {
    pub fn new() -> RequestLimits {
        RequestLimits {
            full_maps: limiter(
                Duration::from_secs(limits::FULL_MAP_PERIOD_SECS),
                limits::FULL_MAP_BURST,
            ),
            stream_opens: limiter(
                Duration::from_secs(limits::STREAM_OPEN_PERIOD_SECS),
                limits::STREAM_OPEN_BURST,
            ),
        }
    }

    /// Forgets the idle nodes' buckets.
    pub fn trim(&self) {
        self.full_maps.retain_recent();
        self.stream_opens.retain_recent();
    }
}
