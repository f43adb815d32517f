"""The `validate` stage: CSV (or `datasets` folder) in, WORK/manifest.parquet and the report out.

    csvfile.py     reading the CSV: columns found, paths resolved, one reason per bad row
    checks.py      the per-row checks every input form shares: audio path, audio file, transcript, split column
    dataset.py     `--dataset`: a `datasets` folder, Arrow / Parquet files or a hub id, as clips
    recordings.py  long recordings (a CSV of recordings + SRT/VTT, or of segments) into windowed rows
    subtitles.py   SRT / WebVTT files -> cues (pysubs2)
    segments.py    segment tables (audios,start,end,transcription) -> cues
    windows.py     cue checks and windows of at most data.window_seconds along the cues
    grouping.py    group-aware splits (speaker, session, ...) and the seed search
    leakage.py     test or validation clips that say a train sentence
    manifest.py    the manifest's schema, written atomically and read back by `features`
    report.py      the result record, the summary and the durations plot
    stage.py       run_validate, which drives them
"""
