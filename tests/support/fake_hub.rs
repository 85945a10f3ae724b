//! A fake Hugging Face Hub: a tiny HTTP/1.1 server (std `TcpListener`, one thread per
//! connection) that serves dataset repositories well enough for `hf-hub` 1.0 to list and
//! download them when pointed at [`FakeHub::endpoint`].
//!
//! Endpoints (repo ids may be `owner/name` or a bare `name`; every path segment is
//! percent-decoded, so revisions such as `refs%2Fheads%2Fmain` work):
//!
//! - `GET /api/datasets/{id}` and `GET /api/datasets/{id}/revision/{rev}`: repo info
//!   (`id`, `author`, `sha`, `private`, `gated`, `siblings: [{rfilename}]`, ...).
//! - `GET /api/datasets/{id}/tree/{rev}[/{path}][?recursive=true][&expand=true]`: tree
//!   entries (`type`, `oid`, `size`, `path`, `lfs`), paginated with a `Link: <...>;
//!   rel="next"` header when there are more than [`FakeHub::set_tree_page_size`] entries.
//! - `POST /api/datasets/{id}/paths-info/{rev}` with a JSON body `{"paths": [...]}`.
//! - `HEAD`/`GET /datasets/{id}/resolve/{rev}/{path}`: the file, with a quoted `ETag`
//!   (sha256 of the content), `X-Repo-Commit`, `Content-Length`, `Accept-Ranges`;
//!   `Range: bytes=...` gets `206` + `Content-Range`, `If-None-Match` with the current
//!   ETag gets `304`. No redirects and never `X-Xet-Hash`, so `hf-hub` takes its plain
//!   HTTP download path.
//!
//! Every repo is also served as a model repo: `GET /api/models/{id}[/revision/{rev}]` and
//! `HEAD`/`GET /{id}/resolve/{rev}/{path}`.
//!
//! Errors mimic the Hub (a JSON `{"error": ...}` body plus an `X-Error-Code` header):
//! unknown repo → `404 RepoNotFound`, unknown revision → `404 RevisionNotFound`, unknown
//! file → `404 EntryNotFound` (with `X-Repo-Commit`, as the Hub sends), gated repo without
//! the right bearer token → `401 GatedRepo` on every endpoint of that repo. Malformed
//! requests get `400` and the connection is closed; nothing read from the network can
//! panic a thread. A revision may be `main`, `refs/heads/main`, the full commit sha or a
//! prefix of it of at least 7 hex digits.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A dataset repository served by a [`FakeHub`].
#[derive(Debug, Clone)]
pub struct FakeRepo {
    /// `owner/name` (or a bare `name`).
    pub id: String,
    /// The commit every revision of this repo resolves to: 40 hex digits.
    pub sha: String,
    /// `(path in repo, content)` pairs, e.g. `("data/train-00000-of-00001.parquet", bytes)`.
    pub files: Vec<(String, Vec<u8>)>,
    /// When set, every request for this repo needs `Authorization: Bearer <token>`;
    /// without it (or with another token) the answer is `401`.
    pub gated_token: Option<String>,
}

impl FakeRepo {
    /// An open (ungated) dataset repo.
    pub fn new(id: &str, sha: &str, files: Vec<(String, Vec<u8>)>) -> Self {
        Self {
            id: id.to_owned(),
            sha: sha.to_owned(),
            files,
            gated_token: None,
        }
    }

    /// The same repo, gated behind `token`.
    pub fn gated(mut self, token: &str) -> Self {
        self.gated_token = Some(token.to_owned());
        self
    }
}

