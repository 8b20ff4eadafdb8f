//! Tests of the engine's cache: one position across entry kinds, windows that keep only what
//! can be seen, sharing, recurrent state with snapshots, and going back.

use candle_core::{Device, Tensor};

use super::*;

/// Keys/values of two heads for positions `pos..pos + n`: a row holds its position as
/// (thousands, rest), values the cache's f16 rounding keeps exact; the second head adds 0.5.
fn rows(pos: usize, n: usize) -> Tensor {
    let head =
        |h: f32| (pos..pos + n).flat_map(move |p| [(p / 1000) as f32 + h, (p % 1000) as f32]);
    let v: Vec<f32> = head(0.0).chain(head(0.5)).collect();
    Tensor::from_vec(v, (1, 2, n, 2), &Device::Cpu).unwrap()
}

/// The positions a view holds, read back from its values (checking both heads agree).
fn positions(view: &KvView) -> Vec<usize> {
    let head = |h: usize| -> Vec<f32> {
        view.k
            .narrow(1, h, 1)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (k, k1) = (head(0), head(1));
    for (a, b) in k.iter().zip(&k1).step_by(2) {
        assert_eq!(a + 0.5, *b, "heads disagree");
    }
    k.chunks(2)
        .map(|c| c[0] as usize * 1000 + c[1] as usize)
        .collect()
}

/// One pass of `n` tokens through every KV layer of `c`.
fn pass(c: &mut Cache, kv_layers: &[usize], n: usize) -> Vec<KvView> {
    let pos = c.pos();
    c.begin(n).unwrap();
    let views = kv_layers
        .iter()
        .map(|&l| c.append_kv(l, &rows(pos, n), &rows(pos, n)).unwrap())
        .collect();
    c.commit(&vec![7; n]).unwrap();
    views
}

#[test]
fn full_kv_keeps_every_position_under_one_position() {
    let mut c = Cache::full(2, 1000, 2048).unwrap();
    pass(&mut c, &[0, 1], 3);
    for step in 0..300 {
        let views = pass(&mut c, &[0, 1], 1);
        for v in &views {
            assert_eq!(v.start, 0);
            assert_eq!(positions(v), (0..4 + step).collect::<Vec<_>>());
        }
    }
    assert_eq!(c.pos(), 303);
    assert_eq!(c.tokens().len(), 303);
}

#[test]
fn f32_values_are_stored_as_f16() {
    let mut c = Cache::full(1, 10, 10).unwrap();
    let x = Tensor::from_vec(
        vec![1.0001f32, 0.1, -3.3, 65504.0],
        (1, 1, 1, 4),
        &Device::Cpu,
    )
    .unwrap();
    c.begin(1).unwrap();
    let view = c.append_kv(0, &x, &x).unwrap();
    assert_eq!((view.k.dtype(), view.v.dtype()), (DType::F16, DType::F16));
    let got: Vec<half::f16> = view.k.flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<half::f16> = [1.0001f32, 0.1, -3.3, 65504.0]
        .iter()
        .map(|v| half::f16::from_f32(*v))
        .collect();
    assert_eq!(got, want);
    // Two bytes a value: one position of one head, keys and values.
    assert_eq!(c.reserved_bytes(), 10 * 4 * 2 * 2);
}

#[test]
fn a_full_context_is_refused_before_anything_changes() {
    let mut c = Cache::full(1, 5, 8192).unwrap();
    pass(&mut c, &[0], 4);
    let Err(Error::ContextFull {
        needed,
        ctx_size,
        model_max,
    }) = c.begin(2)
    else {
        panic!("6 positions should not fit in 5")
    };
    assert_eq!((needed, ctx_size, model_max), (6, 5, 8192));
    assert_eq!(c.pos(), 4);
    pass(&mut c, &[0], 1);
    assert_eq!(c.pos(), 5);
}

#[test]
fn truncate_then_regenerate_overwrites_the_tail() {
    let mut c = Cache::full(1, 64, 64).unwrap();
    pass(&mut c, &[0], 10);
    assert_eq!(c.rewind(6), 6);
    assert_eq!(c.pos(), 6);
    let views = pass(&mut c, &[0], 2);
    assert_eq!(positions(&views[0]), (0..8).collect::<Vec<_>>());
    assert_eq!(c.rewind(100), 8, "never forward");
}

#[test]
fn passes_must_be_begun_and_committed_whole() {
    let mut c = Cache::full(1, 64, 64).unwrap();
    assert!(
        c.append_kv(0, &rows(0, 1), &rows(0, 1)).is_err(),
        "no pass begun"
    );
    c.begin(2).unwrap();
    assert!(c.begin(1).is_err(), "nested pass");
    assert!(
        c.append_kv(0, &rows(0, 3), &rows(0, 3)).is_err(),
        "3 rows in a pass of 2"
    );
    assert!(c.commit(&[1]).is_err(), "1 token committed to a pass of 2");
    c.abort();
    assert_eq!(c.pos(), 0);
    assert!(c.append_kv(5, &rows(0, 1), &rows(0, 1)).is_err());
}

#[test]
fn a_window_keeps_what_its_queries_see_and_stays_small() {
    let (w, ctx) = (4, 4000);
    let mut c = Cache::new(&[LayerKind::Full, LayerKind::Window(w)], ctx, ctx).unwrap();
    pass(&mut c, &[0, 1], 7);
    let mut peak = 0;
    for _ in 0..3000 {
        let pos = c.pos();
        let views = pass(&mut c, &[0, 1], 1);
        let held = positions(&views[1]);
        // Contiguous, ending at the new token, covering the window.
        assert_eq!(held.last(), Some(&pos));
        assert!(
            views[1].start <= (pos + 1).saturating_sub(w),
            "window not covered at {pos}"
        );
        assert_eq!(held, (views[1].start..=pos).collect::<Vec<_>>());
        peak = peak.max(c.entries_bytes(1));
    }
    let bound = 2 * (w + WINDOW_SLACK) * 2 * 2 * 2 * 2;
    assert!(
        peak <= bound,
        "window layer holds {peak} bytes, bound {bound}"
    );
    assert!(
        c.entries_bytes(0) >= 3007 * 2 * 2 * 2 * 2,
        "the full layer keeps everything"
    );
}

#[test]
fn a_long_chunk_through_a_window_sees_its_whole_window() {
    let mut c = Cache::new(&[LayerKind::Window(8)], 2000, 2000).unwrap();
    for _ in 0..5 {
        let pos = c.pos();
        let views = pass(&mut c, &[0], 300);
        assert!(views[0].start <= (pos + 1).saturating_sub(8));
        assert_eq!(positions(&views[0]).last(), Some(&(pos + 299)));
    }
}

#[test]
fn a_window_rewinds_within_what_it_holds_and_restarts_beyond() {
    let mut c = Cache::new(&[LayerKind::Window(4)], 4000, 4000).unwrap();
    pass(&mut c, &[0], 1);
    for _ in 0..2000 {
        pass(&mut c, &[0], 1);
    }
    assert_eq!(
        c.rewind(1990),
        1990,
        "a few tokens back is within the slack"
    );
    let views = pass(&mut c, &[0], 1);
    assert_eq!(positions(&views[0]).last(), Some(&1990));
    assert_eq!(c.rewind(10), 0, "long gone: start again");
    assert_eq!(c.pos(), 0);
}

#[test]
fn a_shared_layer_reads_its_source() {
    let kinds = [LayerKind::Full, LayerKind::Shared(0)];
    let mut c = Cache::new(&kinds, 64, 64).unwrap();
    c.begin(3).unwrap();
    c.append_kv(0, &rows(0, 3), &rows(0, 3)).unwrap();
    let shared = c.shared_kv(1).unwrap();
    assert_eq!(positions(&shared), vec![0, 1, 2]);
    assert!(c.append_kv(1, &rows(0, 3), &rows(0, 3)).is_err());
    c.commit(&[1, 2, 3]).unwrap();
    assert!(Cache::new(&[LayerKind::Shared(1), LayerKind::Full], 8, 8).is_err());
    assert!(Cache::new(&[LayerKind::Window(0)], 8, 8).is_err());
}

/// A recurrent step: the state counts the tokens seen (state += n).
fn recurrent_pass(c: &mut Cache, n: usize) -> f32 {
    c.begin(n).unwrap();
    let s = c.state(0, &Device::Cpu).unwrap();
    s[0] = (&s[0] + n as f64).unwrap();
    let v = s[0].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
    c.commit(&vec![1; n]).unwrap();
    v
}

#[test]
fn recurrent_state_goes_back_only_to_snapshots() {
    let kinds = [LayerKind::Recurrent(vec![vec![1, 2]]), LayerKind::Full];
    let mut c = Cache::new(&kinds, 64, 64).unwrap();
    assert!(c.has_recurrent());
    assert_eq!(recurrent_pass(&mut c, 5), 5.0);
    c.snapshot().unwrap();
    assert_eq!(recurrent_pass(&mut c, 3), 8.0);
    assert_eq!(c.rewind(8), 8, "the current position is always reachable");
    assert_eq!(c.rewind(7), 5, "back to the snapshot at 5");
    assert_eq!(recurrent_pass(&mut c, 1), 6.0, "state restored to 5 tokens");
    assert_eq!(c.rewind(4), 0, "before every snapshot: start again");
    assert_eq!(recurrent_pass(&mut c, 2), 2.0);
}

#[test]
fn a_failed_pass_over_recurrent_state_restarts_the_sequence() {
    let mut c = Cache::new(&[LayerKind::Recurrent(vec![vec![1]])], 64, 64).unwrap();
    recurrent_pass(&mut c, 4);
    c.begin(2).unwrap();
    let s = c.state(0, &Device::Cpu).unwrap();
    s[0] = (&s[0] + 100.0).unwrap();
    c.abort();
    assert_eq!(
        c.pos(),
        0,
        "the state no longer matches position 4: start again"
    );
    assert_eq!(c.rewind(4), 0);
    assert_eq!(recurrent_pass(&mut c, 1), 1.0);
}

/// Latents of width 3 for positions `pos..pos + n`: (position, position + 0.5, -1).
fn latents(pos: usize, n: usize) -> Tensor {
    let v: Vec<f32> = (pos..pos + n)
        .flat_map(|p| [p as f32, p as f32 + 0.5, -1.0])
        .collect();
    Tensor::from_vec(v, (1, 1, n, 3), &Device::Cpu).unwrap()
}

#[test]
fn a_latent_entry_stores_one_row_whose_leading_columns_are_the_values() {
    let kinds = [LayerKind::Latent { value_width: 2 }, LayerKind::Full];
    let mut c = Cache::new(&kinds, 600, 600).unwrap();
    let mut view = None;
    for (pos, n) in [(0, 5), (5, 1), (6, 300)] {
        c.begin(n).unwrap();
        view = Some(c.append_latent(0, &latents(pos, n)).unwrap());
        c.append_kv(1, &rows(pos, n), &rows(pos, n)).unwrap();
        assert!(c.append_kv(0, &rows(pos, n), &rows(pos, n)).is_err());
        assert!(c.append_latent(1, &latents(pos, n)).is_err());
        c.commit(&vec![1; n]).unwrap();
    }
    let view = view.unwrap();
    assert_eq!(
        (view.k.dims(), view.v.dims()),
        (&[1, 1, 306, 3][..], &[1, 1, 306, 2][..])
    );
    let v: Vec<f32> = view.v.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(&v[..4], [0.0, 0.5, 1.0, 1.5]);
    assert_eq!(&v[v.len() - 2..], [305.0, 305.5]);
    // Only the latent is held: 3 f32 values per position, against 2 × 2 × 2 f16 ones for the
    // KV layer (both buffers grew to the same capacity).
    assert_eq!(c.entries_bytes(0) * 4, c.entries_bytes(1) * 3);
    // Going back is exact, as for full KV.
    assert_eq!(c.rewind(4), 4);
    c.begin(1).unwrap();
    let again = c.append_latent(0, &latents(4, 1)).unwrap();
    c.append_kv(1, &rows(4, 1), &rows(4, 1)).unwrap();
    c.commit(&[1]).unwrap();
    let k: Vec<f32> = again.k.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(k.len(), 15);
    assert_eq!(&k[12..], [4.0, 4.5, -1.0]);
}
