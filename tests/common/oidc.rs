//! A real OpenID provider and a scripted browser for the OIDC login tests (tests/oidc.rs, the
//! real-client scenarios). The provider is zitadel's example server (`.ci/install-oidc-provider`):
//! static users with passwords from a JSON file, a login form at `/login/username`, issuer
//! `http://localhost:PORT/`, clients `web` (secret `secret`), `native` and `api`. It listens on
//! every interface, so the tests run it inside a network namespace of their own.
//!
//! The browser is a cookie-keeping HTTP/1.1 client (hyper's) that does what a person's browser
//! does through a login — follow redirects, submit the provider's form, submit our confirmation
//! form — one step at a time, so a test can stop, inspect or tamper at any step.

use super::{cached_tool, free_port};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The provider's version; `.ci/install-oidc-provider` builds the same.
pub const PROVIDER_VERSION: &str = "v3.52.0";

/// The confidential client our server logs in as, and its secret.
pub const CLIENT_ID: &str = "web";
pub const CLIENT_SECRET: &str = "secret";

/// How long one HTTP exchange of the browser may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Redirects the browser follows before it gives up (a loop is a failure, not a hang).
const MAX_REDIRECTS: usize = 10;

/// The provider's binary: `$OIDC_PROVIDER`, else the cache path; a clear failure naming the
/// install script when it is missing.
pub fn provider_binary() -> PathBuf {
    cached_tool(
        "OIDC_PROVIDER",
        &format!("zitadel-oidc/{PROVIDER_VERSION}/oidc-provider"),
        ".ci/install-oidc-provider",
    )
}

/// One entry of the provider's users file (the fields of its `storage.User`).
#[derive(Clone, Debug)]
pub struct OidcUser {
    /// The subject (`sub`) of the user's tokens.
    pub id: String,
    /// What the login form takes, and the `preferred_username` claim.
    pub username: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub email_verified: bool,
}

impl OidcUser {
    /// A user with a verified email, password `pw-<username>`, named after the username.
    pub fn new(id: &str, username: &str, email: &str) -> OidcUser {
        OidcUser {
            id: id.into(),
            username: username.into(),
            password: format!("pw-{username}"),
            first_name: username.into(),
            last_name: "Tester".into(),
            email: email.into(),
            email_verified: true,
        }
    }

    /// The `name` claim the provider's userinfo gives (first and last name).
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

/// A running provider (killed on drop).
pub struct OidcProvider {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OidcProvider {
    /// Starts the provider on a free port, accepting `redirect_uris`, and waits for discovery.
    pub fn start(users: &[&OidcUser], redirect_uris: &[&str]) -> OidcProvider {
        OidcProvider::start_on(free_port(), users, redirect_uris)
    }

