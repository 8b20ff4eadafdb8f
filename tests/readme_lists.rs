//! The README's lists of families and GGUF tensor types are the registry's and the type
//! table's: a family or type added or dropped without the README fails here.

use std::collections::BTreeSet;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The bullet of the README starting with `start` (up to the next bullet or blank line).
fn bullet(start: &str) -> String {
    let text = readme();
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("README has no bullet '{start}'"));
    let rest = &text[from + start.len()..];
    let end = rest.find("\n- ").into_iter().chain(rest.find("\n\n")).min();
    rest[..end.unwrap_or(rest.len())].replace('\n', " ")
}

#[test]
fn readme_lists_every_family_and_no_other() {
    let text = bullet("- Families, each from both formats:");
    let listed: BTreeSet<&str> = text.split('`').skip(1).step_by(2).collect();
    let registry: BTreeSet<&str> = mlcli::models::FAMILIES.iter().map(|f| f.id).collect();
    assert_eq!(listed, registry, "the README's family list is not FAMILIES");
}

#[test]
fn readme_lists_every_supported_tensor_type_in_table_order() {
    let text = bullet("- GGUF tensor types:");
    let listed: Vec<&str> = text
        .trim()
        .trim_end_matches('.')
        .split(',')
        .map(str::trim)
        .collect();
    let table = mlcli::formats::ggml_types::supported_names();
    let table: Vec<&str> = table.split(", ").collect();
    assert_eq!(
        listed, table,
        "the README's type list is not the type table's"
    );
}
