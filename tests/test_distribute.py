"""Training under tf.distribute without a GPU: two logical CPUs, and two workers on localhost.

TensorFlow fixes its devices when it starts, so each distributed run is a fresh process.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES, make_dataset
from typer.testing import CliRunner

from melanoma_cli.cli import app

pytestmark = pytest.mark.slow  # every test here trains, serves or spawns processes
ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = {"model.keras", "model.json", "config.yaml", "history.csv", "metrics.json", "curves.png",
             "split.csv", "last.keras", "state.json"}
# No BatchNorm and no dropout: each replica's half batch then gives exactly its share of the
# full batch's gradient. One batch of all 24 training images per epoch: the order in which the
# seeded shuffle deals them (Keras draws one extra batch under a strategy, which moves the
# shuffle on by one epoch) then does not matter either. So mirrored training differs from one
# device by float rounding only.
EXACT = [*TINY_OVERRIDES, "train.epochs=3", "data.batch_size=24", "model.batch_norm=false",
         "model.dropout=0"]

# Runs in a fresh process: split the CPU into two logical devices, then train through the CLI
# on one device, under mirrored, and under mirrored interrupted after epoch 1 and resumed.
TWO_CPUS = """
import json, os, signal, sys
from typer.testing import CliRunner
from melanoma_cli.utils.tensorflow import import_tensorflow

tf = import_tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from melanoma_cli.cli import app
from melanoma_cli.config import SourceConfig, load_config
from melanoma_cli.training.train import train


data, root, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
codes = {}
for name in ("none", "mirrored"):
    args = ["train", "--data", data, "--out", f"{root}/{name}", "--set", f"train.distribute={name}"]
    for override in overrides:
        args += ["--set", override]
    codes[name] = CliRunner().invoke(app, args).exit_code

def ctrl_c_after_first_epoch(kind, values):
    if kind == "epoch" and values["epoch"] == 1:
        os.kill(os.getpid(), signal.SIGINT)

config = load_config(None, [*overrides, "train.distribute=mirrored"])
codes["interrupted"] = train(config, [SourceConfig(data)], __import__("pathlib").Path(f"{root}/resumed"),
                             progress=ctrl_c_after_first_epoch).interrupted
codes["resumed"] = CliRunner().invoke(app, ["train", "--resume", f"{root}/resumed"]).exit_code
print(json.dumps(codes))
"""


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def child_env(**extra: str) -> dict[str, str]:
    """This environment, with the checkout on the import path (as an installed package is)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.fixture(scope="module")
