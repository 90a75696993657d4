//! Finds constructs in Rust source that could escape the evaluation.
//!
//! Works on the token stream (proc-macro2), not on text: comments vanish and string literals
//! are single tokens, so neither triggers false positives, and macro bodies are still scanned
//! (a path hidden in a `macro_rules!` body is tokens like any other).
//!
//! Names that reach outside (the compile-time file/env macros, macro definitions, global and
//! interior-mutable state, stdin, path APIs, candle's file I/O) are refused as identifiers
//! anywhere ([`crate::forbidden_name`]): a `use` rename, a glob or a macro argument must still
//! spell the original name. Modules of std/core/alloc are checked after the root, in nested
//! `use` groups too, and renaming or glob-importing a root is refused.
//!
//! # What the policy cannot see
//!
//! Read as an attacker would, these remain; the crate boundary and the OS sandbox (not this
//! scanner) are what must hold them:
//! - **What frozen code hands out.** Editable code may call any public item of the crates it
//!   can name, including the target's own frozen modules (`crate::data::...`). If one of them
//!   reads files, lists the val/holdout split or exposes a path, the scanner cannot tell.
//! - **Re-exports in allowed crates.** candle's file and env functions are listed by name (read
//!   from candle-core/candle-nn 0.11); a new candle version, or `serde`/`rand`/`anyhow` hidden
//!   `__private` re-exports, can add a way out under a name the list does not have.
//! - **State through candle.** `Var::set`, in-place ops (`slice_set`, `InplaceOp*`) and a
//!   model's own tensors can carry information from one evaluation batch to the next; the
//!   scanner refuses std's interior mutability and statics only. The evaluator has to reset the
//!   model or evaluate batches independently.
//! - **Derive and attribute macros of allowed crates** (`#[derive(Serialize)]`) expand to code
//!   the scanner never sees; they are trusted as part of the crate.
//! - **Timing and resources.** Reading the clock, spinning threads, allocating memory or
//!   measuring run time are allowed; side channels between runs are not this scanner's job.
//! - **Semantics.** A patch that learns from the data it is given in a legitimate way, leaks
//!   through a training batch's contents, or special-cases the evaluation's input shapes is
//!   valid Rust with nothing forbidden in it.
//! - **Non-Rust editable files.** Config files (TOML) are only size- and path-checked; what
//!   they may set is the target's business.
//! - **Anything not compiled from the editable files:** the build command, the trainer's
//!   frozen code, and other languages are covered by the sandbox, not by this scanner.

use std::collections::BTreeSet;
use std::str::FromStr;

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

use crate::forbidden_name;

/// Crate roots whose modules are checked against [`FORBIDDEN_MODULES`].
const STD_ROOTS: [&str; 3] = ["std", "core", "alloc"];
/// Modules of std/core/alloc that reach files, network, processes, environment or the OS.
const FORBIDDEN_MODULES: [&str; 9] = [
    "fs",
    "net",
    "process",
    "env",
    "os",
    "path",
    "arch",
    "intrinsics",
    "ffi",
];
/// Attributes that redirect modules or link symbols.
const FORBIDDEN_ATTRIBUTES: [&str; 7] = [
    "path",
    "link",
    "link_name",
    "link_section",
    "no_mangle",
    "export_name",
    "used",
];
/// Crates that give raw OS access.
const FORBIDDEN_CRATES: [&str; 6] = ["libc", "nix", "rustix", "winapi", "windows_sys", "memmap2"];
/// Path roots that never name an external crate.
const LOCAL_ROOTS: [&str; 8] = [
    "std", "core", "alloc", "crate", "self", "super", "Self", "$crate",
];

/// A forbidden construct, described for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub construct: String,
}

/// The outcome of scanning one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    pub findings: Vec<Finding>,
    /// Crate roots of `use` paths and `::`-anchored paths (to detect new dependencies).
    pub crate_roots: BTreeSet<String>,
}

/// Scans Rust source; `Err` when it does not tokenize (unbalanced delimiters, bad literals)
/// or, holding nothing forbidden, does not parse.
pub fn scan(source: &str) -> Result<Scan, String> {
    let tokens = TokenStream::from_str(source).map_err(|e| e.to_string())?;
    let mut scan = Scan::default();
    walk(tokens, &mut scan, false);
    // Full parse as well: a file the compiler could not read must not slip through unchecked.
    // Findings come first: `macro` 2.0 items, for one, are refused rather than unparsable.
    if scan.findings.is_empty() {
        syn::parse_file(source).map_err(|e| e.to_string())?;
    }
    Ok(scan)
}

fn ident_name(tt: &TokenTree) -> Option<String> {
    match tt {
        TokenTree::Ident(i) => {
            let s = i.to_string();
            Some(s.strip_prefix("r#").map(str::to_string).unwrap_or(s))
        }
        _ => None,
    }
}

fn is_punct(tt: Option<&TokenTree>, c: char) -> bool {
    matches!(tt, Some(TokenTree::Punct(p)) if p.as_char() == c)
}

