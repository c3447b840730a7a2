//! Remote shards, streamed: `http(s)://`, `s3://`, `gs://` and `pipe:` URLs → a byte stream that
//! survives dropped connections.
//!
//! A shard is read front to back as it arrives (no download first). When the connection fails
//! part-way (a reset, a timeout, a body cut short of its `Content-Length`), the reader waits
//! (exponential backoff) and asks again from the byte it had reached (`Range: bytes=N-`), so
//! the tar reader above never sees the gap; a server that ignores `Range` is read from the
//! start and the first N bytes skipped. Only after the last retry does the read fail, with an
//! error that names the URL, the byte reached and the attempts made. Answers that retrying
//! cannot change (404, 403, 400) fail at once.
//!
//! - `s3://`, `gs://`, `az://`, `abfs(s)://`: object stores, through Apache `object_store` with
//!   each cloud's credential chain (see `objstore.rs`); resumed with ranged GETs.
//! - `pipe:COMMAND`: the standard output of `sh -c COMMAND` (webdataset's convention, e.g.
//!   `pipe:aws s3 cp s3://b/k -`); a retry runs it again and skips what was read; a non-zero
//!   exit status is an error carrying the command's stderr.
//!
//! Retries: `WEBLI_IO_RETRIES` (default 5) after the first attempt, waiting
//! `WEBLI_IO_RETRY_BACKOFF` seconds (default 0.5) doubled each time, up to 30 s.
//! HTTP uses `ureq` (blocking, rustls); object stores `object_store`; only the resume logic is
//! ours, as no client resumes a streamed body by itself.

use std::io::{self, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Is `path` a remote URL (or a `pipe:` command) rather than a local path?
pub fn is_remote(path: &str) -> bool {
    path.starts_with("pipe:") || ["http://", "https://"].iter().any(|p| path.starts_with(p)) || crate::objstore::is_object_url(path)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// How often and how patiently to retry, and how slow a connection may be.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub retries: u32,
    pub backoff: Duration,
    /// Minimum progress: a connection that gives fewer than `min_rate` bytes per second over
    /// `rate_window` is dropped and resumed (a server trickling a byte every 20 s would
    /// otherwise hold the stream forever; no read timeout catches it). 0: no minimum.
    pub min_rate: f64,
    pub rate_window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { retries: 5, backoff: Duration::from_millis(500), min_rate: 1024.0, rate_window: Duration::from_secs(30) }
    }
}

/// Seconds to wait for a connection (`WEBLI_IO_CONNECT_TIMEOUT`, 15) and for each read
/// (`WEBLI_IO_READ_TIMEOUT`, 60).
pub(crate) fn timeouts() -> (Duration, Duration) {
    (
        Duration::from_secs_f64(env_f64("WEBLI_IO_CONNECT_TIMEOUT", 15.0).clamp(0.05, 3600.0)),
        Duration::from_secs_f64(env_f64("WEBLI_IO_READ_TIMEOUT", 60.0).clamp(0.05, 3600.0)),
    )
}

impl RetryPolicy {
    /// From the environment: `WEBLI_IO_RETRIES` (5), `WEBLI_IO_RETRY_BACKOFF` (0.5 s, doubling),
    /// `WEBLI_IO_MIN_RATE` (1024 bytes/s) over `WEBLI_IO_RATE_WINDOW` (30 s).
    pub fn from_env() -> Self {
        Self {
            retries: env_f64("WEBLI_IO_RETRIES", 5.0).max(0.0) as u32,
            backoff: Duration::from_secs_f64(env_f64("WEBLI_IO_RETRY_BACKOFF", 0.5).clamp(0.0, 30.0)),
            min_rate: env_f64("WEBLI_IO_MIN_RATE", 1024.0).max(0.0),
            rate_window: Duration::from_secs_f64(env_f64("WEBLI_IO_RATE_WINDOW", 30.0).clamp(0.05, 3600.0)),
        }
    }

