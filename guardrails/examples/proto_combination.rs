//! Prototype (not the loop's code): a two-stage adaptive rule whose cheap screen pairs count
//! toward the final test (inverse-normal combination of the screen's and the fresh pairs'
//! one-sided t p-values), in a simplified world of independent paired differences (sd 0.0018,
//! the `issue` mix, 500 runs a session). That world has no trunk runs to reuse, so greedy there
//! is not the winner's-cursed greedy of `simulate --session` (it keeps more, falsely too); only
//! the rigorous rows are comparable with README's table.
//!
//! `cargo run --release -p agentloop-guardrails --example proto_combination`
use agentloop_guardrails::stats::one_sample_t;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::distribution::{ContinuousCDF, Normal};

const S: f64 = 0.0018;
const VAL: f64 = 0.0003;
fn n01(r: &mut ChaCha8Rng) -> f64 {
    let u: f64 = r.random::<f64>().max(1e-300);
    let v: f64 = r.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
fn draw(r: &mut ChaCha8Rng) -> f64 {
    let u: f64 = r.random();
    let ex = |r: &mut ChaCha8Rng, m: f64| -m * (1.0 - r.random::<f64>()).ln();
    if u < 0.5 {
        0.0
    } else if u < 0.8 {
        -ex(r, 0.005)
    } else {
        ex(r, 0.002)
    }
}
#[derive(Clone, Copy, Debug)]
struct R {
    c1: f64,
    n1: usize,
    c2: f64,
    n2: usize,
    alpha: f64,
    me: f64,
    greedy: bool,
}
fn decide(rule: R, mu: f64, r: &mut ChaCha8Rng) -> (bool, usize) {
    let d1 = mu + S * n01(r);
    if rule.greedy {
        return (d1 > 0.0, 1);
    }
    if d1 <= rule.c1 {
        return (false, 1);
    }
    let mut d = vec![d1];
    while d.len() < rule.n1 {
        d.push(mu + S * n01(r));
    }
    let mut runs = d.len();
    let m1 = d.iter().sum::<f64>() / d.len() as f64;
    if m1 <= rule.c2 {
        return (false, runs);
    }
    let f: Vec<f64> = (0..rule.n2).map(|_| mu + S * n01(r)).collect();
    runs += 2 * rule.n2;
    let nd = Normal::new(0.0, 1.0).unwrap();
    let z = |x: &[f64]| {
        let p = one_sample_t(x).unwrap().p.clamp(1e-300, 1.0 - 1e-16);
        nd.inverse_cdf(1.0 - p)
    };
    let (n1, n2) = (rule.n1 as f64, rule.n2 as f64);
    let zc = (n1.sqrt() * z(&d) + n2.sqrt() * z(&f)) / (n1 + n2).sqrt();
    let all = (d.iter().sum::<f64>() + f.iter().sum::<f64>()) / (n1 + n2);
    (nd.sf(zc) < rule.alpha && all >= rule.me, runs)
}
fn main() {
    let mut r = ChaCha8Rng::seed_from_u64(7);
    let rules = [
        R {
            c1: 0.0,
            n1: 1,
            c2: 0.0,
            n2: 0,
            alpha: 0.0,
            me: 0.0,
            greedy: true,
        },
        R {
            c1: 0.0015,
            n1: 3,
            c2: 0.0005,
            n2: 3,
            alpha: 0.025,
            me: 0.001,
            greedy: false,
        },
        R {
            c1: 0.0015,
            n1: 2,
            c2: 0.0005,
            n2: 2,
            alpha: 0.025,
            me: 0.001,
            greedy: false,
        },
        R {
            c1: 0.001,
            n1: 3,
            c2: 0.0008,
            n2: 4,
            alpha: 0.025,
            me: 0.001,
            greedy: false,
        },
        R {
            c1: 0.0,
            n1: 3,
            c2: 0.001,
            n2: 3,
            alpha: 0.025,
            me: 0.001,
            greedy: false,
        },
        R {
            c1: 0.0015,
            n1: 4,
            c2: 0.001,
            n2: 2,
            alpha: 0.025,
            me: 0.001,
            greedy: false,
        },
        R {
            c1: 0.0005,
            n1: 3,
            c2: 0.001,
            n2: 3,
            alpha: 0.025,
            me: 0.0005,
            greedy: false,
        },
        R {
            c1: 0.0015,
            n1: 3,
            c2: 0.0005,
            n2: 3,
            alpha: 0.025,
            me: 0.0,
            greedy: false,
        },
    ];
    for rule in rules {
        let (mut dec, mut runs, mut merges, mut fals, mut harm, mut tg) =
            (0usize, 0usize, 0usize, 0usize, 0usize, 0.0);
        let sessions = 1000;
        for _ in 0..sessions {
            let mut used = if rule.greedy { 1 } else { 13 };
            runs += used;
            while used < 500 {
                let e = draw(&mut r);
                let v = VAL * n01(&mut r);
                let (acc, k) = decide(rule, e + v, &mut r);
                used += k;
                runs += k;
                dec += 1;
                if acc {
                    merges += 1;
                    tg += e;
                    fals += (e <= 0.0) as usize;
                    harm += (e < -0.0005) as usize;
                }
            }
        }
        let n = sessions as f64;
        let pd = |mu: f64, r: &mut ChaCha8Rng| {
            (0..20000).filter(|_| decide(rule, mu, r).0).count() as f64 / 20000.0
        };
        let (fa, pw) = (pd(0.0, &mut r), pd(0.002, &mut r));
        println!("{rule:?}\n   runs/dec {:.2} merges {:.1} false {:.2} harmful {:.3} true {:.4} | FA {:.4} power@0.002 {:.3}",
            runs as f64 / dec as f64, merges as f64 / n, fals as f64 / n, harm as f64 / n, tg / n, fa, pw);
    }
}
