//! What one client may cost the server (`[limits]` in the settings): request
//! bodies counted as their bytes arrive (chunked ones too) with an idle
//! timeout, failed logins throttled per account and per client address, and
//! live output streams capped per user and in total. The header-read timeout
//! is the connection's (see [`super::serve`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use warp::http::StatusCode;
use warp::Filter;

use super::error::ApiError;
use crate::service::model::Id;
use crate::settings::Limits;

/// The peer address of a connection, put on each of its requests.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The client's address, when the request came through a socket.
pub fn client_addr() -> impl Filter<Extract = (Option<IpAddr>,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<ClientAddr>().map(|a: Option<ClientAddr>| a.map(|a| a.0.ip()))
}

/// Why a request body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// More bytes than the limit (declared, or received so far).
    TooLarge(u64),
    /// Nothing arrived for this many seconds.
    Stalled(u64),
    /// The connection failed mid-body.
    Broken(String),
}

impl BodyError {
    /// The answer to an API client.
    pub fn api_error(&self) -> ApiError {
        match self {
            BodyError::TooLarge(max) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {max} bytes"))
            }
            BodyError::Stalled(secs) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body stalled: nothing arrived for {secs} seconds"),
            ),
            BodyError::Broken(e) => ApiError::bad(format!("the request body could not be read: {e}")),
        }
    }
}

/// The request body, read up to `max` bytes counted as they arrive (a
/// declared Content-Length above it is refused before reading), giving up
/// when nothing arrives for `idle`.
pub fn body(
    max: u64,
    idle: Duration,
) -> impl Filter<Extract = (Result<Bytes, BodyError>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(move |length: Option<u64>, stream| read_limited(length, stream, max, idle))
}

async fn read_limited<S, B>(length: Option<u64>, stream: S, max: u64, idle: Duration) -> Result<Bytes, BodyError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if length.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge(max));
    }
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(BodyError::Stalled(idle.as_secs())),
            Ok(None) => return Ok(body.freeze()),
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e.to_string())),
            Ok(Some(Ok(mut chunk))) => {
                if (body.len() + chunk.remaining()) as u64 > max {
                    return Err(BodyError::TooLarge(max));
                }
                while chunk.has_remaining() {
                    let part = chunk.chunk();
                    body.put_slice(part);
                    let n = part.len();
                    chunk.advance(n);
                }
            }
        }
    }
}

/// Failed logins in one window, for one key.
struct Window {
    started: Instant,
    count: u32,
}

/// Keys kept before expired ones are swept out.
const SWEEP_AT: usize = 10_000;
/// Keys kept at most (about 100 bytes each); past it new accounts are not counted, addresses still are.
const MAX_KEYS: usize = 200_000;

/// Failed logins per account and per client address, over a fixed window.
/// An attempt counts from its start (so a flood of simultaneous guesses is
/// counted before any is checked) and is taken back when it succeeds.
pub struct LoginThrottle {
    per_account: u32,
    per_address: u32,
    window: Duration,
    accounts: Mutex<HashMap<String, Window>>,
    addresses: Mutex<HashMap<IpAddr, Window>>,
}

/// A login refused before its password is looked at.
#[derive(Debug)]
pub struct Throttled {
    /// Whole seconds until a login may be tried again (at least 1).
    pub retry_after: u64,
    /// Which limit: the account's or the address's.
    pub message: String,
}

impl Throttled {
    /// 429 with a message; the caller adds `Retry-After`.
    pub fn api_error(&self) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, self.message.clone())
    }
}

/// A login attempt under way, counted as failed unless [`LoginAttempt::succeeded`].
pub struct LoginAttempt<'a> {
    throttle: &'a LoginThrottle,
    account: String,
    address: Option<IpAddr>,
}

impl LoginAttempt<'_> {
    /// The password was right: the account starts afresh, and the attempt no
    /// longer counts against the address.
    pub fn succeeded(self) {
        self.throttle.accounts.lock().expect("throttle lock").remove(&self.account);
        if let Some(ip) = self.address {
            if let Some(w) = self.throttle.addresses.lock().expect("throttle lock").get_mut(&ip) {
                w.count = w.count.saturating_sub(1);
            }
        }
    }
}

fn refusal<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Window>,
    key: &K,
    limit: u32,
    window: Duration,
    now: Instant,
) -> Option<u64> {
    let w = map.get(key)?;
    let ends = w.started + window;
    if now >= ends || w.count < limit {
        return None;
    }
    Some((ends - now).as_secs_f64().ceil().max(1.0) as u64)
}

fn count<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Window>, key: K, window: Duration, now: Instant, new_ok: bool) {
    if map.len() >= SWEEP_AT {
        map.retain(|_, w| now < w.started + window);
    }
    if !map.contains_key(&key) && (!new_ok || map.len() >= MAX_KEYS) {
        return;
    }
    let w = map.entry(key).or_insert(Window { started: now, count: 0 });
    if now >= w.started + window {
        *w = Window { started: now, count: 0 };
    }
    w.count += 1;
}