    fn wait(&self, attempt: u32) -> Duration {
        (self.backoff * 2u32.saturating_pow(attempt.saturating_sub(1).min(16))).min(Duration::from_secs(30))
    }
}

/// Opens the resource at a byte offset: the body from there, and its total length when known.
type Opener = Box<dyn FnMut(u64) -> io::Result<(Box<dyn Read + Send>, Option<u64>)> + Send>;

/// A byte stream that reconnects from where it stopped (see the module docs).
pub struct Resumable {
    what: String,
    open: Opener,
    inner: Option<Box<dyn Read + Send>>,
    offset: u64,
    total: Option<u64>,
    /// A bounded read (one sample, by the shard index): the body ends here, not at `total`.
    end: Option<u64>,
    policy: RetryPolicy,
    /// Failed attempts since the last byte read (the retry budget is per stall, so a long
    /// shard on a flaky link still finishes as long as each attempt makes progress).
    failures: u32,
    /// Reconnections made, shared with whoever counts them.
    retries: Arc<AtomicU64>,
    /// The current minimum-progress window: when it began, and the bytes read since.
    window: (std::time::Instant, u64),
    /// Windows in a row under the minimum rate.
    slow_windows: u32,
}

/// Redirects followed per request (only to http(s)).
const MAX_REDIRECTS: usize = 5;

/// Answers that say the credentials or the configuration are wrong (S3, GCS and Azure error
/// codes): no retry and no other shard can mend them, so they end the stream at once.
pub const REFUSALS: [&str; 16] = [
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidToken",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "AuthorizationHeaderMalformed",
    "AuthorizationQueryParametersError",
    "PermanentRedirect",
    "IllegalLocationConstraintException",
    "incorrectly configured region",
    "AccessDenied",
    "AllAccessDisabled",
    "AuthenticationFailed",
    "AuthorizationFailure",
    "invalid_grant",
];

/// An error that ends the stream: access refused (401, 403, a refusal code above).
pub fn is_fatal(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

/// Errors that another attempt cannot mend.
fn is_permanent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput)
}

impl Resumable {
    fn new(what: String, open: Opener, policy: RetryPolicy, retries: Arc<AtomicU64>) -> Self {
        Self {
            what,
            open,
            inner: None,
            offset: 0,
            total: None,
            end: None,
            policy,
            failures: 0,
            retries,
            window: (std::time::Instant::now(), 0),
            slow_windows: 0,
        }
    }

    fn give_up(&self, e: io::Error) -> io::Error {
        let attempts = self.failures;
        io::Error::new(
            e.kind(),
            format!("{}: {e} (at byte {}, after {attempts} attempt{})", self.what, self.offset, if attempts == 1 { "" } else { "s" }),
        )
    }
}

impl crate::cache::BodyLen for Resumable {
    /// The object's length as the server announced it (None without a Content-Length).
    fn body_len(&self) -> Option<u64> {
        self.total
    }
}

