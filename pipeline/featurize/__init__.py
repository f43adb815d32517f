"""The `features` stage: audio in, cache rows out.

    audio.py    decode, resample, trim, peak-normalize (AUDIO_CODE_VERSION versions what it does)
    augment.py  the augmentation chain (audiomentations), seeded per clip and variant
    logmel.py   Whisper's log-mel, trimmed to the frames the audio reaches
    labels.py   label token ids with the model's own tokenizer (no audio library: train/ imports it)
    plan.py     fingerprints -> jobs
    work.py     the per-clip task (it writes its own shards) and the local worker pool
    cluster.py  the same tasks on a Dask cluster (`features --scheduler ADDRESS`)
    pool.py     the loop both take results with: as they finish, a bounded number in flight
    stage.py    run_features, which drives them and hands every change to the cache writer

Nothing is imported here, so `import whisper_tune.pipeline.featurize.labels` never loads the audio libraries.
"""
