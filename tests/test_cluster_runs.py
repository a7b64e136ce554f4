"""A 2-rank msrun job through ``python -m mindclip.launch``, as a cluster treats it: preempted
with SIGTERM (every rank stops at the same step, rank 0 checkpoints, status 75), resumed,
then one rank killed with ``kill -9`` (the job ends within the launcher's bound with one line
naming the rank, its log and the resume command), resumed again. The final log must equal an
uninterrupted job's, step for step."""
import os
import re
import signal
import subprocess
import sys
import time

from conftest import ROOT
from mindclip.errors import REQUEUE_EXIT_STATUS
from mindclip.launch import FAILURE_BOUND_S
from mindclip.training.logger import read_metrics
from test_training_runs import DEMO

# 320 digits, 16 per rank: 10 steps an epoch, 30 in all; a checkpoint every 4 steps
ARGS = ["--config", DEMO, "--train_dataset.num_samples", "320", "--runner.batch_size", "16",
        "--runner.epochs", "3", "--runner.save_interval", "4", "--runner.log_interval", "1",
        "--runner.progress_bar", "false", "--eval_dataset.type", "null",
        "--eval.retrieval_dataset.type", "null"]


def _launch(tmp_path, name, out, *extra):
    port = 21000 + (os.getpid() * 13 + len(name) * 101) % 9000
    cmd = [sys.executable, "-m", "mindclip.launch", "--worker_num", "2", "--local_worker_num", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port), "--log_dir",
           str(tmp_path / f"logs_{name}"), "--join", "True", "run_mindformer.py", *ARGS,
           "--output_dir", out, "--context.threads", "1", *extra]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_steps(out, n, proc, timeout=600):
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.isfile(metrics) and len(read_metrics(metrics, "train")) >= n:
            return
        time.sleep(0.1)


def _worker_pid(log):
    with open(log) as f:
        for line in f:
            match = re.search(r"\((\d+)[,:]", line)
            if match:
                return int(match.group(1))
    raise AssertionError(f"no pid in {log}")


def test_preempted_and_killed_msrun_job_resumes_exactly(tmp_path):
    reference = str(tmp_path / "reference")
    proc = _launch(tmp_path, "reference", reference)
    assert proc.wait(timeout=900) == 0, proc.stderr.read()[-3000:]
    expected = read_metrics(os.path.join(reference, "metrics.jsonl"), "train")
    assert [r["step"] for r in expected] == list(range(1, 31))

    out = str(tmp_path / "job")
    proc = _launch(tmp_path, "first", out)
    _wait_for_steps(out, 6, proc)
    proc.send_signal(signal.SIGTERM)  # the scheduler's preemption notice, to the launcher
    err = proc.communicate(timeout=600)[1]
    assert proc.returncode == REQUEUE_EXIT_STATUS, err[-3000:]
    assert "every rank checkpointed at the same step" in err
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        stopped = int(f.read().strip()[5:13])
    assert 6 <= stopped < 30
    # both ranks stopped after the same step: rank 0 logged it, and no rank went further
    assert [r["step"] for r in read_metrics(os.path.join(out, "metrics.jsonl"), "train")] == \
        list(range(1, stopped + 1))

    proc = _launch(tmp_path, "second", out, "--resume")
    _wait_for_steps(out, 20, proc)
    pid = _worker_pid(str(tmp_path / "logs_second" / "worker_1.log"))
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    err = proc.communicate(timeout=600)[1]
    ended = time.time() - killed_at
    assert proc.returncode == 1 and ended <= FAILURE_BOUND_S + 2, (ended, err[-3000:])
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1, err[-3000:]
    assert line[0].startswith("error: rank 1 was killed by SIGKILL (its log: ")
    assert "logs_second/worker_1.log" in line[0] and line[0].endswith("--resume")

    proc = _launch(tmp_path, "third", out, "--resume")
    assert proc.wait(timeout=900) == 0, proc.stderr.read()[-3000:]
    records = read_metrics(os.path.join(out, "metrics.jsonl"), "train")
    assert [r["step"] for r in records] == list(range(1, 31))
    for mine, ref in zip(records, expected):
        assert abs(mine["loss"] - ref["loss"]) <= 1e-6, (mine["step"], mine["loss"], ref["loss"])
