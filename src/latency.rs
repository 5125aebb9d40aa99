//! The one shape of latency histogram nvkv records: nanoseconds from 1 ns
//! to 60 s at three significant digits. The shard log's stages, the
//! shards' stages and the load generators all use it, so their
//! histograms add up and their percentiles mean the same.

use hdrhistogram::Histogram;

/// Most nanoseconds a histogram holds; longer latencies saturate at it.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// An empty latency histogram, in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("constant bounds are valid")
}
