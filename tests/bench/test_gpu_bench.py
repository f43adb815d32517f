"""bench/gpu_bench.py runs end to end on the CPU at a tiny size, and its estimates are sane."""

from __future__ import annotations

import pytest

import re
import subprocess
import sys

from whisper_tune.testing import REPO_ROOT, load_script

gpu_bench = load_script("bench/gpu_bench.py")


def test_device_peaks_match_the_most_specific_name():
    assert gpu_bench.device_peak("NVIDIA H100 80GB HBM3")[0] == 989e12
    assert gpu_bench.device_peak("NVIDIA H100 PCIe")[0] == 756e12
    assert gpu_bench.device_peak("NVIDIA GH200 480GB")[0] == 989e12
    assert gpu_bench.device_peak("NVIDIA L40S")[0] == 362e12 and gpu_bench.device_peak("NVIDIA L4")[0] == 121e12
    assert gpu_bench.device_peak("Tesla T4")[1] == "fp16"
    assert gpu_bench.device_peak("Some Future GPU") == (None, "unknown")


def test_flops_grow_with_the_model_and_the_labels():
    small = gpu_bench.train_flops_per_clip(768, 12, 3072, 80, 51864, 20)
    medium = gpu_bench.train_flops_per_clip(1024, 24, 4096, 80, 51864, 20)
    assert 2.5 < medium / small < 4.0                        # ~3x the parameters at the same sequence lengths
    assert gpu_bench.train_flops_per_clip(768, 12, 3072, 80, 51864, 100) > small
    # whisper-small's encoder alone: ~88 M parameters x 1500 positions x 2 x 3 is the bulk
    assert 0.7e12 < small < 2.0e12


@pytest.mark.slow
def test_the_bench_runs_on_the_cpu_at_a_tiny_size():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "gpu_bench.py"), "--tiny", "--shapes", "micro",
                           "--clips", "6", "--seconds", "1", "3", "--guide", "1", "2", "--effective-batch", "2",
                           "--steps", "1", "--warmup", "0", "--workers", "0"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "whisper-micro shape on CPU" in out and "auto chose: no CUDA device" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if re.match(r"\s+(guide|auto)\s+\d", line)}
    assert rows["guide"][1:5] == ["1", "x", "2", "on"]
    assert rows["auto"][1:5] == ["2", "x", "1", "off"]            # CPU: micro-batch min(4, 2) x 1, no checkpointing
    assert float(rows["auto"][7]) > 0 and float(rows["guide"][7]) > 0    # clips/s
    ratio = re.search(r"auto / guide: ([\d.]+)x clips/s", out)
    assert ratio and float(ratio.group(1)) > 0
