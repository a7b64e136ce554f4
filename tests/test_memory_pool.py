"""``context.memory.init_size: auto``: on CPU the pool's first block is 3/4 of the machine's
memory (address space until written), so that a step's later calls land where its first did;
never where the kernel counts address space strictly, never off CPU, a user's sizes as given."""
import os
import subprocess
import sys

from conftest import ROOT
from mindclip.memory_pool import auto_init_size, pool_sizes


def _proc(tmp_path, total_kb, overcommit="0"):
    meminfo, policy = tmp_path / "meminfo", tmp_path / "overcommit_memory"
    meminfo.write_text(f"MemTotal:       {total_kb} kB\nMemFree:        1000 kB\n")
    policy.write_text(overcommit + "\n")
    return str(meminfo), str(policy)


def test_auto_is_three_quarters_of_memory_where_address_space_is_free(tmp_path):
    assert auto_init_size(*_proc(tmp_path, 24 * 2**20)) == "18GB"
    assert auto_init_size(*_proc(tmp_path, 24 * 2**20, overcommit="1")) == "18GB"
    assert auto_init_size(*_proc(tmp_path, 24 * 2**20, overcommit="2")) is None  # strict accounting
    assert auto_init_size(*_proc(tmp_path, 3 * 2**20)) is None  # MindSpore's 2 GB block is as large
    assert auto_init_size(str(tmp_path / "none"), str(tmp_path / "none")) is None


def test_pool_sizes_resolve_auto_on_cpu_only_and_keep_what_the_user_set(monkeypatch):
    import mindclip.memory_pool as pool

    monkeypatch.setattr(pool, "auto_init_size", lambda: "18GB")
    assert pool_sizes({"init_size": "auto", "increase_size": None, "max_size": None}, "CPU") == {"init_size": "18GB"}
    assert pool_sizes({"init_size": "auto", "increase_size": "1GB"}, "Ascend") == {"increase_size": "1GB"}
    assert pool_sizes({"init_size": "4GB", "max_size": "20GB"}, "CPU") == {"init_size": "4GB", "max_size": "20GB"}
    monkeypatch.setattr(pool, "auto_init_size", lambda: None)
    assert pool_sizes({"init_size": "auto"}, "CPU") == {}


def test_a_run_starts_its_pool_at_the_auto_size(tmp_path):
    """run_mindformer gives MindSpore the resolved size before anything allocates."""
    probe = (
        "import sys, mindspore as ms\n"
        "calls = []\n"
        "real = ms.runtime.set_memory\n"
        "ms.runtime.set_memory = lambda **kw: calls.append(kw) or real(**kw)\n"
        "sys.argv = ['run_mindformer.py'] + sys.argv[1:]\n"
        "import run_mindformer\n"
        "code = run_mindformer.main(sys.argv[1:])\n"
        "print('CALLS', calls, code)\n")
    demo = os.path.join(ROOT, "configs", "demo", "run_clip_tiny_digits.yaml")
    proc = subprocess.run([sys.executable, "-c", probe, "--config", demo, "--run_mode", "eval",
                           "--model.name", "ViT-Tiny-8", "--eval_dataset.type", "null",
                           "--eval.retrieval_dataset.type", "null", "--output_dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    line = [x for x in proc.stdout.splitlines() if x.startswith("CALLS")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    size = auto_init_size()
    assert line[0].startswith(f"CALLS [{{'init_size': '{size}'}}]" if size else "CALLS []"), line[0]