/// Sha256 of `bytes` as lowercase hex: the ETag the fake serves (the Hub uses the sha256
/// of LFS files as their ETag too).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A running fake Hub; the server thread stops when this is dropped.
pub struct FakeHub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeHub {
    /// Serves `repos` on `127.0.0.1` at a free port.
    ///
    /// Panics on invalid test input: a repo id that is not `owner/name` or `name`, a sha
    /// that is not 40 hex digits, duplicate repo ids or file paths, or an empty file path.
    pub fn start(repos: Vec<FakeRepo>) -> FakeHub {
        let mut seen_ids = Vec::new();
        let repos = repos
            .into_iter()
            .map(|repo| {
                let segments: Vec<&str> = repo.id.split('/').collect();
                assert!(
                    matches!(segments.len(), 1 | 2) && segments.iter().all(|s| !s.is_empty()),
                    "fake hub: bad repo id {:?}",
                    repo.id
                );
                assert!(
                    repo.sha.len() == 40 && repo.sha.bytes().all(|b| b.is_ascii_hexdigit()),
                    "fake hub: sha of {} must be 40 hex digits, got {:?}",
                    repo.id,
                    repo.sha
                );
                assert!(
                    !seen_ids.contains(&repo.id),
                    "fake hub: duplicate repo {}",
                    repo.id
                );
                seen_ids.push(repo.id.clone());
                RepoState::new(repo)
            })
            .collect();

        let listener = TcpListener::bind("127.0.0.1:0").expect("fake hub: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake hub: local address");
        let shared = Arc::new(Shared {
            repos,
            endpoint: format!("http://{addr}"),
            requests: AtomicUsize::new(0),
            file_downloads: AtomicUsize::new(0),
            tree_page_size: AtomicUsize::new(DEFAULT_TREE_PAGE_SIZE),
            log: Mutex::new(Vec::new()),
            shutdown: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("fake-hub-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .expect("fake hub: spawn the accept thread")
        };
        FakeHub {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, for `HFClient::builder().endpoint(..)` or `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.shared.endpoint.clone()
    }

    /// The server's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far (malformed ones included).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// `GET`s of `resolve` URLs that were answered with a body (`200` or `206`).
    pub fn file_downloads(&self) -> usize {
        self.shared.file_downloads.load(Ordering::SeqCst)
    }

    /// `"METHOD target"` for every request so far (target as sent: percent-encoded, with
    /// its query); malformed requests appear as `"BAD reason"`.
    pub fn request_log(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }

    /// Entries per tree-listing page (default 1000, like the Hub); later pages are linked
    /// with a `Link: <url>; rel="next"` header. Clamped to at least 1.
    pub fn set_tree_page_size(&self, entries: usize) {
        self.shared
            .tree_page_size
            .store(entries.max(1), Ordering::SeqCst);
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the acceptor, blocked in `accept`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Connection threads poll the shutdown flag between reads.
        let connections = std::mem::take(&mut *lock(&self.shared.connections));
        for connection in connections {
            let _ = connection.join();
        }
    }
}

const DEFAULT_TREE_PAGE_SIZE: usize = 1000;
/// How often an idle connection thread checks for shutdown.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
const FAKE_DATE: &str = "2024-01-01T00:00:00.000Z";

struct Shared {
    repos: Vec<RepoState>,
    endpoint: String,
    requests: AtomicUsize,
    file_downloads: AtomicUsize,
    tree_page_size: AtomicUsize,
    log: Mutex<Vec<String>>,
    shutdown: AtomicBool,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

struct RepoState {
    id: String,
    sha: String,
    gated_token: Option<String>,
    /// Sorted by path.
    files: Vec<FileState>,
    /// Every directory holding a file (ancestors included), sorted.
    dirs: Vec<String>,
}

struct FileState {
    path: String,
    data: Arc<[u8]>,
    /// Sha256 of the content, unquoted.
    etag: String,
    /// A git-like object id (40 hex digits).
    oid: String,
}

impl RepoState {
    fn new(repo: FakeRepo) -> Self {
        let mut files: Vec<FileState> = repo
            .files
            .into_iter()
            .map(|(path, data)| {
                assert!(
                    !path.is_empty() && path.split('/').all(|s| !s.is_empty()),
                    "fake hub: bad file path {path:?} in {}",
                    repo.id
                );
                let etag = sha256_hex(&data);
                let oid =
                    sha256_hex(format!("blob {}\0{etag}", data.len()).as_bytes())[..40].to_owned();
                FileState {
                    path,
                    data: data.into(),
                    etag,
                    oid,
                }
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for pair in files.windows(2) {
            assert!(
                pair[0].path != pair[1].path,
                "fake hub: duplicate file {} in {}",
                pair[0].path,
                repo.id
            );
        }
        let mut dirs: Vec<String> = files
            .iter()
            .flat_map(|f| {
                let parts: Vec<&str> = f.path.split('/').collect();
                (1..parts.len()).map(move |n| parts[..n].join("/"))
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        Self {
            id: repo.id,
            sha: repo.sha.to_ascii_lowercase(),
            gated_token: repo.gated_token,
            files,
            dirs,
        }
    }

    fn resolves(&self, revision: &str) -> bool {
        let revision = revision.to_ascii_lowercase();
        revision == "main"
            || revision == "refs/heads/main"
            || (revision.len() >= 7
                && revision.bytes().all(|b| b.is_ascii_hexdigit())
                && self.sha.starts_with(&revision))
    }

    fn file(&self, path: &str) -> Option<&FileState> {
        self.files.iter().find(|f| f.path == path)
    }

    fn author(&self) -> Option<&str> {
        self.id.split_once('/').map(|(owner, _)| owner)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let conn_shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("fake-hub-conn".into())
            .spawn(move || serve_connection(stream, &conn_shared));
        if let Ok(handle) = spawned {
            let mut connections = lock(&shared.connections);
            connections.retain(|c| !c.is_finished());
            connections.push(handle);
        }
    }
}

struct Request {
    method: String,
    /// The request target as sent (path and query, still percent-encoded).
    target: String,
    /// Decoded, non-empty path segments.
    segments: Vec<String>,
    /// The raw query string (without `?`).
    raw_query: String,
    /// Decoded query pairs.
    query: Vec<(String, String)>,
    /// Lower-cased names, trimmed values.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Incoming {
    Request(Box<Request>),
    Bad(String),
    Closed,
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(POLL_INTERVAL));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    loop {
        match read_request(&mut stream, &mut buffer, shared) {
            Incoming::Closed => return,
            Incoming::Bad(reason) => {
                shared.requests.fetch_add(1, Ordering::SeqCst);
                lock(&shared.log).push(format!("BAD {reason}"));
                let response = Response::error(400, "BadRequest", &reason);
                let _ = write_response(&mut stream, response, false, false);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                return;
            }
            Incoming::Request(request) => {
                lock(&shared.log).push(format!("{} {}", request.method, request.target));
                let response = route(shared, &request);
                if request.method == "GET" && response.counts_as_download {
                    shared.file_downloads.fetch_add(1, Ordering::SeqCst);
                }
                shared.requests.fetch_add(1, Ordering::SeqCst);
                let head_only = request.method == "HEAD";
                let written = write_response(&mut stream, response, request.keep_alive, head_only);
                if written.is_err() || !request.keep_alive {
                    return;
                }
            }
        }
    }
}

/// Reads more bytes into `buffer`; `false` when the peer closed, errored, or the hub stops.
fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>, shared: &Shared) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shared.shutdown.load(Ordering::SeqCst) {
                    return false;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>, shared: &Shared) -> Incoming {
    let head_end = loop {
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Incoming::Bad("request head too large".into());
        }
        if !fill(stream, buffer, shared) {
            return Incoming::Closed;
        }
    };
    let mut request = match parse_head(&buffer[..head_end]) {
        Ok(request) => request,
        Err(reason) => return Incoming::Bad(reason),
    };
    if request.header("transfer-encoding").is_some() {
        return Incoming::Bad("chunked request bodies are not supported".into());
    }
    let body_len = match request.header("content-length") {
        None => 0,
        Some(value) => match value.parse::<usize>() {
            Ok(n) if n <= MAX_BODY_BYTES => n,
            _ => return Incoming::Bad(format!("bad content-length {value:?}")),
        },
    };
    let body_start = head_end + 4;
    while buffer.len() < body_start + body_len {
        if !fill(stream, buffer, shared) {
            return Incoming::Closed;
        }
    }
    request.body = buffer[body_start..body_start + body_len].to_vec();
    buffer.drain(..body_start + body_len);
    Incoming::Request(Box::new(request))
}

fn parse_head(head: &[u8]) -> Result<Request, String> {
    let head = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {request_line:?}"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("bad method {method:?}"));
    }
    if !target.starts_with('/') {
        return Err(format!("bad request target {target:?}"));
    }
    let keep_alive_default = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(format!("unsupported version {version:?}")),
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(format!("bad header name {name:?}"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect::<Result<Vec<_>, _>>()?;
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name, true)?, percent_decode(value, true)?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let connection = headers
        .iter()
        .find(|(n, _)| n == "connection")
        .map(|(_, v)| v.to_ascii_lowercase());
    let keep_alive = match connection.as_deref() {
        Some(v) if v.contains("close") => false,
        Some(v) if v.contains("keep-alive") => true,
        _ => keep_alive_default,
    };
    Ok(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        segments,
        raw_query: raw_query.to_owned(),
        query,
        headers,
        body: Vec::new(),
        keep_alive,
    })
}

fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let digits = bytes
                    .get(i + 1..i + 3)
                    .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| u8::from_str_radix(d, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
                out.push(digits);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("percent-decoded {text:?} is not UTF-8"))
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

enum Body {
    Empty,
    Bytes(Vec<u8>),
    Slice(Arc<[u8]>, std::ops::Range<usize>),
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
    /// `304` and friends: no `Content-Length`, never a body.
    bodiless: bool,
    counts_as_download: bool,
}

impl Response {
    fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            bodiless: false,
            counts_as_download: false,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn json(status: u16, value: &Value) -> Self {
        let mut response =
            Self::new(status).header("Content-Type", "application/json; charset=utf-8");
        response.body = Body::Bytes(value.to_string().into_bytes());
        response
    }

    /// A Hub-style error: JSON `{"error": message}` plus `X-Error-Code`.
    fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(status, &json!({ "error": message })).header("X-Error-Code", code)
    }

    fn repo_not_found() -> Self {
        Self::error(404, "RepoNotFound", "Repository not found")
    }

    fn revision_not_found(revision: &str) -> Self {
        Self::error(
            404,
            "RevisionNotFound",
            &format!("Invalid rev id: {revision}"),
        )
    }

    fn entry_not_found(repo: &RepoState) -> Self {
        Self::error(404, "EntryNotFound", "Entry not found")
            .header("X-Repo-Commit", repo.sha.clone())
    }

    fn not_found() -> Self {
        Self::error(
            404,
            "NotFound",
            "Sorry, we can't find the page you are looking for.",
        )
    }

    fn method_not_allowed() -> Self {
        Self::error(405, "MethodNotAllowed", "Method not allowed")
    }

    fn body_len(&self) -> usize {
        match &self.body {
            Body::Empty => 0,
            Body::Bytes(bytes) => bytes.len(),
            Body::Slice(_, range) => range.len(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        _ => "Unknown",
    }
}

fn write_response(
    stream: &mut TcpStream,
    response: Response,
    keep_alive: bool,
    head_only: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !response.bodiless {
        head.push_str(&format!("Content-Length: {}\r\n", response.body_len()));
    }
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    stream.write_all(head.as_bytes())?;
    if !head_only && !response.bodiless {
        match &response.body {
            Body::Empty => {}
            Body::Bytes(bytes) => stream.write_all(bytes)?,
            Body::Slice(data, range) => stream.write_all(&data[range.clone()])?,
        }
    }
    stream.flush()
}

// ---------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------

fn route(shared: &Shared, request: &Request) -> Response {
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["api", "datasets", rest @ ..] => with_repo(shared, request, rest, api_route),
        ["datasets", rest @ ..] => with_repo(shared, request, rest, resolve_route),
        // Model repos: the same repos, under the model namespace (no prefix for files).
        ["api", "models", rest @ ..] => with_repo(shared, request, rest, api_route),
        rest if rest.contains(&"resolve") => with_repo(shared, request, rest, resolve_route),
        _ => Response::not_found(),
    }
}

type Handler = fn(&Shared, &Request, &RepoState, &[&str]) -> Response;

/// Finds the repo whose id prefixes `rest` (longest id first), checks the gate, and hands
/// the remaining segments to `handler`.
fn with_repo(shared: &Shared, request: &Request, rest: &[&str], handler: Handler) -> Response {
    let found = shared
        .repos
        .iter()
        .filter_map(|repo| {
            let id: Vec<&str> = repo.id.split('/').collect();
            rest.starts_with(&id).then_some((repo, id.len()))
        })
        .max_by_key(|(_, len)| *len);
    let Some((repo, id_len)) = found else {
        return Response::repo_not_found();
    };
    if let Some(token) = &repo.gated_token {
        let expected = format!("Bearer {token}");
        if request.header("authorization") != Some(expected.as_str()) {
            return Response::error(
                401,
                "GatedRepo",
                &format!(
                    "Access to dataset {} is restricted. You must have access to it and be \
                     authenticated to access it. Please log in.",
                    repo.id
                ),
            );
        }
    }
    handler(shared, request, repo, &rest[id_len..])
}

fn api_route(shared: &Shared, request: &Request, repo: &RepoState, rest: &[&str]) -> Response {
    let is_get = matches!(request.method.as_str(), "GET" | "HEAD");
    match rest {
        [] if is_get => info(repo, "main"),
        ["revision", revision] if is_get => info(repo, revision),
        ["tree", revision, path @ ..] if is_get => tree(shared, request, repo, revision, path),
        ["paths-info", revision] if request.method == "POST" => paths_info(request, repo, revision),
        [] | ["revision", _] | ["tree", ..] | ["paths-info", _] => Response::method_not_allowed(),
        _ => Response::not_found(),
    }
}

fn info(repo: &RepoState, revision: &str) -> Response {
    if !repo.resolves(revision) {
        return Response::revision_not_found(revision);
    }
    let siblings: Vec<Value> = repo
        .files
        .iter()
        .map(|f| json!({ "rfilename": f.path }))
        .collect();
    let used_storage: usize = repo.files.iter().map(|f| f.data.len()).sum();
    let gated = if repo.gated_token.is_some() {
        json!("auto")
    } else {
        json!(false)
    };
    Response::json(
        200,
        &json!({
            "_id": &sha256_hex(repo.id.as_bytes())[..24],
            "id": repo.id,
            "author": repo.author(),
            "sha": repo.sha,
            "lastModified": FAKE_DATE,
            "createdAt": FAKE_DATE,
            "private": false,
            "gated": gated,
            "disabled": false,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "cardData": {},
            "siblings": siblings,
            "usedStorage": used_storage,
        }),
    )
}

fn is_lfs(path: &str) -> bool {
    const TEXT: [&str; 7] = [
        ".md",
        ".json",
        ".txt",
        ".gitattributes",
        ".py",
        ".yaml",
        ".yml",
    ];
    !TEXT.iter().any(|ext| path.ends_with(ext))
}

fn file_entry(repo: &RepoState, file: &FileState, expand: bool) -> Value {
    let mut entry = json!({
        "type": "file",
        "oid": file.oid,
        "size": file.data.len(),
        "path": file.path,
    });
    if is_lfs(&file.path) {
        entry["lfs"] = json!({ "oid": file.etag, "size": file.data.len(), "pointerSize": 134 });
    }
    if expand {
        entry["lastCommit"] = json!({ "id": repo.sha, "title": "Upload data", "date": FAKE_DATE });
    }
    entry
}

fn dir_entry(repo: &RepoState, dir: &str, expand: bool) -> Value {
    let mut entry = json!({
        "type": "directory",
        "oid": &sha256_hex(format!("tree {dir}").as_bytes())[..40],
        "size": 0,
        "path": dir,
    });
    if expand {
        entry["lastCommit"] = json!({ "id": repo.sha, "title": "Upload data", "date": FAKE_DATE });
    }
    entry
}

fn tree(
    shared: &Shared,
    request: &Request,
    repo: &RepoState,
    revision: &str,
    path: &[&str],
) -> Response {
    if !repo.resolves(revision) {
        return Response::revision_not_found(revision);
    }
    let prefix = path.join("/");
    if !prefix.is_empty() && !repo.dirs.contains(&prefix) {
        return Response::entry_not_found(repo);
    }
    let recursive = request.query_value("recursive") == Some("true");
    let expand = request.query_value("expand") == Some("true");
    let wanted = |candidate: &str| -> bool {
        let rest = if prefix.is_empty() {
            Some(candidate)
        } else {
            candidate
                .strip_prefix(prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        rest.is_some_and(|r| recursive || !r.contains('/'))
    };
    // Directories first, then files, each sorted by path (as the Hub lists a level).
    let entries: Vec<Value> = repo
        .dirs
        .iter()
        .filter(|d| wanted(d))
        .map(|d| dir_entry(repo, d, expand))
        .chain(
            repo.files
                .iter()
                .filter(|f| wanted(&f.path))
                .map(|f| file_entry(repo, f, expand)),
        )
        .collect();

    let page_size = shared.tree_page_size.load(Ordering::SeqCst).max(1);
    let start = match request.query_value("cursor") {
        None => 0,
        Some(cursor) => match cursor.parse::<usize>() {
            Ok(n) if n <= entries.len() => n,
            _ => return Response::error(400, "BadRequest", "Invalid cursor"),
        },
    };
    let end = start.saturating_add(page_size).min(entries.len());
    let mut response = Response::json(200, &Value::Array(entries[start..end].to_vec()));
    if end < entries.len() {
        let mut query: Vec<&str> = request
            .raw_query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
            .collect();
        let cursor = format!("cursor={end}");
        query.push(&cursor);
        let path = request.target.split('?').next().unwrap_or_default();
        let next = format!("{}{path}?{}", shared.endpoint, query.join("&"));
        response = response.header("Link", format!("<{next}>; rel=\"next\""));
    }
    response
}

fn paths_info(request: &Request, repo: &RepoState, revision: &str) -> Response {
    if !repo.resolves(revision) {
        return Response::revision_not_found(revision);
    }
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return Response::error(400, "BadRequest", "expected a JSON body");
    };
    let Some(paths) = body.get("paths").and_then(Value::as_array) else {
        return Response::error(400, "BadRequest", "expected {\"paths\": [...]}");
    };
    let entries: Vec<Value> = paths
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|p| {
            let p = p.trim_matches('/');
            if let Some(file) = repo.file(p) {
                Some(file_entry(repo, file, false))
            } else if repo.dirs.iter().any(|d| d == p) {
                Some(dir_entry(repo, p, false))
            } else {
                None
            }
        })
        .collect();
    Response::json(200, &Value::Array(entries))
}

fn resolve_route(_shared: &Shared, request: &Request, repo: &RepoState, rest: &[&str]) -> Response {
    let ["resolve", revision, path @ ..] = rest else {
        return Response::not_found();
    };
    if path.is_empty() {
        return Response::not_found();
    }
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return Response::method_not_allowed();
    }
    if !repo.resolves(revision) {
        return Response::revision_not_found(revision);
    }
    let Some(file) = repo.file(&path.join("/")) else {
        return Response::entry_not_found(repo);
    };
    let etag = format!("\"{}\"", file.etag);
    let with_meta = |response: Response| {
        response
            .header("ETag", etag.clone())
            .header("X-Repo-Commit", repo.sha.clone())
            .header("Accept-Ranges", "bytes")
    };

    if let Some(tags) = request.header("if-none-match") {
        let matches = tags.split(',').any(|tag| {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag == "*" || tag.trim_matches('"') == file.etag
        });
        if matches {
            let mut response = with_meta(Response::new(304));
            response.bodiless = true;
            return response;
        }
    }

    let len = file.data.len();
    let range = match request.header("range") {
        None => None,
        Some(spec) => match parse_range(spec, len) {
            RangeSpec::Ignore => None,
            RangeSpec::Satisfiable(range) => Some(range),
            RangeSpec::Unsatisfiable => {
                return with_meta(Response::error(
                    416,
                    "RangeNotSatisfiable",
                    "Range not satisfiable",
                ))
                .header("Content-Range", format!("bytes */{len}"));
            }
        },
    };
    let mut response = match range {
        Some(range) => {
            let content_range = format!("bytes {}-{}/{len}", range.start, range.end - 1);
            let mut response = with_meta(Response::new(206)).header("Content-Range", content_range);
            response.body = Body::Slice(Arc::clone(&file.data), range);
            response
        }
        None => {
            let mut response = with_meta(Response::new(200));
            response.body = Body::Slice(Arc::clone(&file.data), 0..len);
            response
        }
    };
    response = response.header("Content-Type", "application/octet-stream");
    response.counts_as_download = true;
    response
}

enum RangeSpec {
    /// Not a single byte range we understand: serve the whole file (allowed by RFC 9110).
    Ignore,
    Satisfiable(std::ops::Range<usize>),
    Unsatisfiable,
}

fn parse_range(spec: &str, len: usize) -> RangeSpec {
    let Some(spec) = spec.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<usize>(), last.parse::<usize>()) {
        // bytes=-N: the last N bytes.
        (Err(_), Ok(suffix)) if first.is_empty() => {
            if suffix == 0 || len == 0 {
                return RangeSpec::Unsatisfiable;
            }
            len - suffix.min(len)..len
        }
        // bytes=A-
        (Ok(start), Err(_)) if last.is_empty() => start..len,
        // bytes=A-B (inclusive)
        (Ok(start), Ok(end)) if start <= end => start..end.saturating_add(1).min(len),
        _ => return RangeSpec::Ignore,
    };
    if range.start >= len {
        RangeSpec::Unsatisfiable
    } else {
        RangeSpec::Satisfiable(range)
    }
}
