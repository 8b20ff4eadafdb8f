//! The man pages under `man/` (`mlcli.1` and one `mlcli-<subcommand>.1` each) are generated
//! from the clap definition and must stay current.
//! Regenerate with `MLCLI_UPDATE_MAN=1 cargo test --test man_page`.

use std::path::Path;

/// (file name, contents) of every page.
fn render() -> Vec<(String, Vec<u8>)> {
    let cmd = mlcli::cli::command();
    let page = |c: clap::Command| {
        let mut out = Vec::new();
        clap_mangen::Man::new(c).render(&mut out).unwrap();
        out
    };
    let mut pages = vec![("mlcli.1".to_string(), page(cmd.clone()))];
    for sub in cmd.get_subcommands() {
        let name = format!("mlcli-{}", sub.get_name());
        pages.push((format!("{name}.1"), page(sub.clone().display_name(name))));
    }
    pages
}

#[test]
fn man_pages_are_generated_from_the_cli_definition() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    for (file, want) in render() {
        let path = dir.join(&file);
        if std::env::var_os("MLCLI_UPDATE_MAN").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read(&path).unwrap_or_default();
        assert!(
            have == want,
            "man/{file} is stale: run MLCLI_UPDATE_MAN=1 cargo test --test man_page"
        );
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlcli"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("mlcli") && text.contains("ctx-size"),
            "{shell}: {text:.200}"
        );
    }
}