impl Read for Resumable {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let failure = match self.inner.as_mut() {
                None => match (self.open)(self.offset) {
                    Ok((r, total)) => {
                        self.inner = Some(r);
                        if total.is_some() {
                            self.total = total;
                        }
                        continue;
                    }
                    Err(e) => e,
                },
                // A bounded read ends at its end, whatever the server would send on.
                Some(_) if self.end.is_some_and(|e| self.offset >= e) => return Ok(0),
                Some(r) => match r.read(buf) {
                    Ok(0) => match self.end.into_iter().chain(self.total).min() {
                        Some(t) if self.offset < t => {
                            io::Error::new(io::ErrorKind::UnexpectedEof, format!("connection closed at byte {} of {t}", self.offset))
                        }
                        _ => return Ok(0),
                    },
                    Ok(n) => {
                        let n = match self.end {
                            Some(e) => n.min((e - self.offset) as usize),
                            None => n,
                        };
                        self.offset += n as u64;
                        self.window.1 += n as u64;
                        self.failures = 0;
                        let elapsed = self.window.0.elapsed();
                        if elapsed >= self.policy.rate_window {
                            let rate = self.window.1 as f64 / elapsed.as_secs_f64();
                            self.window = (std::time::Instant::now(), 0);
                            if rate < self.policy.min_rate {
                                // Too slow: keep these bytes, drop the connection and resume from
                                // here; after `retries` slow windows in a row, give up.
                                self.slow_windows += 1;
                                self.retries.fetch_add(1, Ordering::Relaxed);
                                self.inner = if self.slow_windows > self.policy.retries {
                                    Some(Box::new(Slow(format!("{rate:.0} bytes/s over {:.0} s", elapsed.as_secs_f64()))))
                                } else {
                                    None
                                };
                            } else {
                                self.slow_windows = 0;
                            }
                        }
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => e,
                },
            };
            // Failed to connect, or the connection failed part-way: try again from `offset`.
            self.inner = None;
            self.failures += 1;
            if is_permanent(&failure) || self.failures > self.policy.retries || self.slow_windows > self.policy.retries {
                return Err(self.give_up(failure));
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(self.policy.wait(self.failures));
        }
    }
}

/// A connection given up for being too slow: every read fails, saying so.
struct Slow(String);

impl Read for Slow {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the connection stayed under the minimum rate ({}; WEBLI_IO_MIN_RATE)", self.0),
        ))
    }
}

fn agent() -> ureq::Agent {
    // Redirects are followed by hand (`http_open`): only to http(s), never to file:// or other
    // schemes the client might mishandle.
    let (connect, read) = timeouts();
    ureq::AgentBuilder::new().timeout_connect(connect).timeout_read(read).redirects(0).build()
}

/// A URL fit for a message or a log: without its query string (a presigned URL's signature and
/// session token) and without user:password. Secrets never reach a message.
pub fn redact(url: &str) -> String {
    let parsed = std::panic::catch_unwind(|| url::Url::parse(url)).unwrap_or(Err(url::ParseError::InvalidDomainCharacter));
    match parsed {
        Ok(mut u) if u.has_host() => {
            let had_query = u.query().is_some();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            let mut s = u.to_string();
            if had_query {
                s.push_str("?<redacted>");
            }
            s
        }
        _ => url.split(['?', '#']).next().unwrap_or("").to_string() + if url.contains('?') { "?<redacted>" } else { "" },
    }
}

/// `text` with every occurrence of `url` (and its query string) replaced by its redacted form.
pub(crate) fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact(url));
    if let Some((_, query)) = url.split_once('?') {
        out = out.replace(query, "<redacted>");
    }
    out
}

fn http_error(url: &str, e: ureq::Error) -> io::Error {
    match e {
        ureq::Error::Status(code, _) => {
            let kind = match code {
                404 | 410 => io::ErrorKind::NotFound,
                401 | 403 => io::ErrorKind::PermissionDenied,
                400 | 405 | 416 => io::ErrorKind::InvalidInput,
                _ => io::ErrorKind::Other, // 5xx, 429: worth another try
            };
            io::Error::new(kind, format!("HTTP {code} for {}", redact(url)))
        }
        ureq::Error::Transport(t) => io::Error::new(io::ErrorKind::ConnectionAborted, scrub(&t.to_string(), url)),
    }
}

/// GET `url` from byte `offset` on (to `end`, exclusive, when given: one sample's bytes).
/// A resumed or seeking read found another version of the object than the one first read (or
/// indexed): the shard fails, counted as `shard_changed`, never spliced from two versions.
pub const CHANGED: &str = "the object changed since it was first read";

/// A resumed read whose answer does not continue the bytes read so far (a `206` for another
/// range): counted as `shard_changed` too.
pub const NOT_CONTINUED: &str = "the answer does not continue the bytes read so far";

/// Did this error come from a read that found another version of the object ([`CHANGED`]), or
/// an answer that does not continue it ([`NOT_CONTINUED`])?
pub fn is_changed(e: &io::Error) -> bool {
    let m = e.to_string();
    m.contains(CHANGED) || m.contains(NOT_CONTINUED)
}

