//! The Axum and Hyper counter examples, served on loopback and driven over real HTTP.

#[path = "../examples/axum_counter.rs"]
mod axum_counter;
#[path = "support/http.rs"]
mod http_support;
#[path = "../examples/hyper_counter.rs"]
mod hyper_counter;

use http_support::Browser;

async fn count_three_times(mut b: Browser) {
    for want in 1..=3 {
        let r = b.get("/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.trim(), want.to_string());
    }
    let mut other = Browser::new(b.base.trim_start_matches("http://").parse().unwrap());
    assert_eq!(other.get("/").await.body.trim(), "1");
}

#[tokio::test]
async fn the_axum_counter_counts_per_cookie() {
    let addr = http_support::serve(axum_counter::app()).await;
    count_three_times(Browser::new(addr)).await;
}

#[tokio::test]
async fn the_hyper_counter_counts_per_cookie() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hyper_counter::serve(listener));
    count_three_times(Browser::new(addr)).await;
}
