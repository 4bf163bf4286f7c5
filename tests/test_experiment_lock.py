"""Two training runs on one experiment folder (a scheduler's requeue while the first still runs): the second
is refused before it touches the folder, and a run that dies never leaves the folder locked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from asr_s2s.experiment import LOCK_FILE, lock_experiment

from test_cli import small_run  # noqa: F401 - the fixture: tiny train/valid manifests, CMVN and config


def test_a_second_run_on_a_busy_folder_is_refused(small_run, tmp_path, run_cli):  # noqa: F811
    exp = tmp_path / "exp"
    code, _, err = run_cli(*small_run(exp, epochs=1))
    assert code == 0, err
    log_before = (exp / "train_log.jsonl").read_bytes()
    checkpoints = sorted(p.name for p in (exp / "checkpoints").iterdir())
    with lock_experiment(exp):  # the first run, still training
        code, _, err = run_cli(*small_run(exp, epochs=2), "--resume")
        assert code == 2 and "another run is training in this experiment folder" in err
        assert f"pid {os.getpid()}" in err and "--exp-dir" in err
        exe = Path(sys.executable).parent / "asr-s2s"  # and from another process
        other = subprocess.run([str(exe), *small_run(exp, epochs=2), "--resume"], capture_output=True, text=True,
                               timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert other.returncode == 2 and "another run is training" in other.stderr
    assert (exp / "train_log.jsonl").read_bytes() == log_before, "the refused runs wrote nothing"
    assert sorted(p.name for p in (exp / "checkpoints").iterdir()) == checkpoints
    code, _, err = run_cli(*small_run(exp, epochs=2), "--resume")  # the folder is free again
    assert code == 0, err
    assert (exp / LOCK_FILE).is_file()
