//! An example **organization** plugin: imports the git repositories found in
//! a directory of the server, as if the directory were a GitHub organization.
//!
//! An organization using it sets its `organization_identifier` to an absolute
//! directory path. [`Organization::find_repos`] lists the subdirectories that
//! are git repositories (bare ones, holding a `HEAD` file, or working trees,
//! holding `.git`), named after the directory without a `.git` suffix and
//! cloned from a `file://` URL; hidden directories are skipped. The server
//! then clones each one (through [`Organization::clone_repo`], a shallow
//! `git clone` run by the host) to read its `.vespene` file, and creates or
//! updates its project.
//!
//! ```toml
//! [plugins.organizations.local]
//! library = "template"
//! root = "/srv/git"    # optional: organizations must be directories under it
//! ```
//!
//! An organization then uses it with `organization_type = "local"` (the
//! entry's name). As anyone who may edit an organization chooses the
//! directory, set `root` to keep them out of the rest of the file system.
//!
//! To adapt it to a hosting service, list repositories from its API in
//! `find_repos` (the organization's `api_endpoint` and login are in the
//! organization JSON) and keep `clone_repo` as it is.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{
    export_plugin, params, plugin_name, CommandRequest, Host, Kind, Organization, PluginResult, RepositoryRef,
    StreamName,
};

/// The parameters this plugin takes; any other key is a configuration error.
#[derive(Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
struct Parameters {
    /// The directory organizations must be inside, if any.
    root: Option<String>,
}

/// The example organization plugin: a directory of git repositories.
#[derive(Debug)]
pub struct LocalRepositories {
    /// The directory organizations must be inside, resolved.
    root: Option<PathBuf>,
}

/// Whether `dir` is a git repository: bare, or a working tree.
fn is_git_repository(dir: &Path) -> bool {
    dir.join("HEAD").is_file() || dir.join(".git").exists()
}

impl LocalRepositories {
    /// The organization's directory, resolved and checked against `root`.
    fn directory(&self, organization: &Value) -> PluginResult<PathBuf> {
        let dir = organization
            .get("organization_identifier")
            .and_then(Value::as_str)
            .filter(|d| !d.trim().is_empty())
            .ok_or("the organization's organization_identifier must be a directory path")?;
        if !Path::new(dir).is_absolute() {
            return Err(format!("organization directory '{dir}' must be an absolute path"));
        }
        let resolved =
            fs::canonicalize(dir).map_err(|e| format!("organization directory '{dir}' cannot be opened: {e}"))?;
        if !resolved.is_dir() {
            return Err(format!("organization directory '{dir}' is not a directory"));
        }
        match &self.root {
            Some(root) if !resolved.starts_with(root) => {
                Err(format!("organization directory '{dir}' is outside {}", root.display()))
            }
            _ => Ok(resolved),
        }
    }
}

impl Organization for LocalRepositories {
    fn new(config: &Value) -> PluginResult<Self> {
        let Parameters { root } = params::parse(config, Kind::Organization, plugin_name!())?;
        let root = match root {
            None => None,
            Some(root) if Path::new(&root).is_absolute() => Some(
                fs::canonicalize(&root)
                    .ok()
                    .filter(|r| r.is_dir())
                    .ok_or_else(|| format!("parameter 'root': {root} is not a directory"))?,
            ),
            Some(other) => return Err(format!("parameter 'root' must be an absolute directory path, not {other:?}")),
        };
        Ok(LocalRepositories { root })
    }