/// True when `tokens[i..]` starts with `::`.
fn is_path_sep(tokens: &[TokenTree], i: usize) -> bool {
    matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
        && is_punct(tokens.get(i + 1), ':')
}

/// `in_macro`: inside the arguments of a macro call (or a macro definition).
fn walk(stream: TokenStream, scan: &mut Scan, in_macro: bool) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    for (i, tt) in tokens.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|p| tokens.get(p));
        let next = tokens.get(i + 1);
        if let Some(name) = ident_name(tt) {
            check_ident(&name, &tokens, i, in_macro, scan);
        }
        if is_punct(Some(tt), '#') {
            let group = if is_punct(next, '!') {
                tokens.get(i + 2)
            } else {
                next
            };
            if let Some(TokenTree::Group(g)) = group {
                let attr = g.stream().into_iter().next();
                if let Some(attr) = attr.as_ref().and_then(ident_name) {
                    if g.delimiter() == Delimiter::Bracket {
                        check_attribute(&attr, g.stream(), scan);
                    }
                }
            }
        }
        if let TokenTree::Group(g) = tt {
            let macro_args = is_punct(prev, '!') && i >= 2 && ident_name(&tokens[i - 2]).is_some();
            walk(g.stream(), scan, in_macro || macro_args);
        }
    }
}

fn check_ident(name: &str, tokens: &[TokenTree], i: usize, in_macro: bool, scan: &mut Scan) {
    let prev = i.checked_sub(1).and_then(|p| tokens.get(p));
    let next = tokens.get(i + 1);
    // `'static` is a lifetime, not a static item.
    if !is_punct(prev, '\'') {
        if let Some(why) = forbidden_name::reason(name) {
            add(scan, format!("the name `{name}` ({why})"));
        }
    }
    if name_is_file_call(name, tokens, i) {
        add(
            scan,
            format!("a `{name}` call (candle's VarMap::{name} reads or writes a file)"),
        );
    }
    match name {
        "unsafe" => add(scan, "`unsafe`".into()),
        "extern" => add(scan, "`extern` (foreign code or crates)".into()),
        "mod" => {
            if let Some(m) = tokens.get(i + 1).and_then(ident_name) {
                if is_punct(tokens.get(i + 2), ';') {
                    add(
                        scan,
                        format!("`mod {m};` (a module loaded from another file)"),
                    );
                }
            }
        }
        "use" => {
            let start = if is_path_sep(tokens, i + 1) {
                i + 3
            } else {
                i + 1
            };
            collect_use_roots(tokens.get(start), &mut scan.crate_roots);
        }
        _ => {}
    }
    let after_use = prev.and_then(ident_name).as_deref() == Some("use");
    if FORBIDDEN_CRATES.contains(&name) && (is_path_sep(tokens, i + 1) || after_use) {
        add(
            scan,
            format!("the `{name}` crate (raw operating-system access)"),
        );
    }
    // `::name` anchored at the crate root names an external crate.
    if i >= 2 && is_path_sep(tokens, i - 2) && !is_path_continuation(tokens, i) {
        scan.crate_roots.insert(name.to_string());
    }
    // Checked wherever it appears, even mid-path: `crate::m::std::fs` could reach a re-export.
    if STD_ROOTS.contains(&name) {
        let bare = in_macro
            && !is_path_sep(tokens, i + 1)
            && (i < 2 || !is_path_sep(tokens, i - 2))
            && !(after_use && is_punct(next, ';'))
            && ident_name_at(tokens, i + 1).as_deref() != Some("as");
        if bare {
            // A lone `std` among macro arguments can be pasted into a path by the macro.
            add(
                scan,
                format!("a bare `{name}` token (a macro could build a forbidden path)"),
            );
        }
        check_std_path(name, tokens, i, &mut |what| add(scan, what));
    }
}

/// `.load(..)`, `.save(..)`, `::load(..)`: VarMap's file methods. Defining a `fn load` is fine.
fn name_is_file_call(name: &str, tokens: &[TokenTree], i: usize) -> bool {
    let after_dot = i >= 1 && is_punct(tokens.get(i - 1), '.');
    let after_sep = i >= 2 && is_path_sep(tokens, i - 2);
    matches!(name, "load" | "save") && (after_dot || after_sep)
}

fn ident_name_at(tokens: &[TokenTree], i: usize) -> Option<String> {
    tokens.get(i).and_then(ident_name)
}

/// Keywords that may precede `::root` without making it a path continuation.
const PATH_START_KEYWORDS: [&str; 12] = [
    "use", "pub", "return", "in", "let", "mut", "ref", "dyn", "impl", "where", "as", "else",
];

