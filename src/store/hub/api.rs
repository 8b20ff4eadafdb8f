//! The subset of the Hub's HTTP API that pulling needs: a revision's commit
//! (`/api/models/{repo}/revision/{rev}`), the recursive file tree with sizes and LFS oids
//! (`/api/models/{repo}/tree/{commit}`, paginated by `Link: rel="next"`), and a file's
//! metadata from `HEAD /{repo}/resolve/{commit}/{path}` (`X-Repo-Commit`, `X-Linked-Etag` /
//! `ETag`, `X-Linked-Size`, and the CDN `Location`).

use serde::Deserialize;
use ureq::http::Response;

use crate::store::http::{encode_path, encode_segment, header, join, status_error, Follow, Http};
use crate::store::{safe_name, Error, Result};

/// Most pages of one tree listing followed (a 100k-file repository takes about 100).
const MAX_TREE_PAGES: usize = 10_000;

/// A file of the tree listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The repository path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Git blob id.
    pub oid: String,
    /// SHA-256 of the content for LFS files.
    pub lfs_sha256: Option<String>,
}

/// What `HEAD` on a file's resolve URL says.
#[derive(Clone, Debug)]
pub struct FileMeta {
    /// `X-Repo-Commit`.
    pub commit: String,
    /// `X-Linked-Etag` (LFS: the SHA-256) or `ETag` (the git blob id), unquoted: the blob's
    /// name in the cache.
    pub etag: String,
    /// `X-Linked-Size` or `Content-Length`.
    pub size: Option<u64>,
    /// Where to GET the content (the CDN location of a redirect, or the resolve URL).
    pub url: String,
}

/// A Hub endpoint reached through a client.
#[derive(Debug)]
pub struct Api<'a> {
    /// The client (carries the token for the endpoint's host).
    pub http: &'a Http,
    /// `$HF_ENDPOINT`.
    pub endpoint: &'a str,
    /// Whether a token is sent (for error messages).
    pub has_token: bool,
    /// Where the token file is looked for (for error messages).
    pub token_path: &'a std::path::Path,
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
}

#[derive(Deserialize)]
struct TreeItem {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: String,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
}

