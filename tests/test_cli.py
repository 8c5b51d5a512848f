import subprocess
import sys

import numpy as np
import pytest

from featvis import DBN, __version__
from helpers import run_cli, write_idx


def test_help_and_version():
    out = subprocess.run([sys.executable, "-m", "featvis.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "train" in out
    out = subprocess.run([sys.executable, "-m", "featvis.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"featvis {__version__}"


def test_train_writes_checkpoint_and_logs_each_epoch(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code, stdout, stderr = run_cli(capsys, "train", "--layers", "784,12,6", "--epochs", "2",
                                   "--quiet", "--out", str(out))
    assert code == 0 and stdout.strip() == str(out)
    assert stderr.count("reconstruction error") == 4
    dbn = DBN.load(out)
    assert dbn.sizes == [784, 12, 6] and dbn.trained_layers == 2
    assert dbn.data_info["n_train"] == 10_000


def test_resume_skips_finished_layers(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert run_cli(capsys, "train", "--layers", "784,8,4", "--epochs", "1", "--quiet",
                   "--out", str(out))[0] == 0
    code, _, stderr = run_cli(capsys, "train", "--layers", "784,8,4", "--epochs", "1",
                              "--quiet", "--resume", "--out", str(out))
    assert code == 0 and "resuming after layer 2 of 2" in stderr
    assert stderr.count("reconstruction error") == 0


def _bad_data_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8),
              compress=True, payload=bytes(100))                # truncated payload
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"junk")
    return folder


@pytest.mark.parametrize("args,message", [
    (["--layers", "784,a"], "expected comma-separated integers"),
    (["--layers", "784,-3"], "expected positive integers"),
    (["--layers", "700,10"], "784 pixels per image but the model's input layer has 700"),
    (["--epochs", "0"], "expected a positive integer"),
    (["--data", "{tmp}/absent"], "not a folder"),
    (["--data", "{tmp}/data"], "truncated"),
    (["--resume"], "no checkpoint"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    _bad_data_folder(tmp_path)
    out = tmp_path / "m.safetensors"
    args = [a.format(tmp=tmp_path) for a in args]
    code, stdout, stderr = run_cli(capsys, "train", "--quiet", "--out", str(out), *args)
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr and not out.exists()


def test_resume_from_foreign_checkpoint(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"not a checkpoint at all")
    code, _, stderr = run_cli(capsys, "train", "--quiet", "--resume", "--out", str(out))
    assert code == 2 and "not a readable safetensors file" in stderr
    assert out.read_bytes() == b"not a checkpoint at all"


def test_subprocess_error_has_no_traceback(tmp_path):
    out = tmp_path / "m.safetensors"
    result = subprocess.run([sys.executable, "-m", "featvis.cli", "train", "--layers", "5,2",
                             "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("featvis train: error:") and not out.exists()


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_stopped_training_keeps_the_last_checkpoint_and_resumes(tmp_path, signal_name):
    import signal
    import time

    out = tmp_path / "m.safetensors"
    args = [sys.executable, "-m", "featvis.cli", "train", "--layers", "784,24,12,6",
            "--epochs", "40", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.exists(), "no checkpoint after the first layer"
    proc.send_signal(getattr(signal, signal_name))
    _, stderr = proc.communicate(timeout=60)
    if signal_name == "SIGINT":
        assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    dbn = DBN.load(out)                       # the last complete checkpoint is intact
    assert 1 <= dbn.trained_layers < 3
    resumed = subprocess.run(args + ["--resume"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert DBN.load(out).trained_layers == 3