def two_cpu_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folders none/, mirrored/ and resumed/ trained on two logical CPUs."""
    root = tmp_path_factory.mktemp("two_cpus")
    data = make_dataset(root / "data", per_class=10)
    done = subprocess.run([sys.executable, "-c", TWO_CPUS, str(data), str(root), json.dumps(EXACT)],
                          capture_output=True, text=True, timeout=300, env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads(done.stdout.splitlines()[-1])
    assert codes == {"none": 0, "mirrored": 0, "interrupted": True, "resumed": 0}, done.stderr[-3000:]
    return root


def test_mirrored_over_two_logical_cpus_writes_a_complete_run(two_cpu_runs):
    run = two_cpu_runs / "mirrored"
    assert {p.name for p in run.iterdir()} >= RUN_FILES
    info = json.loads((run / "model.json").read_text())
    assert info["status"] == "complete"
    assert info["training"]["distribute"] == {"strategy": "mirrored", "replicas": 2, "workers": 1,
                                              "global_batch_size": 24, "mixed_precision": False}
    single = json.loads((two_cpu_runs / "none" / "model.json").read_text())
    assert single["training"]["distribute"]["strategy"] == "none"
    assert single["training"]["distribute"]["replicas"] == 1


def test_mirrored_matches_one_device_to_float_rounding(two_cpu_runs):
    """Same seed, same global batch: losses per epoch agree to 1e-5, accuracies exactly.

    The two replicas' gradients are added in another order than one device sums the batch, so
    bit-identity is not promised; float32 rounding over these steps is about 1e-7 (measured:
    2e-7 on the training loss, 0 on validation). The losses move by about 3e-2 per epoch, so
    1e-5 catches any change in what an epoch does while leaving room for rounding.
    """
    mirrored, single = history(two_cpu_runs / "mirrored"), history(two_cpu_runs / "none")
    assert len(mirrored) == len(single) == 3
    for ours, theirs in zip(mirrored, single, strict=True):
        assert float(ours["val_loss"]) == pytest.approx(float(theirs["val_loss"]), abs=1e-5)
        assert float(ours["loss"]) == pytest.approx(float(theirs["loss"]), abs=1e-5)
        assert ours["val_accuracy"] == theirs["val_accuracy"]


def test_mirrored_run_resumes_under_its_strategy(two_cpu_runs):
    run = two_cpu_runs / "resumed"
    info = json.loads((run / "model.json").read_text())
    assert info["status"] == "complete" and info["training"]["epochs_run"] == 3
    assert info["training"]["distribute"]["replicas"] == 2
    assert [row["epoch"] for row in history(run)] == ["1", "2", "3"]
    # epoch 1 ran before the interrupt: the same as the uninterrupted mirrored run
    assert history(run)[0]["val_loss"] == history(two_cpu_runs / "mirrored")[0]["val_loss"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_on_localhost_write_one_run_folder(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "run"
    workers = [f"localhost:{port}" for port in free_ports(2)]
    args = [sys.executable, "-m", "melanoma_cli", "train", "--data", str(data), "--out", str(out), "--json"]
    for override in [*TINY_OVERRIDES, "train.distribute=multi_worker"]:
        args += ["--set", override]
    processes = []
    for index in range(2):
        temp = tmp_path / f"tmp{index}"
        temp.mkdir()
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(args, env=child_env(TF_CONFIG=tf_config, TMPDIR=str(temp)),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        results = [process.communicate(timeout=240) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, (_, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= RUN_FILES
    info = json.loads((out / "model.json").read_text())
    assert info["status"] == "complete"
    assert info["training"]["distribute"] == {"strategy": "multi_worker", "replicas": 2, "workers": 2,
                                              "global_batch_size": 8, "mixed_precision": False}
    # the chief's run folder is the only one: the worker's temporary copy is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run", "tmp0", "tmp1"]
    assert not any((tmp_path / "tmp0").iterdir()) and not any((tmp_path / "tmp1").iterdir())
    assert [json.loads(stdout)["run_dir"] for stdout, _ in results] == [str(out), str(out)]


@pytest.mark.parametrize(("override", "tf_config", "message"), [
    ("train.mixed_precision=true", None,
     "config key 'train.mixed_precision' needs a GPU and TensorFlow sees none (set it to false)"),
    ("train.distribute=multi_worker", None,
     "config key 'train.distribute' is multi_worker but TF_CONFIG is not set"),
    ("train.distribute=multi_worker", '{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG: 'cluster.worker' must list at least one host:port"),
    ("train.distribute=multi_worker", "{not json", "TF_CONFIG must be JSON like"),
    ("train.distribute=several", None, "config key 'train.distribute': expected one of 'auto', 'none'"),
])
def test_refusals_name_the_key(tmp_path, monkeypatch, override, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    data = make_dataset(tmp_path / "data", per_class=4)
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "run"),
                                      "--set", override])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("Error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_auto_is_mirrored_only_with_several_gpus():
    from melanoma_cli.config import load_config
    from melanoma_cli.training.distribute import choose
    from melanoma_cli.utils.tensorflow import import_tensorflow

    gpus = import_tensorflow().config.list_logical_devices("GPU")
    distribution = choose(load_config(None))
    expected = ("mirrored", len(gpus)) if len(gpus) > 1 else ("none", 1)
    assert (distribution.name, distribution.replicas) == expected
    assert distribution.is_chief and distribution.workers == 1
    assert distribution.record(32) == {"strategy": expected[0], "replicas": expected[1], "workers": 1,
                                       "global_batch_size": 32, "mixed_precision": False}