    /// `start` on a given port (a server's config names the issuer before the provider runs).
    pub fn start_on(port: u16, users: &[&OidcUser], redirect_uris: &[&str]) -> OidcProvider {
        let dir = tempfile::tempdir().unwrap();
        let users: serde_json::Map<String, serde_json::Value> = users
            .iter()
            .map(|u| {
                let entry = serde_json::json!({
                    "ID": u.id,
                    "Username": u.username,
                    "Password": u.password,
                    "FirstName": u.first_name,
                    "LastName": u.last_name,
                    "Email": u.email,
                    "EmailVerified": u.email_verified,
                    "PreferredLanguage": "en",
                });
                (u.id.clone(), entry)
            })
            .collect();
        let users_file = dir.path().join("users.json");
        std::fs::write(&users_file, serde_json::Value::Object(users).to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("provider.log")).unwrap();
        let child = Command::new(provider_binary())
            .env("PORT", port.to_string())
            .env("REDIRECT_URI", redirect_uris.join(","))
            .env("USERS_FILE", &users_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", provider_binary().display()));
        let mut provider = OidcProvider {
            port,
            dir,
            child: Some(child),
        };
        provider.wait_for_discovery();
        provider
    }

    /// Polls the discovery document for up to 20 s; panics with the log when the provider
    /// exits or never answers.
    fn wait_for_discovery(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && super::http(self.port, "GET", "/.well-known/openid-configuration", None).0 == 200
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("the OpenID provider exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the OpenID provider did not answer discovery: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://localhost:PORT/`, as the provider names itself.
    pub fn issuer(&self) -> String {
        issuer(self.port)
    }

    /// The user identifier our server records: issuer without its trailing `/`, then `/sub`.
    pub fn provider_id(&self, sub: &str) -> String {
        format!("{}{sub}", self.issuer())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("provider.log")).unwrap_or_default()
    }

    /// Kills the provider (to test a provider that went away).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The issuer of a provider on `port`.
pub fn issuer(port: u16) -> String {
    format!("http://localhost:{port}/")
}

/// An `oidc:` config section for a provider on `port` with our client, plus `extra` lines
/// (each indented by two spaces already, e.g. `"  allowed_users: [a@b.c]\n"`).
pub fn oidc_yaml(port: u16, extra: &str) -> String {
    format!(
        "oidc:\n  issuer: {issuer}\n  client_id: {CLIENT_ID}\n  client_secret: {CLIENT_SECRET}\n{extra}",
        issuer = issuer(port)
    )
}

/// One answer the browser got.
#[derive(Clone, Debug)]
pub struct Page {
    /// The URL asked for.
    pub url: String,
    pub status: u16,
    /// A redirect's target, made absolute.
    pub location: Option<String>,
    /// Every `Set-Cookie` header, as sent.
    pub set_cookies: Vec<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    pub body: String,
}

impl Page {
    /// The value of query parameter `name` in this page's `location`.
    pub fn location_param(&self, name: &str) -> Option<String> {
        query_param(self.location.as_deref()?, name)
    }
}

impl std::fmt::Display for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.url, self.status)?;
        if let Some(location) = &self.location {
            write!(f, " (Location: {location})")?;
        }
        for cookie in &self.set_cookies {
            write!(f, " (Set-Cookie: {cookie})")?;
        }
        let body: String = self.body.chars().take(2000).collect();
        write!(f, "\n{body}")
    }
}

/// The value of query parameter `name` in `url`, decoded.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A stored cookie (host-only; tests have no domain cookies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cookie {
    pub host: String,
    pub name: String,
    pub value: String,
    pub path: String,
    /// Sent over `https://` only.
    pub secure: bool,
}

/// The provider's login form, reached from an AuthURL.
#[derive(Clone, Debug)]
pub struct LoginForm {
    /// Where the form posts (absolute).
    pub action: String,
    /// The provider's auth request id (the form's hidden `id`).
    pub request_id: String,
    pub page: Page,
}

/// How far a scripted login got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Opening the AuthURL did not lead to the provider's login form.
    Open,
    /// The provider did not accept the credentials (its login page again).
    Provider,
    /// Our callback did not answer with the confirmation page.
    Callback,
    /// The confirmation form was posted: `page` is our answer to it.
    Confirmed,
}

/// The end of a scripted login: the step it stopped at and the page it stopped on.
#[derive(Clone, Debug)]
pub struct LoginOutcome {
    pub step: Step,
    pub page: Page,
    /// Our confirmation page, when the callback was accepted.
    pub confirmation: Option<Page>,
}

impl LoginOutcome {
    pub fn status(&self) -> u16 {
        self.page.status
    }

    pub fn body(&self) -> &str {
        &self.page.body
    }
}

/// A scripted browser: one cookie jar, HTTP/1.1 (over TLS for `https://` URLs).
pub struct Browser {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub cookies: Vec<Cookie>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    /// Plain `http://` (an `https://` URL fails: no certificate is trusted).
    pub fn new() -> Browser {
        Browser::with_roots(rustls::RootCertStore::empty())
    }