/// Is `v` a strong ETag (`"..."`), which `If-Match` compares byte for byte? Weak ones (`W/"..."`)
/// never match under `If-Match`, and Last-Modified dates are not ETags.
fn strong_etag(v: &str) -> bool {
    v.starts_with('"') && v.ends_with('"') && v.len() >= 2
}

/// GET `url` from byte `offset` on (to `end`, exclusive, when given: one sample's bytes).
/// `known`: the object's ETag from an earlier answer (or from the shard index); a read past the
/// first is conditional on it (`If-Match`), and an answer with another ETag, or a range that does
/// not start where it was asked, is an error, not bytes of another version. The first answer's
/// ETag is kept in `known` for the reads after it.
fn http_open(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, String)],
    offset: u64,
    end: Option<u64>,
    known: &mut Option<String>,
) -> io::Result<(Box<dyn Read + Send>, Option<u64>)> {
    let mut target = url.to_string();
    let mut resp = None;
    for _ in 0..=MAX_REDIRECTS {
        let mut req = agent.get(&target);
        // Credentials go to the host they were meant for, not to where a redirect points.
        if target == url {
            for (k, v) in headers {
                req = req.set(k, v);
            }
        }
        // The bytes as stored: a compressed transfer would make offsets those of another body.
        req = req.set("Accept-Encoding", "identity");
        match end {
            Some(end) => req = req.set("Range", &format!("bytes={offset}-{}", end.max(offset + 1) - 1)),
            None if offset > 0 => req = req.set("Range", &format!("bytes={offset}-")),
            None => {}
        }
        if let Some(v) = known.as_deref().filter(|v| strong_etag(v)) {
            req = req.set("If-Match", v);
        }
        let r = match req.call() {
            Err(ureq::Error::Status(412, _)) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {CHANGED} (HTTP 412 to If-Match)", redact(url))))
            }
            r => r.map_err(|e| http_error(&target, e))?,
        };
        if !(300..400).contains(&r.status()) {
            resp = Some(r);
            break;
        }
        target = redirect_target(&target, r.header("Location").unwrap_or_default())?;
    }
    let resp =
        resp.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: more than {MAX_REDIRECTS} redirects", redact(url))))?;
    let etag = resp.header("ETag").map(str::to_string);
    match (known.as_deref(), etag.as_deref()) {
        (Some(k), Some(e)) if strong_etag(k) && strong_etag(e) && k != e => {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {CHANGED} (ETag {k} then {e})", redact(url))));
        }
        (None, Some(_)) => *known = etag,
        _ => {}
    }
    let length: Option<u64> = resp.header("Content-Length").and_then(|v| v.trim().parse().ok());
    if (offset > 0 || end.is_some()) && resp.status() == 206 {
        let range = resp.header("Content-Range").unwrap_or_default();
        if content_range_start(range) != Some(offset) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {NOT_CONTINUED} (asked for bytes from {offset}, the answer holds {range:?})", redact(url)),
            ));
        }
        let total = content_range_total(range);
        return Ok((resp.into_reader(), total.or(length.map(|l| l + offset))));
    }
    let mut body = resp.into_reader();
    if offset > 0 {
        // The server sent the whole body again: skip what we already have.
        let skipped = io::copy(&mut (&mut body).take(offset), &mut io::sink())?;
        if skipped < offset {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} is shorter than before", redact(url))));
        }
    }
    Ok((body, length))
}

/// Where a redirect from `current` to `location` leads: an absolute http(s) URL, or an error
/// (another scheme such as `file:`, or a Location that does not parse). A server's answer.
pub fn redirect_target(current: &str, location: &str) -> io::Result<String> {
    // `url` 2.5.8 can panic on a crafted relative reference (an assertion in its path parser,
    // found by fuzz/remote_response): a server's Location is hostile input, so a panic there is
    // a bad Location like any other.
    let joined = std::panic::catch_unwind(|| url::Url::parse(current).and_then(|base| base.join(location))).ok().and_then(Result::ok);
    let next = joined
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("a redirect from {} with a bad Location", redact(current))))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput, // this server's answer, not the credentials: the shard's problem only
            format!("{} redirects to a {}: URL; only http(s) redirects are followed", redact(current), next.scheme()),
        ));
    }
    Ok(next.to_string())
}

