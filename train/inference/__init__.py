"""Inference with a (fine-tuned) model, all on one decoder:

- decode.py      decoding with either back end (transformers, CTranslate2), Whisper's guards, beams, prompts:
                 cached features for evaluate, audio (texts and timed segments) for transcribe
- outputs.py     output paths checked before any decoding
- evaluate.py    `whisper-tune evaluate`: WER / CER on the cached clean clips, optionally against a baseline
- transcribe.py  `whisper-tune transcribe`: text for new audio files (the only module here that decodes audio)
- export.py      `whisper-tune export`: a verified CTranslate2 / faster-whisper folder (conversion in
                 whisper_tune.pipeline.models.ct2_export)
- subtitles.py   SRT / WebVTT formatting of decoded segments (`transcribe -o out.srt`)
- longform.py    held-out clips joined into 60-90 s recordings: long-form WER, glued words, SRT

Nothing is imported here, so `import whisper_tune.train.inference.evaluate` never loads the audio libraries.
"""
