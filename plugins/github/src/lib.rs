//! The **github** organization plugin: lists the repositories of a GitHub
//! (or GitHub Enterprise) organization through the REST API and clones each
//! one, shallow, at its default branch, so the server can read its
//! `.vespene` file.
//!
//! ```toml
//! [plugins.organizations.github]
//! library = "github"
//! api_url = "https://api.github.com"   # default; GitHub Enterprise: https://HOST/api/v3
//! timeout_seconds = 30                 # per HTTP request
//! ```
//!
//! An organization's `api_endpoint`, when set, overrides `api_url`. The token
//! is the password of the organization's service login, sent as
//! `Authorization: Bearer`; without a login the API is used anonymously.

use std::time::Duration;

use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{
    export_plugin, params, CommandRequest, Host, Kind, Organization, PluginResult, RepositoryRef, StreamName,
};

/// The plugin's name, for messages.
const NAME: &str = "github";
/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["api_url", "timeout_seconds"];
/// The public API.
const DEFAULT_API: &str = "https://api.github.com";
/// Repositories per page (GitHub's maximum).
const PER_PAGE: usize = 100;
/// A bound on pages, so a misbehaving server cannot loop forever.
const MAX_PAGES: usize = 1000;

/// The GitHub organization plugin.
pub struct GitHub {
    api_url: String,
    timeout: Duration,
    /// Made by the first request, so a server that never imports does not set up TLS.
    agent: std::sync::OnceLock<ureq::Agent>,
}

/// Whether the `Link` header names a next page.
pub fn has_next_link(link: &str) -> bool {
    link.split(',').any(|part| part.split(';').skip(1).any(|p| p.trim().replace(' ', "") == "rel=\"next\""))
}

fn valid_base(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<ureq::http::Uri>().is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()))
}

/// The first 200 characters of an answer, on one line.
fn excerpt(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect()
}

impl GitHub {
    /// The API base for an organization: its `api_endpoint`, or `api_url`.
    fn base(&self, organization: &Value) -> PluginResult<String> {
        let base = organization
            .get("api_endpoint")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .unwrap_or(&self.api_url)
            .trim_end_matches('/')
            .to_string();
        if !valid_base(&base) {
            return Err(format!("the API endpoint '{base}' is not an http(s) URL"));
        }
        Ok(base)
    }

    /// The token: the decrypted password of the organization's login, if any.
    fn token(organization: &Value, host: &Host<'_>) -> PluginResult<Option<String>> {
        match organization.get("login").and_then(|l| l.get("password")).and_then(Value::as_str) {
            Some(handle) if !handle.is_empty() => {
                let token = host.decrypt(handle).map_err(|e| format!("cannot read the login's token: {e}"))?;
                Ok(Some(token).filter(|t| !t.is_empty()))
            }
            _ => Ok(None),
        }
    }

    fn agent(&self) -> &ureq::Agent {
        self.agent.get_or_init(|| {
            ureq::Agent::config_builder()
                .timeout_global(Some(self.timeout))
                .http_status_as_error(false)
                .user_agent(concat!("vespene-plugin-github/", env!("CARGO_PKG_VERSION")))
                .build()
                .new_agent()
        })
    }

    fn get_page(&self, url: &str, token: Option<&str>) -> PluginResult<(Vec<Value>, bool)> {
        let mut request = self
            .agent()
            .get(url)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().map_err(|e| format!("{NAME}: cannot GET {url}: {e}"))?;
        let status = response.status();
        let next = response.headers().get_all("link").iter().any(|v| v.to_str().is_ok_and(has_next_link));
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| format!("{NAME}: cannot read the answer of {url} (HTTP {status}): {e}"))?;
        if !status.is_success() {
            return Err(format!("{NAME}: {url} answered HTTP {status}: {}", excerpt(&body)));
        }
        match vespene_plugin_api::serde_json::from_str::<Value>(&body) {
            Ok(Value::Array(items)) => Ok((items, next)),
            _ => Err(format!("{NAME}: {url} answered something that is not a JSON list: {}", excerpt(&body))),
        }
    }
}

