//! Object stores (`s3://`, `gs://`, `az://`, `abfs(s)://`) through Apache `object_store`, with
//! each cloud's standard credential chain; `remote.rs` wraps the byte stream in its resume-by-Range
//! logic (a dropped connection asks again from the byte reached: `GetRange::Offset`).
//!
//! Credentials, in the order the clouds' own SDKs use:
//! - **S3**: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`(/`AWS_SESSION_TOKEN`); else the shared
//!   files' profile (`AWS_PROFILE`, default `default`; `~/.aws/credentials` or
//!   `AWS_SHARED_CREDENTIALS_FILE`, region and `endpoint_url` from `~/.aws/config` or
//!   `AWS_CONFIG_FILE`; parsed here, as `object_store` reads no profile files); else web identity
//!   (EKS IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), the ECS task role
//!   (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`), the EC2 instance profile (IMDSv2): those by
//!   `object_store`. `AWS_NO_SIGN_REQUEST=true` reads public buckets unsigned. Endpoint:
//!   `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, or the profile's `endpoint_url` (S3-compatible
//!   stores: path-style requests); region `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's.
//! - **GCS**: `GOOGLE_SERVICE_ACCOUNT` (a key file), `GOOGLE_APPLICATION_CREDENTIALS`, the
//!   gcloud application-default credentials file, then the metadata server (GCE, GKE workload
//!   identity): `object_store`'s chain. `GOOGLE_OAUTH_ACCESS_TOKEN` gives a token directly;
//!   `STORAGE_EMULATOR_HOST` (the emulator variable Google's clients honour) reads anonymously
//!   from that host.
//! - **Azure**: `AZURE_STORAGE_ACCOUNT_NAME` with a key, SAS or bearer token, workload identity
//!   (`AZURE_FEDERATED_TOKEN_FILE`), managed identity, the Azure CLI: `object_store`'s chain.
//!
//! Every request has a connect timeout and every chunk of the body a read timeout
//! (`WEBLI_IO_CONNECT_TIMEOUT`, `WEBLI_IO_READ_TIMEOUT`); `object_store`'s whole-request timeout
//! is off (a large shard takes as long as it takes; `remote.rs` checks a minimum rate).

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig, StaticCredentialProvider};

/// URL schemes served by an object store.
pub const SCHEMES: [&str; 5] = ["s3://", "gs://", "az://", "abfs://", "abfss://"];

pub fn is_object_url(url: &str) -> bool {
    SCHEMES.iter().any(|s| url.starts_with(s))
}

/// The process's tokio runtime for object-store requests: one per process. A DataLoader worker
/// forked after the main process read an object store inherits the parent's runtime without its
/// threads (a fork copies only the forking thread): blocking on it hung forever. So the runtime
/// is keyed by the process id, and a forked child builds its own; the inherited one is never
/// dropped there (dropping would wait on threads that do not exist in the child).
fn runtime() -> Arc<tokio::runtime::Runtime> {
    static RT: Mutex<Option<(u32, Arc<tokio::runtime::Runtime>)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut slot = RT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return rt.clone();
        }
    }
    if let Some((_, inherited)) = slot.take() {
        std::mem::forget(inherited);
    }
    // reqwest is built without a TLS crypto provider of its own: ring's, as for ureq.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("webli-objstore")
            .enable_all()
            .build()
            .expect("a tokio runtime for object stores"),
    );
    *slot = Some((pid, rt.clone()));
    rt
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn home() -> Option<std::path::PathBuf> {
    var("HOME").map(std::path::PathBuf::from)
}

/// What an AWS profile gives: `aws_access_key_id`, `aws_secret_access_key`,
/// `aws_session_token`, `region`, `endpoint_url`.
#[derive(Debug, Default, PartialEq)]
pub struct AwsProfile {
    pub name: String,
    pub values: HashMap<String, String>,
    /// A section of that name was found in one of the files.
    pub found: bool,
}

/// Profile keys that give credentials some other way than keys in the file: each is refused
/// with what to do instead, never passed over for another identity (the instance role, say).
const INDIRECT_CREDENTIALS: [(&str, &str); 6] = [
    ("credential_process", "runs a command for its credentials, which webli-io never does (data never becomes a command)"),
    ("role_arn", "assumes a role, which webli-io does not do"),
    ("source_profile", "takes its credentials from another profile to assume a role, which webli-io does not do"),
    ("web_identity_token_file", "assumes a role with a web identity token, which webli-io does not do"),
    ("sso_session", "signs in through IAM Identity Center (SSO), which webli-io does not do"),
    ("sso_start_url", "signs in through IAM Identity Center (SSO), which webli-io does not do"),
];