    /// Also `https://`, trusting the certificates in the PEM file `ca` (a test CA).
    pub fn trusting(ca: &std::path::Path) -> Browser {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()))
        {
            roots.add(cert.unwrap()).unwrap();
        }
        Browser::with_roots(roots)
    }

    fn with_roots(roots: rustls::RootCertStore) -> Browser {
        let tls = headscale::outbound_tls::client_config(roots).unwrap();
        let connector = headscale::outbound_tls::https_or_http_connector(tls, REQUEST_TIMEOUT);
        Browser {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            cookies: Vec::new(),
        }
    }

    /// One `GET` (no redirect followed).
    pub async fn get(&mut self, url: &str) -> Page {
        self.send("GET", url, None).await
    }

    /// One form `POST` (no redirect followed).
    pub async fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send("POST", url, Some(body)).await
    }

    /// `GET url`, then every redirect, until an answer that is not one — or until a redirect
    /// to a URL `stop` accepts, which is returned unrequested (its `location`).
    pub async fn follow_until(&mut self, url: &str, stop: impl Fn(&str) -> bool) -> Page {
        let mut page = self.get(url).await;
        for _ in 0..MAX_REDIRECTS {
            match page.location.clone() {
                Some(next) if (300..400).contains(&page.status) && !stop(&next) => {
                    page = self.get(&next).await;
                }
                _ => return page,
            }
        }
        panic!("more than {MAX_REDIRECTS} redirects from {url}: {page}");
    }

    /// `GET url` and every redirect after it.
    pub async fn follow(&mut self, url: &str) -> Page {
        self.follow_until(url, |_| false).await
    }

    /// Opens an AuthURL and follows it to the provider's login form; the last page otherwise.
    pub async fn open_login(&mut self, auth_url: &str) -> Result<LoginForm, Page> {
        let page = self.follow(auth_url).await;
        if page.status != 200 {
            return Err(page);
        }
        let (Some(action), Some(request_id)) = (
            form_action(&page.body),
            hidden_input(&page.body, "id").filter(|id| !id.is_empty()),
        ) else {
            return Err(page);
        };
        let action = absolute(&page.url, &action);
        Ok(LoginForm {
            action,
            request_id,
            page,
        })
    }

    /// Submits credentials on the provider's form and follows the provider's redirects up to
    /// the redirect to `/oidc/callback`: that callback URL (code and state, not yet
    /// delivered), or the page the provider stopped on (its form again for a wrong password).
    pub async fn submit_login(
        &mut self,
        form: &LoginForm,
        username: &str,
        password: &str,
    ) -> Result<String, Page> {
        let answer = self
            .post_form(
                &form.action,
                &[
                    ("username", username),
                    ("password", password),
                    ("id", &form.request_id),
                ],
            )
            .await;
        let Some(next) = answer.location.clone() else {
            return Err(answer);
        };
        let page = if is_callback(&next) {
            answer
        } else {
            self.follow_until(&next, is_callback).await
        };
        match &page.location {
            Some(callback) if is_callback(callback) => Ok(callback.clone()),
            _ => Err(page),
        }
    }

    /// Posts the confirmation form on our confirmation `page` (its action and hidden token;
    /// the cookie comes from the jar).
    pub async fn confirm(&mut self, page: &Page) -> Page {
        let action = form_action(&page.body)
            .unwrap_or_else(|| panic!("no form on the confirmation page: {page}"));
        let token = hidden_input(&page.body, "headscale_register_confirm")
            .unwrap_or_else(|| panic!("no confirmation token on the page: {page}"));
        let action = absolute(&page.url, &action);
        self.post_form(&action, &[("headscale_register_confirm", &token)])
            .await
    }

    /// A whole login: AuthURL → provider form → credentials → our callback → confirmation.
    /// Stops at the first step that does not go as a successful login would.
    pub async fn login(&mut self, auth_url: &str, username: &str, password: &str) -> LoginOutcome {
        let form = match self.open_login(auth_url).await {
            Ok(form) => form,
            Err(page) => return outcome(Step::Open, page, None),
        };
        let callback = match self.submit_login(&form, username, password).await {
            Ok(url) => url,
            Err(page) => return outcome(Step::Provider, page, None),
        };
        let confirmation = self.get(&callback).await;
        if confirmation.status != 200 || form_action(&confirmation.body).is_none() {
            return outcome(Step::Callback, confirmation, None);
        }
        let done = self.confirm(&confirmation).await;
        outcome(Step::Confirmed, done, Some(confirmation))
    }

    /// The first stored cookie whose name starts with `prefix` (`state_`, `nonce_`).
    pub fn cookie_starting(&self, prefix: &str) -> Option<&Cookie> {
        self.cookies.iter().find(|c| c.name.starts_with(prefix))
    }

    /// Sends one request with the jar's cookies for `url`; stores the answer's cookies.
    async fn send(&mut self, method: &str, url: &str, form: Option<String>) -> Page {
        let uri: hyper::Uri = url
            .parse()
            .unwrap_or_else(|e| panic!("not a URL ({e}): {url}"));
        let host = uri.host().unwrap_or_default().to_string();
        let path = uri.path().to_string();
        let https = uri.scheme_str() == Some("https");
        let mut request = hyper::Request::builder().method(method).uri(uri);
        let cookie = self
            .cookies
            .iter()
            .filter(|c| c.host == host && path_matches(&path, &c.path) && (https || !c.secure))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ");
        if !cookie.is_empty() {
            request = request.header("cookie", cookie);
        }
        if form.is_some() {
            request = request.header("content-type", "application/x-www-form-urlencoded");
        }
        let request = request
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .unwrap();
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {url}: no answer in {REQUEST_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let set_cookies: Vec<String> = parts
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect();
        for header in &set_cookies {
            self.store_cookie(&host, &path, header);
        }
        Page {
            url: url.to_string(),
            status: parts.status.as_u16(),
            location: parts
                .headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(|l| absolute(url, l)),
            set_cookies,
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// RFC 6265's storage model, as far as tests need it: host-only cookies, `Path` (or the
    /// request's directory), `Secure`, deletion by `Max-Age<=0`.
    fn store_cookie(&mut self, host: &str, request_path: &str, header: &str) {
        let mut parts = header.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let mut path = match request_path.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(end) => request_path[..end].to_string(),
        };
        let (mut expired, mut secure) = (false, false);
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            match key.to_ascii_lowercase().as_str() {
                "path" if val.starts_with('/') => path = val.to_string(),
                "max-age" => expired = val.parse::<i64>().map(|s| s <= 0).unwrap_or(false),
                "secure" => secure = true,
                _ => {}
            }
        }
        let cookie = Cookie {
            host: host.to_string(),
            name: name.trim().to_string(),
            value: value.trim().to_string(),
            path,
            secure,
        };
        self.cookies
            .retain(|c| !(c.host == cookie.host && c.name == cookie.name && c.path == cookie.path));
        if !expired {
            self.cookies.push(cookie);
        }
    }
}