/// The first byte in a `Content-Range: bytes START-END/TOTAL` header (a server's answer), or
/// None (`*`, garbage).
pub fn content_range_start(value: &str) -> Option<u64> {
    value.trim().strip_prefix("bytes")?.trim().split('-').next()?.trim().parse().ok()
}

/// The total length in a `Content-Range: bytes START-END/TOTAL` header (a server's answer),
/// or None (`*`, garbage).
pub fn content_range_total(value: &str) -> Option<u64> {
    value.rsplit('/').next()?.trim().parse().ok()
}

/// A `pipe:` command's output; at its end, a non-zero exit status is an error.
struct PipeReader {
    child: Child,
    cmd: String,
    done: bool,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        #[cfg(target_os = "linux")]
        if let Some(out) = self.child.stdout.as_ref() {
            // The read timeout holds for commands too: a command that hangs is given up.
            use std::os::fd::AsRawFd;
            let mut fd = libc::pollfd { fd: out.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = timeouts().1.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd, for the duration of the call.
            let ready = unsafe { libc::poll(&mut fd, 1, ms) };
            if ready == 0 {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("pipe:{} gave nothing for {} ms", self.cmd, ms)));
            }
        }
        let n = self.child.stdout.as_mut().map_or(Ok(0), |o| o.read(buf))?;
        if n == 0 {
            self.done = true;
            let status = self.child.wait()?;
            if !status.success() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let tail: String = err.trim().chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
                return Err(io::Error::other(format!("pipe:{} exited with {status}: {tail}", self.cmd)));
            }
        }
        Ok(n)
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn pipe_open(cmd: &str, offset: u64) -> io::Result<(Box<dyn Read + Send>, Option<u64>)> {
    if offset > 0 {
        // A command run again may print something else: its output is never resumed part-way,
        // where it would splice two runs into one sample.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("pipe:{cmd}: {NOT_CONTINUED} (a command's output cannot be resumed at byte {offset})"),
        ));
    }
    let child = Command::new("sh").arg("-c").arg(cmd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let r = PipeReader { child, cmd: cmd.to_string(), done: false };
    Ok((Box::new(r), None))
}

/// Open a remote shard as a resumable stream; `retries` counts the reconnections.
pub fn open_remote(url: &str, policy: RetryPolicy, retries: Arc<AtomicU64>) -> io::Result<Resumable> {
    open_remote_range(url, 0, None, policy, retries)
}

/// [`open_remote`] from byte `start` (a seek: HTTP `Range`, an object store's ranged GET; a
/// `pipe:` command's output is read through to it), up to `end` (exclusive) when given.
pub fn open_remote_range(url: &str, start: u64, end: Option<u64>, policy: RetryPolicy, retries: Arc<AtomicU64>) -> io::Result<Resumable> {
    open_remote_at(url, start, end, None, policy, retries)
}

/// [`open_remote_range`] of the version `validator` names (an ETag from the shard index): every
/// read of it is conditional on that version.
pub fn open_remote_at(
    url: &str,
    start: u64,
    end: Option<u64>,
    validator: Option<String>,
    policy: RetryPolicy,
    retries: Arc<AtomicU64>,
) -> io::Result<Resumable> {
    let opener: Opener = if let Some(cmd) = url.strip_prefix("pipe:") {
        let cmd = cmd.to_string();
        Box::new(move |offset| pipe_open(&cmd, offset))
    } else if crate::objstore::is_object_url(url) {
        let url = url.to_string();
        let mut known = validator;
        Box::new(move |offset| crate::objstore::open_object(&url, offset, end, &mut known))
    } else {
        let (target, headers): (String, Vec<(String, String)>) = (url.to_string(), vec![]);
        let agent = agent();
        let mut known = validator;
        Box::new(move |offset| http_open(&agent, &target, &headers, offset, end, &mut known))
    };
    let mut r = Resumable::new(redact(url), opener, policy, retries);
    r.offset = start;
    r.end = end;
    Ok(r)
}