impl Organization for GitHub {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Organization, NAME, PARAMETERS)?;
        let api_url = match params.get("api_url") {
            None => DEFAULT_API.to_string(),
            Some(Value::String(url)) if valid_base(url.trim_end_matches('/')) => url.trim_end_matches('/').to_string(),
            Some(other) => return Err(format!("parameter 'api_url' must be an http(s) URL, not {other}")),
        };
        let timeout = match params.get("timeout_seconds") {
            None => 30,
            Some(v) => match v.as_u64() {
                Some(t) if t > 0 => t,
                _ => return Err(format!("parameter 'timeout_seconds' must be a positive integer, not {v}")),
            },
        };
        Ok(GitHub { api_url, timeout: Duration::from_secs(timeout), agent: std::sync::OnceLock::new() })
    }

    fn find_repos(&self, organization: &Value, host: &Host<'_>) -> PluginResult<Vec<RepositoryRef>> {
        let org = organization
            .get("organization_identifier")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .ok_or("the organization's organization_identifier (the GitHub organization name) is blank")?;
        if org.contains(['/', '?', '#', ' ']) {
            return Err(format!("'{org}' is not a GitHub organization name"));
        }
        let base = self.base(organization)?;
        let token = Self::token(organization, host)?;
        let mut repos = Vec::new();
        for page in 1..=MAX_PAGES {
            if host.is_cancelled() {
                return Err("the import was cancelled".into());
            }
            let url = format!("{base}/orgs/{org}/repos?per_page={PER_PAGE}&page={page}");
            let (items, next) = self.get_page(&url, token.as_deref())?;
            let empty = items.is_empty();
            for item in items {
                let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
                let clone_url = item.get("clone_url").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() || clone_url.is_empty() {
                    host.message(&format!("skipping a repository without a name or clone_url on page {page}"));
                    continue;
                }
                repos.push(RepositoryRef {
                    name: name.to_string(),
                    clone_url: clone_url.to_string(),
                    default_branch: item.get("default_branch").and_then(Value::as_str).map(str::to_string),
                });
            }
            if empty || !next {
                break;
            }
        }
        host.message(&format!("found {} repositories in GitHub organization {org}", repos.len()));
        Ok(repos)
    }

    fn clone_repo(
        &self,
        organization: &Value,
        repository: &RepositoryRef,
        dest: &str,
        host: &Host<'_>,
    ) -> PluginResult<()> {
        let url = &repository.clone_url;
        if url.is_empty() || dest.is_empty() {
            return Err(format!("cannot clone repository '{}': no URL or no destination", repository.name));
        }
        let mut argv: Vec<String> = vec!["git".into()];
        let mut mask = Vec::new();
        let mut env: std::collections::BTreeMap<String, String> =
            [("GIT_TERMINAL_PROMPT".to_string(), "0".to_string())].into();
        if url.starts_with("https://") {
            if let Some(token) = Self::token(organization, host)? {
                // Through git's environment configuration (git 2.31+), never on
                // its command line, where `ps` shows it to every local user:
                // /proc/PID/environ is readable by the process's own user only.
                env.insert("GIT_CONFIG_COUNT".into(), "1".into());
                env.insert("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into());
                env.insert("GIT_CONFIG_VALUE_0".into(), format!("Authorization: Bearer {token}"));
                mask.push(token);
            }
        }
        argv.extend(["clone", "--depth", "1"].map(String::from));
        if let Some(branch) = repository.default_branch.as_deref().filter(|b| !b.is_empty()) {
            argv.push("--branch".into());
            argv.push(branch.to_string());
        }
        argv.extend(["--".to_string(), url.clone(), dest.to_string()]);
        let outcome = host.run(&CommandRequest {
            stream: StreamName::Message,
            env,
            log_command: true,
            mask,
            ..CommandRequest::argv(argv)
        })?;
        if outcome.cancelled {
            return Err(format!("clone of {url} was cancelled"));
        }
        if outcome.exit_code != 0 {
            return Err(format!(
                "git clone of {url} failed with exit code {}: {}",
                outcome.exit_code, outcome.last_line
            ));
        }
        Ok(())
    }
}

export_plugin! {
    name: "github",
    description: "Imports the repositories of a GitHub organization",
    organization: GitHub,
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit::{self, RecordingHost};

    use super::{has_next_link, GitHub};

    #[test]
    fn link_headers() {
        assert!(has_next_link("<https://api.github.com/x?page=2>; rel=\"next\", <https://x?page=5>; rel=\"last\""));
        assert!(!has_next_link("<https://api.github.com/x?page=1>; rel=\"prev\""));
        assert!(!has_next_link(""));
    }

    /// Serves two pages of repositories, then answers the requests it saw.
    fn serve_pages() -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let base = format!("http://{addr}");
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for page in 1..=2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    head.push_str(&line);
                }
                seen.push(head);
                let (body, link) = if page == 1 {
                    (
                        json!([{"name": "a", "clone_url": "git://h/a", "default_branch": "main"}]).to_string(),
                        format!("Link: <http://{addr}/orgs/acme/repos?per_page=100&page=2>; rel=\"next\"\r\n"),
                    )
                } else {
                    (
                        json!([{"name": "b", "clone_url": "git://h/b", "default_branch": "dev"}]).to_string(),
                        String::new(),
                    )
                };
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{link}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        (base, handle)
    }

    #[test]
    fn lists_every_page_with_the_token() {
        let (base, server) = serve_pages();
        let plugin = testkit::organization::<GitHub>(json!({"api_url": "https://unused.invalid"})).unwrap();
        let org = json!({"organization_identifier": "acme", "api_endpoint": base,
            "login": {"username": "ci", "password": "plain:t0ken"}});
        let host = RecordingHost::new();
        let repos = plugin.find_repos(&org, &host).unwrap();
        assert_eq!(repos.len(), 2);
        assert_eq!(repos[0].clone_url, "git://h/a");
        assert_eq!(repos[1].default_branch.as_deref(), Some("dev"));
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("GET /orgs/acme/repos?per_page=100&page=1 "), "{}", seen[0]);
        assert!(seen[1].starts_with("GET /orgs/acme/repos?per_page=100&page=2 "), "{}", seen[1]);
        assert!(seen[0].contains("Bearer t0ken"), "{}", seen[0]);
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let cases = [
            (json!({"api_url": "ftp://x"}), "parameter 'api_url' must be an http(s) URL, not \"ftp://x\""),
            (json!({"timeout_seconds": 0}), "parameter 'timeout_seconds' must be a positive integer, not 0"),
            (json!({"token": "x"}), "unknown parameter 'token' for organization plugin github"),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::organization::<GitHub>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
    }
}
