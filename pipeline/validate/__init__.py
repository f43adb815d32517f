"""The `validate` stage: CSV in, WORK/manifest.parquet and the report out.

    csvfile.py   reading the CSV: columns found, paths resolved, one reason per bad row
    grouping.py  group-aware splits (speaker, session, ...) and the seed search
    leakage.py   test or validation clips that say a train sentence
    manifest.py  the manifest's schema, written atomically and read back by `features`
    report.py    the result record, the summary and the durations plot
    stage.py     run_validate, which drives them
"""