fn outcome(step: Step, page: Page, confirmation: Option<Page>) -> LoginOutcome {
    LoginOutcome {
        step,
        page,
        confirmation,
    }
}

/// Our server's OIDC redirect URI path.
fn is_callback(url: &str) -> bool {
    url.split('?')
        .next()
        .is_some_and(|u| u.ends_with("/oidc/callback"))
}

/// RFC 6265 path-match.
fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

/// `location` made absolute against `base` (absolute URLs and absolute paths: what the
/// provider and our server send).
fn absolute(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let origin_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..origin_end])
    } else {
        let directory = base[..base.find('?').unwrap_or(base.len())]
            .rfind('/')
            .filter(|i| *i >= origin_end)
            .map(|i| &base[..=i])
            .unwrap_or(&base[..origin_end]);
        let slash = if directory.ends_with('/') { "" } else { "/" };
        format!("{directory}{slash}{location}")
    }
}

/// The `action` of the first `<form>` in `html`, HTML entities for `&` undone.
fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let tag = &form[..form.find('>')?];
    attribute(tag, "action")
}

/// The value of the `<input>` named `name` in `html`.
fn hidden_input(html: &str, name: &str) -> Option<String> {
    html.match_indices("<input").find_map(|(start, _)| {
        let tag = &html[start..start + html[start..].find('>')?];
        (attribute(tag, "name").as_deref() == Some(name))
            .then(|| attribute(tag, "value").unwrap_or_default())
    })
}

/// A double-quoted attribute's value in one tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(
        tag[start..end]
            .replace("&amp;", "&")
            .replace("&#43;", "+")
            .replace("&#34;", "\""),
    )
}