impl AwsProfile {
    /// Refuse a profile whose credentials come some other way than keys in the file, and a
    /// profile named by `AWS_PROFILE` that is in neither file: falling through to another
    /// identity would sign requests as someone the user did not choose.
    pub fn check(&self, env_keys: bool) -> io::Result<()> {
        let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
        if env_keys {
            return Ok(()); // the environment's keys sign, as every AWS client does first
        }
        if !self.found && var("AWS_PROFILE").is_some() {
            return refuse(format!(
                "the AWS profile {:?} (AWS_PROFILE) is in neither the credentials nor the config file: fix the name, or unset AWS_PROFILE",
                self.name
            ));
        }
        // AWS's own order: a role or SSO in the profile comes before its keys, a credential
        // process after them.
        let before_keys = |k: &str| !matches!(k, "credential_process" | "source_profile");
        let has_keys = self.values.contains_key("aws_access_key_id");
        let found = INDIRECT_CREDENTIALS.iter().find(|(k, _)| self.values.contains_key(*k) && (before_keys(k) || !has_keys));
        if let Some((key, what)) = found {
            let name = &self.name;
            return refuse(format!(
                "the AWS profile {name:?} {what} (its key {key}): export its credentials into the environment first, e.g. \
                 `eval \"$(aws configure export-credentials --profile {name} --format env)\"`, or give the profile \
                 aws_access_key_id and aws_secret_access_key"
            ));
        }
        Ok(())
    }
}

/// The profile `AWS_PROFILE` (or `default`) from the shared credentials and config files.
pub fn aws_profile() -> AwsProfile {
    let name = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let creds = var("AWS_SHARED_CREDENTIALS_FILE").map(Into::into).or_else(|| home().map(|h| h.join(".aws/credentials")));
    let config = var("AWS_CONFIG_FILE").map(Into::into).or_else(|| home().map(|h| h.join(".aws/config")));
    let mut values = HashMap::new();
    let mut found = false;
    // The config file names sections `[profile NAME]` (but `[default]`); the credentials file `[NAME]`.
    let config_section = if name == "default" { name.clone() } else { format!("profile {name}") };
    for (path, section) in [(config, config_section), (creds, name.clone())] {
        let Some(path) = path else { continue };
        let Ok(ini) = ini::Ini::load_from_file(&path) else { continue };
        if let Some(props) = ini.section(Some(section.as_str())) {
            found = true;
            for (k, v) in props.iter() {
                values.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    AwsProfile { name, values, found }
}

fn client_options(allow_http: bool) -> ClientOptions {
    let (connect, _) = crate::remote::timeouts();
    ClientOptions::new().with_connect_timeout(connect).with_timeout_disabled().with_allow_http(allow_http)
}

fn retry() -> RetryConfig {
    // remote.rs retries and resumes (counted in `remote_retries`, with its backoff and limits):
    // object_store's own retries, of requests and of cut bodies, are off so that nothing is
    // retried twice over or uncounted.
    RetryConfig { max_retries: 0, retry_timeout: Duration::from_secs(30), ..Default::default() }
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

fn s3_store(url: &str) -> io::Result<Arc<dyn ObjectStore>> {
    let mut b = AmazonS3Builder::from_env().with_url(url).with_retry(retry());
    let profile = aws_profile();
    let env_keys = var("AWS_ACCESS_KEY_ID").is_some() && var("AWS_SECRET_ACCESS_KEY").is_some();
    profile.check(env_keys)?;
    let profile = profile.values;
    if !env_keys {
        if let (Some(k), Some(s)) = (profile.get("aws_access_key_id"), profile.get("aws_secret_access_key")) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
            if let Some(t) = profile.get("aws_session_token") {
                b = b.with_token(t);
            }
        }
    }
    if var("AWS_REGION").is_none() && var("AWS_DEFAULT_REGION").is_none() {
        if let Some(r) = profile.get("region") {
            b = b.with_region(r);
        }
    }
    let endpoint = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")).or_else(|| profile.get("endpoint_url").cloned());
    let mut allow_http = false;
    if let Some(e) = endpoint {
        allow_http = e.starts_with("http://");
        b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
    }
    if var("AWS_NO_SIGN_REQUEST").is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes")) {
        b = b.with_skip_signature(true);
    }
    Ok(Arc::new(b.with_client_options(client_options(allow_http)).build().map_err(bad)?))
}

fn gcs_store(url: &str) -> io::Result<Arc<dyn ObjectStore>> {
    let mut b = GoogleCloudStorageBuilder::from_env().with_url(url).with_retry(retry());
    let mut allow_http = false;
    if let Some(host) = var("STORAGE_EMULATOR_HOST") {
        let host = if host.contains("://") { host } else { format!("http://{host}") };
        allow_http = host.starts_with("http://");
        b = b.with_base_url(host.trim_end_matches('/')).with_skip_signature(true);
    } else if let Some(token) = var("GOOGLE_OAUTH_ACCESS_TOKEN") {
        b = b.with_credentials(Arc::new(StaticCredentialProvider::new(GcpCredential { bearer: token })));
    } else if let Some(path) = var("GOOGLE_SERVICE_ACCOUNT").or_else(|| var("GOOGLE_SERVICE_ACCOUNT_PATH")) {
        // A key file may name another endpoint (`gcs_base_url`, how emulators are configured):
        // plain http is allowed only when that file asks for it.
        let base = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        allow_http = base.as_ref().and_then(|v| v.get("gcs_base_url")?.as_str().map(|u| u.starts_with("http://"))).unwrap_or(false);
    }
    Ok(Arc::new(b.with_client_options(client_options(allow_http)).build().map_err(bad)?))
}

fn azure_store(url: &str) -> io::Result<Arc<dyn ObjectStore>> {
    let b = MicrosoftAzureBuilder::from_env().with_url(url).with_retry(retry());
    Ok(Arc::new(b.with_client_options(client_options(false)).build().map_err(bad)?))
}

/// `scheme://bucket/key` → (`scheme://bucket`, key).
fn split(url: &str) -> io::Result<(&str, &str)> {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[scheme_end..].split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok((&url[..scheme_end + bucket.len()], key)),
        _ => Err(bad(format!("{url:?}: expected SCHEME://BUCKET/OBJECT"))),
    }
}

/// The store for a URL's bucket, built once per process (credential providers keep their
/// tokens between shards), and the object's path in it.
fn store_for(url: &str) -> io::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let (bucket_url, key) = split(url)?;
    let path = ObjectPath::parse(key).map_err(|e| bad(format!("bad object name in {url:?}: {e}")))?;
    runtime();
    // Keyed by the bucket and the variables that configure it, so a changed environment (a new
    // endpoint, other keys) gets a new store.
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| ["AWS_", "GOOGLE_", "AZURE_", "STORAGE_EMULATOR_HOST", "HOME"].iter().any(|p| k.starts_with(p)))
        .collect();
    env.sort();
    // The profile files too: rotated keys there reach the next shard opened.
    let profile = if url.starts_with("s3://") {
        format!("{:?}", aws_profile().values.iter().collect::<std::collections::BTreeMap<_, _>>())
    } else {
        String::new()
    };
    // And by process: a forked child's stores would use the parent's runtime (see `runtime`).
    let cache_key = format!("{}\n{bucket_url}\n{env:?}\n{profile}", std::process::id());
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = stores.get(&cache_key) {
        return Ok((s.clone(), path));
    }
    let store = if url.starts_with("s3://") {
        s3_store(bucket_url)?
    } else if url.starts_with("gs://") {
        gcs_store(bucket_url)?
    } else {
        azure_store(bucket_url)?
    };
    stores.insert(cache_key, store.clone());
    Ok((store, path))
}

