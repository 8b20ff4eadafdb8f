//! Tests of reading RoPE configurations in every format.

use super::*;

fn hf(json: &str) -> HfConfig {
    HfConfig::parse(json, "config.json").unwrap()
}

fn err(json: &str) -> String {
    RopeConfig::from_hf(&hf(json), 1e4).unwrap_err().to_string()
}

#[test]
fn every_scaling_type_is_read_from_an_old_config_json() {
    let r = RopeConfig::from_hf(&hf(r#"{"rope_theta": 5e5}"#), 1e4).unwrap();
    assert_eq!(r, RopeConfig::plain(5e5));
    let r = RopeConfig::from_hf(&hf(r#"{}"#), 1e4).unwrap();
    assert_eq!(r, RopeConfig::plain(1e4));
    let r = RopeConfig::from_hf(
        &hf(r#"{"rope_scaling": {"type": "linear", "factor": 4.0}}"#),
        1e4,
    )
    .unwrap();
    assert_eq!(r.scaling, RopeScaling::Linear(4.0));
    let r = RopeConfig::from_hf(
        &hf(r#"{"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}"#),
        1e4,
    )
    .unwrap();
    assert!(matches!(r.scaling, RopeScaling::Llama3(s) if s.factor == 8.0));
}

#[test]
fn transformers_5_rope_parameters_carry_the_base_and_the_type() {
    let r = RopeConfig::from_hf(
        &hf(
            r#"{"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}"#,
        ),
        1e4,
    )
    .unwrap();
    assert_eq!(r.base, 5e5);
    assert!(matches!(r.scaling, RopeScaling::Llama3(s) if s.factor == 8.0));
    let r = RopeConfig::from_hf(
        &hf(
            r#"{"rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
            "partial_rotary_factor": 1.0}}"#,
        ),
        1e4,
    )
    .unwrap();
    assert_eq!(r, RopeConfig::plain(1e6));
}

#[test]
fn per_layer_type_rope_parameters_are_read_per_type_and_refused_where_flat_is_needed() {
    let h = hf(r#"{"rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 8.0}}}"#);
    let full = RopeConfig::from_hf_layer_type(&h, "full_attention", 1.0)
        .unwrap()
        .unwrap();
    assert_eq!((full.base, full.scaling), (1e6, RopeScaling::Linear(8.0)));
    let local = RopeConfig::from_hf_layer_type(&h, "sliding_attention", 1.0)
        .unwrap()
        .unwrap();
    assert_eq!(local, RopeConfig::plain(1e4));
    let e = RopeConfig::from_hf_layer_type(&h, "linear_attention", 1.0).unwrap_err();
    assert!(
        e.to_string().contains("rope_parameters.linear_attention"),
        "{e}"
    );
    let e = RopeConfig::from_hf(&h, 1.0).unwrap_err().to_string();
    assert!(e.contains("per layer type"), "{e}");
    assert!(
        RopeConfig::from_hf_layer_type(&hf("{}"), "full_attention", 1.0)
            .unwrap()
            .is_none()
    );
}

#[test]
fn unknown_types_keys_and_partial_rotation_are_refused_naming_file_key_and_value() {
    let e = err(r#"{"rope_parameters": {"rope_type": "frobnicate", "rope_theta": 1e4}}"#);
    for part in [
        "config.json",
        "rope_parameters.rope_type",
        "frobnicate",
        "yarn",
        "longrope",
    ] {
        assert!(e.contains(part), "{part}: {e}");
    }
    let e = err(r#"{"rope_scaling": {"type": "frobnicate", "factor": 2.0}}"#);
    assert!(
        e.contains("rope_scaling.rope_type") && e.contains("frobnicate"),
        "{e}"
    );
    let e = err(r#"{"rope_parameters": {"rope_type": "linear", "factor": 2.0, "beta_fast": 3}}"#);
    assert!(e.contains("beta_fast") && e.contains("factor"), "{e}");
    let e = err(r#"{"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.25}}"#);
    assert!(
        e.contains("rope_parameters.partial_rotary_factor = 0.25"),
        "{e}"
    );
    let e = err(r#"{"partial_rotary_factor": 0.5}"#);
    assert!(e.contains("partial_rotary_factor = 0.5"), "{e}");
    let e = err(r#"{"rope_parameters": {"rope_type": "linear", "factor": -2.0}}"#);
    assert!(
        e.contains("rope_parameters.factor") && e.contains("-2"),
        "{e}"
    );
}

#[test]
fn yarn_divisors_and_magnitude_are_transformers_values() {
    // transformers 5.25, _compute_yarn_parameters: head_dim 16, rope_theta 1e6, factor 4,
    // original_max_position_embeddings 64 → base/inv_freq and attention_factor.
    let r = RopeConfig::from_hf(
        &hf(
            r#"{"max_position_embeddings": 256, "rope_parameters": {"rope_type": "yarn",
            "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 64}}"#,
        ),
        1e4,
    )
    .unwrap();
    let RopeScaling::Yarn(y) = r.scaling else {
        panic!("{r:?}")
    };
    assert!((y.magnitude - 1.138629436111989).abs() < 1e-12);
    let f = yarn_freq_factors(16, r.base, &y);
    let want = [1.0, 1.6, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0];
    for (a, b) in f.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{f:?}");
    }
}

#[test]
fn dynamic_ntk_grows_the_base_only_past_the_trained_context() {
    let r = RopeConfig::from_hf(
        &hf(r#"{"max_position_embeddings": 256,
            "rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}}"#),
        1e4,
    )
    .unwrap();
    assert_eq!(
        r.scaling,
        RopeScaling::Dynamic {
            factor: 2.0,
            original: 256
        }
    );
}

#[test]
fn longrope_reads_both_factor_lists_and_its_magnitude() {
    let r = RopeConfig::from_hf(
        &hf(
            r#"{"max_position_embeddings": 131072, "rope_parameters": {"rope_type": "longrope",
            "rope_theta": 1e4, "original_max_position_embeddings": 4096,
            "short_factor": [1.0, 1.5], "long_factor": [2.0, 3.0]}}"#,
        ),
        1e4,
    )
    .unwrap();
    let RopeScaling::LongRope(l) = r.scaling else {
        panic!("{r:?}")
    };
    assert_eq!(
        (l.short, l.long, l.original),
        (vec![1.0, 1.5], vec![2.0, 3.0], 4096)
    );
    let want = (1.0 + 32f64.ln() / 4096f64.ln()).sqrt();
    assert!((l.magnitude - want).abs() < 1e-12);
    let e = err(
        r#"{"max_position_embeddings": 8192, "rope_parameters": {"rope_type": "longrope",
        "original_max_position_embeddings": 4096, "short_factor": [1.0], "long_factor": "x"}}"#,
    );
    assert!(e.contains("long_factor"), "{e}");
}

#[test]
fn proportional_rope_turns_the_fastest_quarter_with_whole_head_frequencies() {
    let h = hf(r#"{"rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                           "rope_theta": 1000000.0}}}"#);
    let full = RopeConfig::from_hf_layer_type(&h, "full_attention", 1.0)
        .unwrap()
        .unwrap();
    let scaling = RopeScaling::Proportional {
        partial: 0.25,
        factor: 1.0,
    };
    assert_eq!((full.base, &full.scaling), (1e6, &scaling));
    // transformers' _compute_proportional_rope_parameters: head_dim 32, factor 0.25 → the
    // 4 fastest of 16 inverse frequencies base^(-2i/32), the other 12 zero; cos/sin over
    // (x[i], x[i + 16]).
    let (d, pos) = (32, 7usize);
    let rope = full.build_plain(d, Style::HalfSplit).unwrap();
    let x: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
    let t = rope.tables(pos, 1, &candle_core::Device::Cpu).unwrap();
    let xt =
        candle_core::Tensor::from_vec(x.clone(), (1, 1, 1, d), &candle_core::Device::Cpu).unwrap();
    let y: Vec<f32> = rope
        .apply(&xt, &t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for i in 0..d / 2 {
        let inv = if i < 4 {
            1e6f64.powf(-2.0 * i as f64 / d as f64)
        } else {
            0.0
        };
        let (c, s) = (
            (pos as f64 * inv).cos() as f32,
            (pos as f64 * inv).sin() as f32,
        );
        let (a, b) = (x[i], x[i + d / 2]);
        assert!((y[i] - (a * c - b * s)).abs() < 1e-5, "{i}: {y:?}");
        assert!((y[i + d / 2] - (a * s + b * c)).abs() < 1e-5, "{i}: {y:?}");
    }
    assert_eq!(y[4..16], x[4..16]);
    let e = RopeConfig::from_hf_layer_type(
        &hf(
            r#"{"rope_parameters": {"full_attention": {"rope_type": "proportional",
            "partial_rotary_factor": 1.5}}}"#,
        ),
        "full_attention",
        1.0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("partial_rotary_factor = 1.5"), "{e}");
}