    fn find_repos(&self, organization: &Value, host: &Host<'_>) -> PluginResult<Vec<RepositoryRef>> {
        let dir = self.directory(organization)?;
        let entries = fs::read_dir(&dir)
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read organization directory {}: {e}", dir.display()))?;
        // By directory name, so `name` comes before `name.git` on a clash.
        let mut found = BTreeMap::new();
        for entry in entries {
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
                host.message(&format!("skipping {}: its name is not UTF-8", path.display()));
                continue;
            };
            if !file_name.starts_with('.') && path.is_dir() && is_git_repository(&path) {
                found.insert(file_name, path);
            }
        }
        let mut repos: Vec<RepositoryRef> = Vec::with_capacity(found.len());
        for (file_name, path) in found {
            let name = file_name.strip_suffix(".git").filter(|n| !n.is_empty()).unwrap_or(&file_name).to_string();
            if repos.iter().any(|r| r.name == name) {
                host.message(&format!("skipping {}: a repository named {name} is already listed", path.display()));
                continue;
            }
            let path = fs::canonicalize(&path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
            repos.push(RepositoryRef { name, clone_url: format!("file://{}", path.display()), default_branch: None });
        }
        repos.sort_by(|a, b| a.name.cmp(&b.name));
        host.message(&format!("found {} repositories in {}", repos.len(), dir.display()));
        Ok(repos)
    }