/// The HTTP status in an object_store error's text ("... status code: 400 Bad Request: ...").
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

fn io_error(url: &str, e: object_store::Error) -> io::Error {
    use object_store::Error as E;
    let text = e.to_string();
    let refusal = crate::remote::REFUSALS.iter().find(|code| text.contains(*code));
    let status = status_in(&text);
    let kind = match &e {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::Precondition { .. } => io::ErrorKind::InvalidInput,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        _ if refusal.is_some() => io::ErrorKind::PermissionDenied,
        // Another 4xx (but a timeout or too many requests) is not worth another try either.
        _ if status.is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    let what = match (&e, refusal) {
        (E::NotFound { .. }, _) => "object not found".to_string(),
        (E::Precondition { .. }, _) => format!("{} (a 412 to If-Match)", crate::remote::CHANGED),
        (_, Some(code)) => {
            format!("the store refused the request ({code}: {text}): check the credentials, their expiry, the region and the endpoint")
        }
        (E::PermissionDenied { .. } | E::Unauthenticated { .. }, None) => format!("access denied ({e}): check the credentials"),
        _ => text,
    };
    io::Error::new(kind, scrub_secrets(&crate::remote::scrub(&what, url)))
}

/// `text` without what could be a secret: the query of every URL in it (SAS tokens, presigned
/// signatures) and the values of the credential variables and profile keys.
pub fn scrub_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = [rest.find("http://"), rest.find("https://")].into_iter().flatten().min() {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ')').map_or(rest.len(), |e| i + e);
        out.push_str(&crate::remote::redact(&rest[i..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    let mut secrets: Vec<String> =
        ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_KEY", "GOOGLE_OAUTH_ACCESS_TOKEN"]
            .iter()
            .filter_map(|v| var(v))
            .collect();
    let profile = aws_profile().values;
    secrets.extend(["aws_secret_access_key", "aws_session_token"].iter().filter_map(|k| profile.get(*k).cloned()));
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

/// The body of an object, read chunk by chunk; each chunk must come within the read timeout.
struct BodyReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    url: String,
    read_timeout: Duration,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let next = runtime().block_on(async { tokio::time::timeout(self.read_timeout, self.stream.next()).await });
            match next {
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no data for {:?}", self.read_timeout))),
                Ok(None) => return Ok(0),
                Ok(Some(Err(e))) => return Err(io_error(&self.url, e)),
                Ok(Some(Ok(b))) => self.chunk = b,
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// GET an object from byte `offset` on (to byte `end`, exclusive, when given): the body as a
/// reader, and the object's size. `known`: the ETag of the version read so far (or indexed):
/// the read is conditional on it (`If-Match`); the first answer's ETag is kept there.
pub fn open_object(
    url: &str,
    offset: u64,
    end: Option<u64>,
    known: &mut Option<String>,
) -> io::Result<(Box<dyn Read + Send>, Option<u64>)> {
    let (store, path) = store_for(url)?;
    let (connect, read) = crate::remote::timeouts();
    let range = match end {
        Some(end) => Some(GetRange::Bounded(offset..end.max(offset + 1))),
        None => (offset > 0).then_some(GetRange::Offset(offset)),
    };
    let opts = GetOptions { range, if_match: known.clone(), ..Default::default() };
    let got = runtime().block_on(async { tokio::time::timeout(connect + read, store.get_opts(&path, opts)).await });
    let result = match got {
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer in {:?}", connect + read))),
        Ok(r) => r.map_err(|e| io_error(url, e))?,
    };
    let total = result.meta.size;
    match (known.as_deref(), result.meta.e_tag.as_deref()) {
        (Some(k), Some(e)) if k != e => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {} (ETag {k} then {e})", crate::remote::redact(url), crate::remote::CHANGED),
            ));
        }
        (None, Some(e)) => *known = Some(e.to_string()),
        _ => {}
    }
    Ok((Box::new(BodyReader { stream: result.into_stream(), chunk: Bytes::new(), url: url.to_string(), read_timeout: read }), Some(total)))
}

/// Write `bytes` as the object at `url` (one PUT: readers see the old object or the new one,
/// never part of it): how `webli-io index -o s3://...` writes its files.
pub fn put_object(url: &str, bytes: Vec<u8>) -> io::Result<()> {
    let (store, path) = store_for(url)?;
    let (connect, read) = crate::remote::timeouts();
    let got = runtime().block_on(async { tokio::time::timeout(connect + read, store.put(&path, bytes.into())).await });
    match got {
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer in {:?}", connect + read))),
        Ok(r) => r.map(|_| ()).map_err(|e| io_error(url, e)),
    }
}

/// An object's size and ETag (a HEAD request): what the shard index checks an object against.
pub fn stat_object(url: &str) -> io::Result<(u64, Option<String>)> {
    let (store, path) = store_for(url)?;
    let (connect, read) = crate::remote::timeouts();
    let got = runtime().block_on(async { tokio::time::timeout(connect + read, store.head(&path)).await });
    match got {
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer in {:?}", connect + read))),
        Ok(r) => r.map(|m| (m.size, m.e_tag)).map_err(|e| io_error(url, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_messages_are_scrubbed() {
        let msg = "Error performing GET https://acct.blob.core.windows.net/c/x.tar?sv=2022&sig=SECRET123 in 3ms: 403";
        let out = scrub_secrets(msg);
        assert!(
            !out.contains("SECRET123") && out.contains("https://acct.blob.core.windows.net/c/x.tar?<redacted>") && out.ends_with("403"),
            "{out}"
        );
        assert_eq!(scrub_secrets("no url here"), "no url here");
    }

    #[test]
    fn urls_split_into_bucket_and_key() {
        assert_eq!(split("s3://b/dir/k.tar").unwrap(), ("s3://b", "dir/k.tar"));
        assert_eq!(split("abfss://c@acct.dfs.core.windows.net/x.tar").unwrap(), ("abfss://c@acct.dfs.core.windows.net", "x.tar"));
        assert!(split("gs://bucket").is_err() && split("gs://bucket/").is_err());
        assert!(is_object_url("az://c/x") && !is_object_url("https://x/y"));
    }
}