impl Api<'_> {
    /// The commit `revision` (branch, tag or commit) points to.
    pub fn revision(&self, repo: &str, revision: &str) -> Result<String> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.endpoint,
            encode_segment(revision)
        );
        let body = self.get_json(repo, Some(revision), &url)?;
        let info: RevisionInfo = serde_json::from_str(&body).map_err(|e| Error::Protocol {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        safe_name::commit(&info.sha, &url)
    }

    /// Every file at `commit`, following pagination.
    pub fn tree(&self, repo: &str, commit: &str) -> Result<Vec<Entry>> {
        let mut url = format!(
            "{}/api/models/{repo}/tree/{}?recursive=true&expand=false",
            self.endpoint,
            encode_segment(commit)
        );
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        loop {
            if !seen.insert(url.clone()) || seen.len() > MAX_TREE_PAGES {
                return Err(Error::Protocol {
                    url,
                    reason: format!(
                        "the tree listing's pages loop or exceed {MAX_TREE_PAGES} pages"
                    ),
                });
            }
            let (resp, body) = self.get(repo, Some(commit), &url)?;
            let items: Vec<TreeItem> =
                serde_json::from_str(&body).map_err(|e| Error::Protocol {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            for i in items.into_iter().filter(|i| i.kind == "file") {
                out.push(Entry {
                    path: safe_name::repo_path(&i.path, &url)?,
                    size: i.size,
                    oid: safe_name::blob_id(&i.oid, &url)?,
                    lfs_sha256: i
                        .lfs
                        .map(|l| safe_name::blob_id(&l.oid, &url))
                        .transpose()?,
                });
            }
            match header(&resp, "link").and_then(|l| next_link(&l)) {
                Some(next) => url = join(&url, &next),
                None => return Ok(out),
            }
        }
    }

    /// `HEAD` of a file: its commit, etag, size and download location.
    pub fn head(&self, repo: &str, commit: &str, path: &str) -> Result<FileMeta> {
        let url = resolve_url(self.endpoint, repo, commit, path);
        let headers = [("Accept-Encoding", "identity")];
        let (answered, resp) = self.http.send(true, &url, &headers, Follow::Relative)?;
        let status = resp.status().as_u16();
        if !(200..400).contains(&status) {
            return Err(self.explain(repo, Some(commit), &answered, &resp, ""));
        }
        let missing = |h: &str| Error::Protocol {
            url: answered.clone(),
            reason: format!("no {h} header"),
        };
        let commit = header(&resp, "x-repo-commit").ok_or_else(|| missing("X-Repo-Commit"))?;
        let etag = header(&resp, "x-linked-etag")
            .or_else(|| header(&resp, "etag"))
            .ok_or_else(|| missing("ETag"))?;
        let size = header(&resp, "x-linked-size")
            .or_else(|| header(&resp, "content-length"))
            .and_then(|s| s.trim().parse().ok());
        let url = match header(&resp, "location") {
            Some(loc) if resp.status().is_redirection() => join(&answered, &loc),
            _ => answered.clone(),
        };
        Ok(FileMeta {
            commit: safe_name::commit(commit.trim(), &answered)?,
            etag: safe_name::blob_id(&normalize_etag(&etag), &answered)?,
            size,
            url,
        })
    }

    fn get_json(&self, repo: &str, revision: Option<&str>, url: &str) -> Result<String> {
        self.get(repo, revision, url).map(|(_, body)| body)
    }

    fn get(&self, repo: &str, revision: Option<&str>, url: &str) -> Result<(Response<()>, String)> {
        let (answered, resp) = self.http.send(false, url, &[], Follow::All)?;
        let (parts, mut body) = resp.into_parts();
        let text = body
            .read_to_string()
            .map_err(|e| crate::store::http::transport_error(&answered, e))?;
        let resp = Response::from_parts(parts, ());
        if resp.status().as_u16() != 200 {
            return Err(self.explain(repo, revision, &answered, &resp, &text));
        }
        Ok((resp, text))
    }

    /// Turns a failed status into the error the user can act on.
    fn explain<B>(
        &self,
        repo: &str,
        revision: Option<&str>,
        url: &str,
        resp: &Response<B>,
        body: &str,
    ) -> Error {
        let status = resp.status().as_u16();
        let code = header(resp, "x-error-code").unwrap_or_default();
        match (status, code.as_str()) {
            (401 | 404, "RepoNotFound") | (404, "") => Error::RepoNotFound {
                repo: repo.to_string(),
                endpoint: self.endpoint.to_string(),
            },
            (404, "RevisionNotFound") => Error::RevisionNotFound {
                repo: repo.to_string(),
                revision: revision.unwrap_or("main").to_string(),
            },
            (401 | 403, _) => Error::Unauthorized {
                repo: repo.to_string(),
                status,
                page: format!("{}/{repo}", self.endpoint),
                token_path: self.token_path.to_path_buf(),
                token_note: if self.has_token {
                    " (a token was sent: it lacks access to this repository)".into()
                } else {
                    " (no token was sent)".into()
                },
            },
            _ => status_error(url, status, body),
        }
    }
}

/// `{endpoint}/{repo}/resolve/{revision}/{path}`.
pub fn resolve_url(endpoint: &str, repo: &str, revision: &str, path: &str) -> String {
    format!(
        "{endpoint}/{repo}/resolve/{}/{}",
        encode_segment(revision),
        encode_path(path)
    )
}

/// An ETag without quotes or a weak prefix.
fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// The `rel="next"` target of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_link_and_etags_are_parsed() {
        let l = r#"<https://h/api/models/o/r/tree/main?cursor=abc>; rel="next", <https://h/x>; rel="prev""#;
        assert_eq!(
            next_link(l).as_deref(),
            Some("https://h/api/models/o/r/tree/main?cursor=abc")
        );
        assert_eq!(next_link(r#"<https://h/x>; rel="prev""#), None);
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(
            resolve_url("http://h", "o/r", "main", "d/a b.gguf"),
            "http://h/o/r/resolve/main/d/a%20b.gguf"
        );
    }
}