    fn clone_repo(
        &self,
        _organization: &Value,
        repository: &RepositoryRef,
        dest: &str,
        host: &Host<'_>,
    ) -> PluginResult<()> {
        let url = &repository.clone_url;
        if url.is_empty() || dest.is_empty() {
            return Err(format!("cannot clone repository '{}': no URL or no destination", repository.name));
        }
        // `--` keeps a URL starting with `-` from being read as an option;
        // GIT_TERMINAL_PROMPT=0 makes git fail instead of waiting for a password.
        let outcome = host.run(&CommandRequest {
            stream: StreamName::Message,
            env: [("GIT_TERMINAL_PROMPT".to_string(), "0".to_string())].into(),
            ..CommandRequest::argv(["git", "clone", "--depth", "1", "--", url, dest])
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
    description: "Example organization: imports the git repositories of a local directory",
    organization: LocalRepositories,
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::process::Command;

    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, RecordingHost, TestOrganization};
    use vespene_plugin_api::{plugin_name, RepositoryRef};

    use super::LocalRepositories;

    /// Runs git in `dir`, with an identity so commits work on any machine.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A working tree with one commit of a README saying `text`.
    fn repository(dir: &Path, text: &str) {
        fs::create_dir_all(dir).unwrap();
        git(dir, &["init", "-q", "-b", "main"]);
        fs::write(dir.join("README"), text).unwrap();
        git(dir, &["add", "README"]);
        git(dir, &["commit", "-q", "-m", "first"]);
    }

    /// An organization directory: alpha and zeta (working trees), mid.git
    /// (bare), and what must not be listed: a plain directory, a file, a
    /// hidden repository.
    fn organization_dir() -> tempfile::TempDir {
        let org = tempfile::tempdir().unwrap();
        let root = org.path();
        repository(&root.join("zeta"), "zeta\n");
        repository(&root.join("alpha"), "alpha\n");
        git(root, &["clone", "-q", "--bare", "alpha", "mid.git"]);
        repository(&root.join(".hidden"), "hidden\n");
        fs::create_dir(root.join("notes")).unwrap();
        fs::write(root.join("notes/todo"), "todo").unwrap();
        fs::write(root.join("file.txt"), "not a repository").unwrap();
        org
    }

    /// The organization JSON the server hands the plugin.
    fn organization(dir: &Path) -> Value {
        json!({"name": "local", "organization_identifier": dir})
    }

    /// The plugin without `root`.
    fn plugin() -> TestOrganization {
        testkit::organization::<LocalRepositories>(json!({})).unwrap()
    }

    #[test]
    fn lists_the_git_repositories_sorted_by_name() {
        let org = organization_dir();
        let host = RecordingHost::new();

        let repos = plugin().find_repos(&organization(org.path()), &host).unwrap();

        let resolved = fs::canonicalize(org.path()).unwrap();
        let expected: Vec<RepositoryRef> = [("alpha", "alpha"), ("mid", "mid.git"), ("zeta", "zeta")]
            .into_iter()
            .map(|(name, dir)| RepositoryRef {
                name: name.into(),
                clone_url: format!("file://{}", resolved.join(dir).display()),
                default_branch: None,
            })
            .collect();
        assert_eq!(repos, expected);
        assert_eq!(host.messages(), [format!("found 3 repositories in {}", resolved.display())]);
    }

    #[test]
    fn a_bare_repository_named_like_a_working_tree_is_skipped() {
        let org = organization_dir();
        git(org.path(), &["clone", "-q", "--bare", "zeta", "zeta.git"]);
        let host = RecordingHost::new();

        let repos = plugin().find_repos(&organization(org.path()), &host).unwrap();

        let names: Vec<&str> = repos.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["alpha", "mid", "zeta"]);
        assert!(repos[2].clone_url.ends_with("/zeta"), "{}", repos[2].clone_url);
        let skipped =
            format!("skipping {}: a repository named zeta is already listed", org.path().join("zeta.git").display());
        assert_eq!(host.messages()[0], skipped);
    }

    #[test]
    fn clones_a_listed_repository_shallow() {
        let org = organization_dir();
        let dest = tempfile::tempdir().unwrap();
        let host = RecordingHost::new();
        let plugin = plugin();
        let repos = plugin.find_repos(&organization(org.path()), &host).unwrap();
        // A second commit, so a full clone would have two.
        git(&org.path().join("zeta"), &["commit", "-q", "--allow-empty", "-m", "second"]);
        let target = dest.path().join("zeta");

        plugin.clone_repo(&organization(org.path()), &repos[2], target.to_str().unwrap(), &host).unwrap();

        assert_eq!(fs::read_to_string(target.join("README")).unwrap(), "zeta\n");
        assert_eq!(git(&target, &["rev-list", "--count", "HEAD"]), "1");
        let command = format!("running: git clone --depth 1 -- {} {}", repos[2].clone_url, target.display());
        assert!(host.messages().contains(&command), "{:?}", host.messages());
    }

    #[test]
    fn a_failed_clone_says_so() {
        let dest = tempfile::tempdir().unwrap();
        let repo =
            RepositoryRef { name: "gone".into(), clone_url: "file:///nonexistent/gone".into(), ..Default::default() };
        let target = dest.path().join("gone");
        let err = plugin().clone_repo(&json!({}), &repo, target.to_str().unwrap(), &RecordingHost::new()).unwrap_err();
        assert!(err.starts_with("git clone of file:///nonexistent/gone failed with exit code 128: "), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn the_organization_must_be_a_directory_under_root() {
        let org = organization_dir();
        let host = RecordingHost::new();
        let root = json!({"root": org.path().join("notes")});
        let plugin = testkit::organization::<LocalRepositories>(root).unwrap();
        let err = plugin.find_repos(&organization(org.path()), &host).unwrap_err();
        assert!(
            err.ends_with(&format!("is outside {}", fs::canonicalize(org.path().join("notes")).unwrap().display())),
            "{err}"
        );

        let plugin = testkit::organization::<LocalRepositories>(json!({"root": org.path()})).unwrap();
        assert_eq!(plugin.find_repos(&organization(org.path()), &host).unwrap().len(), 3);
        assert!(plugin.find_repos(&organization(&org.path().join("notes")), &host).unwrap().is_empty());

        let cases = [
            (json!({}), "the organization's organization_identifier must be a directory path".to_string()),
            (
                json!({"organization_identifier": "srv/git"}),
                "organization directory 'srv/git' must be an absolute path".to_string(),
            ),
            (
                json!({"organization_identifier": org.path().join("file.txt")}),
                format!("organization directory '{}' is not a directory", org.path().join("file.txt").display()),
            ),
        ];
        for (organization, expected) in cases {
            assert_eq!(plugin.find_repos(&organization, &host).unwrap_err(), expected, "{organization}");
        }
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let name = plugin_name!();
        let cases = [
            (
                json!({"root": 1}),
                format!("parameter 'root' of organization plugin {name}: invalid type: integer `1`, expected a string"),
            ),
            (json!({"root": "srv"}), "parameter 'root' must be an absolute directory path, not \"srv\"".to_string()),
            (json!({"root": "/nonexistent/git"}), "parameter 'root': /nonexistent/git is not a directory".to_string()),
            (json!({"dir": "/"}), format!("unknown parameter 'dir' for organization plugin {name}")),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::organization::<LocalRepositories>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
    }
}
