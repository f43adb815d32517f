"""Model sources, side by side (dependencies point down this list, never up):

- folder.py      what a model folder holds: transformers or CTranslate2, its JSON, its Whisper tokenizer
- ct2_binary.py  reading a CTranslate2 model.bin
- ct2_import.py  CTranslate2 folder -> cached transformers checkpoint
- ct2_export.py  transformers checkpoint -> CTranslate2 folder (the conversion; the command is whisper_tune.train.inference.export)
- source.py      what `--model` may name (bundled / local / hub / CTranslate2), resolved; processor loading

The names other modules import are re-exported here (special tokens live in pipeline.core.tokens).
"""

from whisper_tune.pipeline.models.ct2_import import import_ct2
from whisper_tune.pipeline.models.folder import (is_ct2_folder, is_multilingual, is_transformers_folder, optional_token_id, read_json, token_id,
                     tokenizer_from_file)
from whisper_tune.pipeline.models.source import bundled_model_dir, load_processor, resolve_model

__all__ = [
    "bundled_model_dir", "import_ct2", "is_ct2_folder", "is_multilingual",
    "is_transformers_folder", "load_processor", "optional_token_id", "read_json", "resolve_model", "token_id",
    "tokenizer_from_file",
]
