//! Export and import: JSONL/JSON round-trips reproduce the chain and the derived tables; TSV
//! keeps autoresearch's results.tsv columns.

mod common;

use std::io::BufReader;

use agentloop_ledger::export::{export, import, Format, TSV_COLUMNS};
use agentloop_ledger::{Ledger, LedgerError};
use common::populate;

fn exported(ledger: &Ledger, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    export(ledger, format, &mut out).unwrap();
    out
}

fn round_trip(format: Format) {
    let dir = tempfile::tempdir().unwrap();
    let original = Ledger::open(dir.path().join("a.db")).unwrap();
    populate(&original);
    let bytes = exported(&original, format);

    let copy = Ledger::open(dir.path().join("b.db")).unwrap();
    let count = import(&copy, format, &mut BufReader::new(bytes.as_slice())).unwrap();
    assert_eq!(count, original.len().unwrap());
    let report = copy.verify().unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(
        copy.head().unwrap(),
        original.head().unwrap(),
        "same chain, same head"
    );
    assert_eq!(copy.events().unwrap(), original.events().unwrap());
    assert_eq!(
        copy.views_snapshot().unwrap(),
        original.views_snapshot().unwrap()
    );
    // And the copy exports to the same bytes again.
    assert_eq!(exported(&copy, format), bytes);
}

#[test]
fn jsonl_export_reimports_into_an_equal_ledger() {
    round_trip(Format::Jsonl);
}

#[test]
fn json_export_reimports_into_an_equal_ledger() {
    round_trip(Format::Json);
}

#[test]
fn import_refuses_a_tampered_export_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let original = Ledger::open(dir.path().join("a.db")).unwrap();
    populate(&original);
    let text = String::from_utf8(exported(&original, Format::Jsonl)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[3] = lines[3].replace("\"attempt\":1", "\"attempt\":2");
    let tampered = lines.join("\n");

    let copy = Ledger::open(dir.path().join("b.db")).unwrap();
    let err = import(
        &copy,
        Format::Jsonl,
        &mut BufReader::new(tampered.as_bytes()),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "import refused at line 4: seq 4: payload does not match its hash"
    );
    assert_eq!(
        copy.len().unwrap(),
        0,
        "nothing imported from a file that does not verify"
    );

    let err = import(
        &copy,
        Format::Jsonl,
        &mut BufReader::new("{not json".as_bytes()),
    )
    .unwrap_err();
    assert!(
        matches!(err, LedgerError::BadImport { line: 1, .. }),
        "{err}"
    );
}

#[test]
fn import_refuses_a_non_empty_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("a.db")).unwrap();
    populate(&ledger);
    let bytes = exported(&ledger, Format::Jsonl);
    let before = ledger.len().unwrap();
    let err = import(
        &ledger,
        Format::Jsonl,
        &mut BufReader::new(bytes.as_slice()),
    )
    .unwrap_err();
    assert!(
        matches!(err, LedgerError::ImportIntoNonEmpty(n) if n == before),
        "{err}"
    );
    assert_eq!(ledger.len().unwrap(), before);
}

#[test]
fn tsv_has_the_results_tsv_columns_then_ours() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("a.db")).unwrap();
    let f = populate(&ledger);
    let text = String::from_utf8(exported(&ledger, Format::Tsv)).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    assert_eq!(
        &header[..5],
        ["commit", "val_bpb", "memory_gb", "status", "description"]
    );
    assert_eq!(header, TSV_COLUMNS);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.len() == TSV_COLUMNS.len()));
    let accepted = rows.iter().find(|r| r[5] == f.accepted).unwrap();
    assert_eq!(
        accepted[..5],
        ["3333333", "1.490000", "2.0", "accepted", "change c1a0001"]
    );
    let statuses: Vec<&str> = rows.iter().map(|r| r[3]).collect();
    assert_eq!(
        statuses,
        [
            "accepted",
            "rejected",
            "rolled-back",
            "crashed",
            "policy-rejected"
        ]
    );
}

#[test]
fn unknown_formats_are_named() {
    let err = "xml".parse::<Format>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown export format \"xml\" (expected json, jsonl or tsv)"
    );
}