/// A remote object's size and validator (ETag, else Last-Modified), without its body: an HTTP
/// `HEAD` (redirects followed to http(s) only), or an object store's metadata request.
pub fn stat_remote(url: &str) -> io::Result<(u64, Option<String>)> {
    if crate::objstore::is_object_url(url) {
        return crate::objstore::stat_object(url);
    }
    if url.starts_with("pipe:") {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "a pipe: command's output has no size"));
    }
    let agent = agent();
    let mut target = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let r = agent.head(&target).call().map_err(|e| http_error(&target, e))?;
        if (300..400).contains(&r.status()) {
            target = redirect_target(&target, r.header("Location").unwrap_or_default())?;
            continue;
        }
        let size = r.header("Content-Length").and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: no Content-Length in the answer to HEAD", redact(url)))
        })?;
        let validator = r.header("ETag").or_else(|| r.header("Last-Modified")).map(str::to_string);
        return Ok((size, validator));
    }
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: more than {MAX_REDIRECTS} redirects", redact(url))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that fails after `cut` bytes on each of its first `fails` openings.
    fn flaky(data: Vec<u8>, cut: usize, fails: u32) -> (Resumable, Arc<AtomicU64>) {
        let mut opened = 0u32;
        let opener: Opener = Box::new(move |offset| {
            opened += 1;
            let rest = data[offset as usize..].to_vec();
            let total = Some(data.len() as u64);
            if opened <= fails {
                let part = rest[..cut.min(rest.len())].to_vec();
                let err: Box<dyn Read + Send> = Box::new(io::Cursor::new(part).chain(FailingRead));
                Ok((err, total))
            } else {
                Ok((Box::new(io::Cursor::new(rest)), total))
            }
        });
        let n = Arc::new(AtomicU64::new(0));
        (Resumable::new("test://x".into(), opener, RetryPolicy { retries: 3, backoff: Duration::ZERO, ..Default::default() }, n.clone()), n)
    }

    struct FailingRead;
    impl Read for FailingRead {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer"))
        }
    }

    #[test]
    fn content_range_start_and_total() {
        assert_eq!(content_range_start("bytes 45056-92159/92160"), Some(45056));
        assert_eq!(content_range_total("bytes 45056-92159/92160"), Some(92160));
        assert_eq!(content_range_start("bytes */92160"), None);
        assert_eq!(content_range_start("garbage"), None);
        assert!(strong_etag("\"abc\"") && !strong_etag("W/\"abc\"") && !strong_etag("Mon, 30 Nov 2026"));
        assert!(is_changed(&io::Error::other(format!("x: {CHANGED}"))) && !is_changed(&io::Error::other("reset")));
    }

    #[test]
    fn resumes_where_the_connection_dropped() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (mut r, n) = flaky(data.clone(), 3000, 3);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(n.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn gives_up_after_the_last_retry_with_a_clear_error() {
        // 100 bytes, then the connection drops and the server never answers again.
        let mut opened = 0;
        let opener: Opener = Box::new(move |_| {
            opened += 1;
            if opened == 1 {
                Ok((Box::new(io::Cursor::new(vec![1u8; 100]).chain(FailingRead)) as Box<dyn Read + Send>, Some(10_000)))
            } else {
                Err(io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused"))
            }
        });
        let n = Arc::new(AtomicU64::new(0));
        let mut r =
            Resumable::new("test://x".into(), opener, RetryPolicy { retries: 3, backoff: Duration::ZERO, ..Default::default() }, n.clone());
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).unwrap_err();
        let msg = e.to_string();
        assert_eq!(got.len(), 100);
        assert!(msg.contains("test://x") && msg.contains("at byte 100") && msg.contains("4 attempts"), "{msg}");
        assert_eq!(n.load(Ordering::Relaxed), 3);
        // A 404 is not retried.
        let opener: Opener = Box::new(|_| Err(io::Error::new(io::ErrorKind::NotFound, "HTTP 404 for test://y")));
        let e = Resumable::new("test://y".into(), opener, RetryPolicy { retries: 3, backoff: Duration::ZERO, ..Default::default() }, n)
            .read(&mut [0u8; 8])
            .unwrap_err();
        assert!(e.to_string().contains("404") && e.to_string().contains("1 attempt)"), "{e}");
    }

    #[test]
    fn pipe_reads_a_command_and_reports_its_failure() {
        let n = Arc::new(AtomicU64::new(0));
        let mut out = String::new();
        open_remote("pipe:printf hello", RetryPolicy { retries: 0, backoff: Duration::ZERO, ..Default::default() }, n.clone())
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello");
        let e = open_remote("pipe:echo oops >&2; exit 3", RetryPolicy { retries: 1, backoff: Duration::ZERO, ..Default::default() }, n)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("oops") && e.to_string().contains("2 attempts"), "{e}");
    }

    #[test]
    fn a_trickling_connection_is_dropped_then_given_up() {
        // A body that gives one byte a read, each read taking 30 ms: 33 bytes/s.
        struct Trickle;
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(30));
                buf[0] = b'x';
                Ok(1)
            }
        }
        let opens = Arc::new(AtomicU64::new(0));
        let counted = opens.clone();
        let opener: Opener = Box::new(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
            Ok((Box::new(Trickle) as Box<dyn Read + Send>, None))
        });
        let policy = RetryPolicy { retries: 2, backoff: Duration::ZERO, min_rate: 1000.0, rate_window: Duration::from_millis(100) };
        let n = Arc::new(AtomicU64::new(0));
        let mut r = Resumable::new("test://slow".into(), opener, policy, n.clone());
        let start = std::time::Instant::now();
        let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(e.to_string().contains("minimum rate"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(opens.load(Ordering::Relaxed), 3, "reconnected after each slow window, then gave up");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_hanging_command_times_out() {
        std::env::set_var("WEBLI_IO_READ_TIMEOUT", "0.2");
        let start = std::time::Instant::now();
        let policy = RetryPolicy { retries: 1, backoff: Duration::ZERO, ..Default::default() };
        let mut r = open_remote("pipe:sleep 30", policy, Arc::new(AtomicU64::new(0))).unwrap();
        let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
        std::env::remove_var("WEBLI_IO_READ_TIMEOUT");
        assert!(e.to_string().contains("gave nothing"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_location_that_panics_the_url_parser_is_a_bad_location() {
        // Found by fuzz/remote_response: `url` 2.5.8 asserts in its path parser on this join.
        let base = "file:z//..//U:";
        let location = "../..%4\u{fffd}\u{fffd}\u{fffd}?.\u{fffd}\u{fffd}";
        let e = redirect_target(base, location).unwrap_err();
        assert!(e.to_string().contains("bad Location"), "{e}");
    }

    #[test]
    fn secrets_are_redacted() {
        let presigned = "https://b.s3.amazonaws.com/k.tar?X-Amz-Signature=abc123&X-Amz-Security-Token=tok";
        assert_eq!(redact(presigned), "https://b.s3.amazonaws.com/k.tar?<redacted>");
        assert_eq!(redact("https://user:pw@h.org/x.tar"), "https://h.org/x.tar");
        let msg = scrub(&format!("connection refused: {presigned}"), presigned);
        assert!(!msg.contains("abc123") && !msg.contains("tok"), "{msg}");
    }

    #[test]
    fn s3_and_gs_urls_are_checked() {
        assert!(is_remote("s3://b/k") && is_remote("pipe:cat x") && !is_remote("/data/x.tar"));
    }
}
