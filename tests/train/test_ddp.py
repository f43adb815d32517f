"""Two-process DDP on CPU (gloo) through `torchrun -m whisper_tune.cli train`: it finishes, and the ranks read
distinct clips (each rank logs what it reads to WHISPER_TUNE_TRACE_DIR)."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch.distributed as dist

from whisper_tune.train.data import TRACE_ENV
from whisper_tune.testing import build_cache

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--lora-rank", "4"]], ids=["full", "lora"])
def test_two_process_ddp_reads_distinct_clips(tiny_model, tmp_path, extra):
    work = tmp_path / "work"
    build_cache(work, tiny_model, n_train=8, n_test=2, variants=2)
    config = tmp_path / "ddp.toml"
    config.write_text(
        f'[model]\nname = "{tiny_model}"\n'
        "[training]\nepochs = 1\nbatch_size = 2\neval_batch_size = 1\ngrad_accum = 1\nlearning_rate = 1e-3\n"
        "warmup = 0.0\nlogging_steps = 1\ngeneration_max_length = 6\nearly_stopping_patience = 0\n"
        "dataloader_workers = 0\n"
    )
    trace = tmp_path / "trace"
    trace.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", TRACE_ENV: str(trace)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "whisper_tune.cli", "train", "--work", str(work),
           "--output-dir", str(out), "--config", str(config), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 device(s)" in proc.stderr  # the few-steps warning counts both ranks

    drawn = {}
    for rank in (0, 1):
        lines = (trace / f"draws-rank{rank}.tsv").read_text().splitlines()
        drawn[rank] = [line.split("\t")[1] for line in lines]
    assert len(drawn[0]) == len(drawn[1]) == 4
    assert not set(drawn[0]) & set(drawn[1]), drawn
    assert len(set(drawn[0]) | set(drawn[1])) == 8

    doc = json.loads((out / "metrics.json").read_text())
    assert doc["global_step"] == 2 and len(doc["epochs"]) == 1
    # the loss is a per-token mean (about ln(vocab) at random init), not scaled by the number of processes
    assert doc["epochs"][0]["train_loss"] < 12.0
    assert (out / "model.safetensors").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file() == bool(extra)   # LoRA: merged + adapter
