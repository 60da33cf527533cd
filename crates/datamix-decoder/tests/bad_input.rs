//! Bad input gives typed errors that name the problem, never a panic.

mod common;

use std::collections::HashMap;

use common::*;
use datamix_decoder::checkpoint::{save_weights, to_host, write_safetensors};
use datamix_decoder::{DecoderConfig, DecoderError, EvalConfig, Packer, Trainer, evaluate};

fn saved_tiny(dir: &std::path::Path) -> std::path::PathBuf {
    let device = Default::default();
    let model = tiny().init::<Inner>(&device).unwrap();
    let path = dir.join("w.safetensors");
    save_weights(&model, &tiny(), &path).unwrap();
    path
}

#[test]
fn config_with_indivisible_heads_is_rejected() {
    let device = Default::default();
    let err = DecoderConfig::new(256, 66, 1, 4)
        .init::<Inner>(&device)
        .unwrap_err();
    assert!(
        matches!(
            err,
            DecoderError::InvalidConfig {
                field: "d_model",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn checkpoint_with_other_vocab_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_tiny(dir.path());
    let other = DecoderConfig {
        vocab_size: 300,
        ..tiny()
    };
    let err = other
        .load_weights::<Inner>(&path, &Default::default())
        .unwrap_err();
    match err {
        DecoderError::TensorMismatch { name, .. } => assert_eq!(name, "embed.weight"),
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn missing_and_extra_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let model = tiny().init::<Inner>(&device).unwrap();
    let mut map = to_host(&model);
    let removed = map.remove("layers.1.attn.k_proj.weight").unwrap();
    let p = dir.path().join("missing.safetensors");
    write_safetensors(&p, &map, HashMap::new()).unwrap();
    let err = tiny().load_weights::<Inner>(&p, &device).unwrap_err();
    assert!(
        matches!(&err, DecoderError::MissingTensor { name, .. } if name == "layers.1.attn.k_proj.weight"),
        "{err}"
    );
    map.insert("layers.1.attn.k_proj.weight".into(), removed.clone());
    map.insert("layers.9.bogus.weight".into(), removed);
    let p = dir.path().join("extra.safetensors");
    write_safetensors(&p, &map, HashMap::new()).unwrap();
    let err = tiny().load_weights::<Inner>(&p, &device).unwrap_err();
    assert!(
        matches!(&err, DecoderError::UnexpectedTensor { name, .. } if name == "layers.9.bogus.weight"),
        "{err}"
    );
}

#[test]
fn truncated_or_corrupt_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_tiny(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    for (i, broken) in [
        bytes[..bytes.len() / 2].to_vec(),
        bytes[..5].to_vec(),
        b"garbage that is not a header".to_vec(),
        {
            let mut b = bytes.clone();
            b[8] = b'!'; // break the header JSON
            b
        },
    ]
    .into_iter()
    .enumerate()
    {
        let p = dir.path().join(format!("broken{i}.safetensors"));
        std::fs::write(&p, broken).unwrap();
        let err = tiny()
            .load_weights::<Inner>(&p, &Default::default())
            .unwrap_err();
        assert!(
            matches!(err, DecoderError::CorruptCheckpoint { .. }),
            "{i}: {err}"
        );
    }
    let err = tiny()
        .load_weights::<Inner>(&dir.path().join("nope.safetensors"), &Default::default())
        .unwrap_err();
    assert!(matches!(err, DecoderError::Io { .. }), "{err}");
}

#[test]
fn empty_or_out_of_vocab_streams_are_rejected() {
    let device = Default::default();
    let model = tiny().init::<Inner>(&device).unwrap();
    let cfg = EvalConfig::new(32);
    assert!(matches!(
        evaluate(&model, &[], &cfg, &device),
        Err(DecoderError::InvalidInput(_))
    ));
    assert!(matches!(
        evaluate(&model, &[1], &cfg, &device),
        Err(DecoderError::InvalidInput(_))
    ));
    assert!(matches!(
        evaluate(&model, &[1, 2, 999], &cfg, &device),
        Err(DecoderError::TokenOutOfRange {
            token: 999,
            position: 2,
            ..
        })
    ));
    let too_long = EvalConfig::new(1000);
    assert!(matches!(
        evaluate(&model, &[1, 2, 3], &too_long, &device),
        Err(DecoderError::InvalidConfig {
            field: "window",
            ..
        })
    ));
    // Training on an out-of-vocabulary batch fails without losing the model.
    let mut trainer = Trainer::<B>::new(tiny(), train_cfg(2), &device).unwrap();
    let bad = Packer::new(std::iter::once(vec![300u32; 200]), 2, 64)
        .next()
        .unwrap();
    assert!(matches!(
        trainer.step_on(&[bad]),
        Err(DecoderError::TokenOutOfRange { .. })
    ));
    assert_eq!(trainer.step(), 0);
    let mut train = train_cfg(2);
    train.seq_len = 1000;
    assert!(matches!(
        Trainer::<B>::new(tiny(), train, &device),
        Err(DecoderError::InvalidConfig {
            field: "seq_len",
            ..
        })
    ));
}