/// `#[path = ..]` and friends, also when wrapped in `#[cfg_attr(cond, path = ..)]`.
fn check_attribute(attr: &str, stream: TokenStream, scan: &mut Scan) {
    if FORBIDDEN_ATTRIBUTES.contains(&attr) {
        add(scan, format!("the `#[{attr}]` attribute"));
    }
    if attr == "cfg_attr" {
        for tt in stream.into_iter().skip(1) {
            if let TokenTree::Group(g) = tt {
                let tokens: Vec<TokenTree> = g.stream().into_iter().collect();
                // Skip the condition: attributes follow the first top-level comma.
                for element in tokens.split(|t| is_punct(Some(t), ',')).skip(1) {
                    if let Some(inner) = element.first().and_then(ident_name) {
                        let rest: TokenStream = element.iter().cloned().collect();
                        check_attribute(&inner, rest, scan);
                    }
                }
            }
        }
    }
}

fn add(scan: &mut Scan, construct: String) {
    if !scan.findings.iter().any(|f| f.construct == construct) {
        scan.findings.push(Finding { construct });
    }
}

/// True when the token at `i` is preceded by `ident ::` or `> ::` (so it is not a path root).
fn is_path_continuation(tokens: &[TokenTree], i: usize) -> bool {
    if i < 3 || !is_path_sep(tokens, i - 2) {
        return false;
    }
    match &tokens[i - 3] {
        tt @ TokenTree::Ident(_) => {
            let word = ident_name(tt).unwrap_or_default();
            !PATH_START_KEYWORDS.contains(&word.as_str())
        }
        // `Vec<T>::new` continues a path; `=> ::x` and `-> ::x` start one.
        TokenTree::Punct(p) => {
            p.as_char() == '>'
                && !(i >= 4
                    && (is_punct(tokens.get(i - 4), '=') || is_punct(tokens.get(i - 4), '-')))
        }
        TokenTree::Group(_) => false,
        TokenTree::Literal(_) => false,
    }
}

/// Checks a path starting at a std/core/alloc root: `std::fs`, `std::{fs, io}`, `std::*`,
/// `std as s`, `std::$m` (a macro building the module name).
fn check_std_path(root: &str, tokens: &[TokenTree], i: usize, found: &mut impl FnMut(String)) {
    if tokens.get(i + 1).and_then(ident_name).as_deref() == Some("as") {
        found(format!("renaming `{root}` (hides which modules are used)"));
        return;
    }
    if !is_path_sep(tokens, i + 1) {
        return;
    }
    match tokens.get(i + 3) {
        Some(tt @ TokenTree::Ident(_)) => {
            let module = ident_name(tt).unwrap_or_default();
            if FORBIDDEN_MODULES.contains(&module.as_str()) {
                found(format!(
                    "`{root}::{module}` (file, network, process, environment or OS access)"
                ));
            }
        }
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
            check_use_group(root, g.stream(), found);
        }
        Some(TokenTree::Punct(p)) if p.as_char() == '*' => {
            found(format!(
                "`{root}::*` (glob import of the whole standard library)"
            ));
        }
        Some(TokenTree::Punct(p)) if p.as_char() == '$' => {
            found(format!(
                "`{root}::$...` (a macro choosing a standard-library module)"
            ));
        }
        _ => {}
    }
}

/// The elements of `std::{a, b::c, self as s, *}`.
fn check_use_group(root: &str, stream: TokenStream, found: &mut impl FnMut(String)) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    for element in tokens.split(|t| is_punct(Some(t), ',')) {
        let first = element.first();
        // `std::{{fs}}`: a nested group is still a list of std's modules.
        if let Some(TokenTree::Group(g)) = first {
            if g.delimiter() == Delimiter::Brace {
                check_use_group(root, g.stream(), found);
                continue;
            }
        }
        match first.and_then(ident_name).as_deref() {
            Some(m) if FORBIDDEN_MODULES.contains(&m) => found(format!(
                "`{root}::{m}` (file, network, process, environment or OS access)"
            )),
            Some("self") if element.get(1).and_then(ident_name).as_deref() == Some("as") => {
                found(format!("renaming `{root}` (hides which modules are used)"))
            }
            _ if is_punct(first, '*') => found(format!(
                "`{root}::*` (glob import of the whole standard library)"
            )),
            _ if is_punct(first, '$') => found(format!(
                "`{root}::$...` (a macro choosing a standard-library module)"
            )),
            _ => {}
        }
    }
}

/// Records the crate roots a `use` tree starts from: `use a::..`, `use {a, b::c}`.
fn collect_use_roots(first: Option<&TokenTree>, roots: &mut BTreeSet<String>) {
    match first {
        Some(tt @ TokenTree::Ident(_)) => {
            let name = ident_name(tt).unwrap_or_default();
            if !LOCAL_ROOTS.contains(&name.as_str()) {
                roots.insert(name);
            }
        }
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
            let tokens: Vec<TokenTree> = g.stream().into_iter().collect();
            for element in tokens.split(|t| is_punct(Some(t), ',')) {
                let start = if is_path_sep(element, 0) { 2 } else { 0 };
                collect_use_roots(element.get(start), roots);
            }
        }
        _ => {}
    }
}
