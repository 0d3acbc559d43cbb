//! A minimal HTTP/1.1 client over loopback for the integration tests, with a hand-held cookie.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;

/// One response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The `Set-Cookie` header values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The value of the cookie `name` that this response sets, if any.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            let first = c.split(';').next()?;
            let (n, v) = first.split_once('=')?;
            (n.trim() == name).then(|| v.to_owned())
        })
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// A client that remembers one session cookie, as a browser would.
#[derive(Clone)]
pub struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    pub base: String,
    pub cookie_name: String,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Self {
        Browser {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
            cookie_name: "id".into(),
            cookie: None,
        }
    }

    /// Sends a request with the remembered cookie and remembers what the server sets.
    pub async fn send(&mut self, method: Method, path: &str, body: Option<&str>) -> Reply {
        self.try_send(method, path, body)
            .await
            .expect("request failed or timed out")
    }

    /// As [`Browser::send`], answering `None` when the request fails (server gone) or takes over 10 s.
    pub async fn try_send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Option<Reply> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("{}={}", self.cookie_name, c));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .unwrap();
        let reply = try_raw(&self.client, req).await?;
        for c in reply.set_cookies() {
            let first = c.split(';').next().unwrap();
            let (n, v) = first.split_once('=').unwrap();
            if n == self.cookie_name {
                if c.contains("Max-Age=0") || v.is_empty() {
                    self.cookie = None;
                } else {
                    self.cookie = Some(v.to_owned());
                }
            }
        }
        Some(reply)
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&mut self, path: &str, body: &str) -> Reply {
        self.send(Method::POST, path, Some(body)).await
    }
}

/// Sends one request as given.
pub async fn raw(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply {
    try_raw(client, req)
        .await
        .expect("request failed or timed out")
}

/// Sends one request, answering `None` when it fails or takes over 10 s.
pub async fn try_raw(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Option<Reply> {
    let res = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.ok()?.to_bytes();
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A fresh client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Serves an Axum router on a free loopback port; the server stops when the test's runtime ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}