impl LoginThrottle {
    /// From the settings.
    pub fn new(limits: &Limits) -> Self {
        LoginThrottle {
            per_account: limits.login_failures_per_account,
            per_address: limits.login_failures_per_address,
            window: Duration::from_secs(limits.login_window_seconds),
            accounts: Mutex::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a login attempt, or refuses it when the account or the address
    /// has used up its failures in the current window.
    pub fn begin(&self, username: &str, address: Option<IpAddr>) -> Result<LoginAttempt<'_>, Throttled> {
        let now = Instant::now();
        // Long names are one key: nobody gets a fresh count by adding characters.
        let account: String = username.chars().take(128).collect();
        let mut accounts = self.accounts.lock().expect("throttle lock");
        let mut addresses = self.addresses.lock().expect("throttle lock");
        if let Some(ip) = address {
            if let Some(secs) = refusal(&mut addresses, &ip, self.per_address, self.window, now) {
                return Err(Throttled {
                    retry_after: secs,
                    message: format!(
                        "too many failed logins from this address ({} in {} seconds): try again in {secs} seconds",
                        self.per_address,
                        self.window.as_secs()
                    ),
                });
            }
        }
        if let Some(secs) = refusal(&mut accounts, &account, self.per_account, self.window, now) {
            return Err(Throttled {
                retry_after: secs,
                message: format!(
                    "too many failed logins for this account ({} in {} seconds): try again in {secs} seconds",
                    self.per_account,
                    self.window.as_secs()
                ),
            });
        }
        count(&mut accounts, account.clone(), self.window, now, true);
        if let Some(ip) = address {
            count(&mut addresses, ip, self.window, now, true);
        }
        Ok(LoginAttempt { throttle: self, account, address })
    }
}

/// Live output streams open now, per user and in total.
pub struct LiveStreams {
    per_user: usize,
    total: usize,
    open: Mutex<(usize, HashMap<Option<Id>, usize>)>,
}

/// One open live stream; dropping it frees its place.
pub struct LiveSlot {
    streams: std::sync::Arc<LiveStreams>,
    user: Option<Id>,
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().expect("live lock");
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.user);
            }
        }
    }
}

impl LiveStreams {
    /// From the settings.
    pub fn new(limits: &Limits) -> std::sync::Arc<Self> {
        std::sync::Arc::new(LiveStreams {
            per_user: limits.live_streams_per_user,
            total: limits.live_streams_total,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for one more stream of `user` (None: anonymous, counted as one
    /// user), or 503 saying which limit is reached.
    pub fn acquire(self: &std::sync::Arc<Self>, user: Option<Id>) -> Result<LiveSlot, ApiError> {
        let mut open = self.open.lock().expect("live lock");
        let mine = open.1.get(&user).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many live streams: {} per user are open (limits.live_streams_per_user); close one, \
                     or read GET /api/v1/builds/ID/output",
                    self.per_user
                ),
            ));
        }
        if open.0 >= self.total {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many live streams: {} are open in all (limits.live_streams_total); try again later, \
                     or read GET /api/v1/builds/ID/output",
                    self.total
                ),
            ));
        }
        open.0 += 1;
        *open.1.entry(user).or_insert(0) += 1;
        Ok(LiveSlot { streams: self.clone(), user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(account: u32, address: u32) -> Limits {
        Limits { login_failures_per_account: account, login_failures_per_address: address, ..Limits::default() }
    }

    #[test]
    fn failures_are_counted_per_account_and_address_and_success_starts_afresh() {
        let t = LoginThrottle::new(&limits(2, 3));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        drop(t.begin("alice", Some(a)).unwrap());
        drop(t.begin("alice", Some(b)).unwrap());
        let refused = t.begin("alice", Some(b)).err().expect("the account is over its limit");
        assert!(refused.message.contains("this account") && refused.retry_after > 0, "{refused:?}");
        // Another account from `a`: the address has one failure left, then none.
        drop(t.begin("bob", Some(a)).unwrap());
        t.begin("carol", Some(a)).unwrap().succeeded();
        drop(t.begin("carol", Some(a)).unwrap());
        assert!(t.begin("dave", Some(a)).err().expect("address over").message.contains("this address"));
        // A success clears the account.
        let t = LoginThrottle::new(&limits(2, 100));
        drop(t.begin("erin", None).unwrap());
        t.begin("erin", None).unwrap().succeeded();
        drop(t.begin("erin", None).unwrap());
        assert!(t.begin("erin", None).is_ok());
    }

    #[test]
    fn live_streams_are_capped_per_user_and_in_total() {
        let live = LiveStreams::new(&Limits { live_streams_per_user: 1, live_streams_total: 2, ..Limits::default() });
        let one = live.acquire(Some(1)).unwrap();
        assert!(live.acquire(Some(1)).err().unwrap().message.contains("per user"));
        let _two = live.acquire(Some(2)).unwrap();
        assert!(live.acquire(Some(3)).err().unwrap().message.contains("in all"));
        drop(one);
        assert!(live.acquire(Some(3)).is_ok());
    }
}
