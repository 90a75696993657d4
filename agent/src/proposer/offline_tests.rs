//! Unit tests of the offline proposer's stream (its file-level tests are in
//! agent/tests/offline_proposer.rs).

use super::*;

#[test]
fn descriptions_round_trip_to_settings() {
    let d = OfflineProposer::describe(
        "optim.lr",
        &toml::Value::Float(0.004),
        &toml::Value::Float(0.002),
    );
    assert_eq!(d, "set optim.lr = 0.004 (was 0.002)");
    assert_eq!(
        parse_description(&d),
        Some(("optim.lr".into(), "0.004".into()))
    );
    assert_eq!(
        parse_replaced(&d),
        Some(("optim.lr".into(), "0.002".into()))
    );
    assert_eq!(parse_description("use rotary embeddings"), None);
}

#[test]
fn grid_distance_is_steps_or_numeric_rank() {
    let vals: Vec<toml::Value> = [1, 2, 4, 8]
        .iter()
        .map(|&v| toml::Value::Integer(v))
        .collect();
    assert_eq!(
        grid_distances(&vals, &toml::Value::Integer(4)),
        vec![2, 1, 0, 1]
    );
    assert_eq!(
        grid_distances(&vals, &toml::Value::Integer(5)),
        vec![4, 2, 1, 3]
    );
}

#[test]
fn null_fraction_mixes_in_null_changes_as_a_stream_fixed_by_the_seed() {
    let space = OfflineSpace {
        file: "config.toml".into(),
        space: vec![super::super::space::SpaceParam {
            key: "optim.lr".into(),
            values: [0.01, 0.03, 0.1, 0.3]
                .iter()
                .map(|&v| toml::Value::Float(v))
                .collect(),
        }],
        null_fraction: 0.5,
    };
    let ctx = ProposalContext {
        editable_files: vec![("config.toml".into(), "[optim]\nlr = 0.1\n".into())],
        history: Vec::new(),
        noise_floor: None,
        min_gain: None,
        budget_left: std::time::Duration::from_secs(60),
        metric: "val_bpb".into(),
        request: Request::New,
        notice: None,
    };
    let stream = |seed: u64| -> Vec<bool> {
        let mut p = OfflineProposer::new(space.clone(), seed);
        let mut nulls = Vec::new();
        while let Ok(proposal) = p.next_proposal(&ctx) {
            nulls.push(!proposal.description.starts_with("set "));
        }
        nulls
    };
    let a = stream(7);
    assert_eq!(a, stream(7), "the same seed gives the same stream");
    // The three grid settings, then the refinements between them, then the space ends.
    let settings = a.iter().filter(|n| !**n).count();
    assert!((6..20).contains(&settings), "{settings} settings");
    let mut long = OfflineProposer::new(
        OfflineSpace {
            space: vec![super::super::space::SpaceParam {
                key: "optim.lr".into(),
                values: (1..200)
                    .map(|i| toml::Value::Float(i as f64 / 1000.0))
                    .collect(),
            }],
            ..space.clone()
        },
        7,
    );
    let nulls = (0..200)
        .filter(|_| {
            !long
                .next_proposal(&ctx)
                .unwrap()
                .description
                .starts_with("set ")
        })
        .count();
    assert!((70..130).contains(&nulls), "{nulls} of 200 were null");
    // Independent draws for every seed, the default 0 included: no long runs of nulls.
    for seed in [0, 1, 2] {
        let mut p = OfflineProposer::new(long.space.clone(), seed);
        let flips: Vec<bool> = (0..100)
            .map(|_| {
                !p.next_proposal(&ctx)
                    .unwrap()
                    .description
                    .starts_with("set ")
            })
            .collect();
        let nulls = flips.iter().filter(|n| **n).count();
        let longest = flips.split(|n| !*n).map(<[bool]>::len).max().unwrap_or(0);
        assert!(
            (30..70).contains(&nulls) && longest < 10,
            "seed {seed}: {nulls} nulls, run {longest}"
        );
    }
}
