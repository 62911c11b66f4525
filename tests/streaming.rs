//! A 100 MB upload streams through the gateway without being buffered.
//! Alone in its own test binary so the process's peak memory is its own.

mod common;

use bytes::Bytes;
use common::*;

const CHUNK: usize = 1024 * 1024;
const CHUNKS: usize = 100;

/// The process's peak resident memory in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test]
async fn a_100_mb_upload_streams_through_with_bounded_memory() {
    let gw = TestGateway::start().await;
    let before = peak_rss_kib();
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let body = futures_util::stream::iter((0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let response = gw.api_client().post(gw.app("/public/upload")).body(reqwest::Body::wrap_stream(body)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let counted: serde_json::Value = response.json().await.unwrap();
    assert_eq!(counted["bytes"], (CHUNK * CHUNKS) as u64, "every byte arrived");
    let growth_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    // Client, gateway and upstream share this process: buffering the body
    // anywhere would add at least 100 MiB.
    assert!(growth_mib < 48, "peak memory grew by {growth_mib} MiB");
}
