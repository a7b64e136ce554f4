"""The model-family seam (DESIGN §1a): a second family defined only in this file trains
through run_mindformer.py, resumes exactly (its own state included), evaluates zero-shot and
retrieval, serves a pipeline and round-trips through a saved file — with no file under
mindclip/ knowing about it. Plus: the registry lists families, and every mindclip module
imports on its own (no import cycle)."""
import ast
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
from mindspore import Parameter, Tensor, ops

from conftest import ROOT

import mindclip
import run_mindformer
from mindclip import registry
from mindclip.families import Family
from mindclip.families.clip import caption_batch, clip_tokenizer
from mindclip.losses import ClipLoss, Objective
from mindclip.models import CLIPConfig, CLIPModel
from mindclip.factory import load_pretrained
from mindclip.training.logger import read_metrics

ALIGN_WEIGHT = 0.5


class AlignObjective(Objective):
    """CLIP's loss plus an 'align' term pulling image features towards a running mean of
    text features. The running mean is family state: a non-trainable Parameter updated in
    the jitted step, which checkpoints must carry for resume to be exact."""

    supports_accumulation = False  # the state update is per batch

    def __init__(self, model, weight):
        super().__init__(model, ("contrastive", "align"), logit_scale_bounds=(0.0, 4.6052))
        self.clip_loss = ClipLoss(rank=0, world_size=1)
        self.weight = weight
        self.text_center = Parameter(Tensor(np.zeros(model.embed_dim, np.float32)),
                                     name="objective.text_center", requires_grad=False)

    def features(self, images, texts):
        return (mindclip.models.l2_normalize(self.model.image_features(images)),
                mindclip.models.l2_normalize(self.model.text_features(texts)))

    def loss(self, image_features, text_features):
        contrastive = self.clip_loss(image_features, text_features, ops.exp(self.model.logit_scale))
        center = ops.stop_gradient(self.text_center)
        align = ((image_features - center) ** 2).sum(axis=-1).mean()
        new_center = 0.9 * self.text_center + 0.1 * ops.stop_gradient(text_features.mean(axis=0))
        # The write waits for the term that reads the old value: MindSpore's CPU runtime may
        # otherwise run the assign first (a parameter read is not a copy), and how the actors
        # are timed decided which value the term saw.
        align = ops.depend(align, ops.assign(self.text_center, ops.depend(new_center, align)))
        return contrastive + self.weight * align, (contrastive, align)


def align_objective(model, run_cfg, rank=0, world=1):
    return AlignObjective(model, float(run_cfg["loss"]["weights"].get("align", ALIGN_WEIGHT)))


ALIGN_FAMILY = Family(name="clip_align_test", config_class=CLIPConfig, model_class=CLIPModel,
                      get_tokenizer=clip_tokenizer, build_objective=align_objective,
                      build_batch=caption_batch)
if "clip_align_test" not in registry.names("family"):
    registry.register("family", "clip_align_test")(ALIGN_FAMILY)

DEMO = os.path.join(ROOT, "configs", "demo", "run_clip_tiny_digits.yaml")
TRAIN_ARGS = ["--config", DEMO, "--model.family", "clip_align_test",
              "--train_dataset.num_samples", "96", "--runner.batch_size", "16",
              "--runner.epochs", "2", "--runner.save_interval", "4", "--runner.keep_checkpoints", "0",
              "--runner.log_interval", "1", "--runner.progress_bar", "false",
              "--runner.eval_interval", "0", "--loss.weights", "{align: 0.5}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("family") / "full")
    assert run_mindformer.main(TRAIN_ARGS + ["--output_dir", out]) == 0
    return out


def test_registry_lists_families():
    assert "clip" in registry.names("family")
    assert "clip_align_test" in registry.names("family")
    with pytest.raises(KeyError, match="valid: .*'clip'"):
        registry.get("family", "no_such_family")


def test_second_family_trains_with_named_terms(trained):
    records = read_metrics(os.path.join(trained, "metrics.jsonl"), "train")
    assert [r["step"] for r in records] == list(range(1, 13))
    for r in records:  # the total is the weighted sum of the logged terms
        assert abs(r["loss"] - (r["loss_contrastive"] + ALIGN_WEIGHT * r["loss_align"])) < 1e-5
    assert records[-1]["loss_contrastive"] < records[0]["loss_contrastive"]
    assert os.path.isfile(os.path.join(trained, "training_curves.png"))
    # the family is recorded in the final file and in training checkpoints
    model = mindclip.create_model(pretrained=os.path.join(trained, "mindclip_model.safetensors"))
    assert model.family == "clip_align_test" and isinstance(model, CLIPModel)
    from mindclip.models.weights_io import read_ckpt

    _, meta = read_ckpt(os.path.join(trained, "checkpoints", "step_00000012.ckpt"))
    assert meta["mindclip_family"] == "clip_align_test"
    tensors, _ = read_ckpt(os.path.join(trained, "checkpoints", "step_00000012.ckpt"))
    assert np.abs(tensors["objective.text_center"]).sum() > 0  # family state was updated and saved


def test_second_family_resumes_exactly(trained, tmp_path):
    """Resume from step 4 (mid-epoch) and step 8 must reproduce every later loss term; a run
    that lost the family state (text_center) would not."""
    reference = {r["step"]: r for r in read_metrics(os.path.join(trained, "metrics.jsonl"), "train")}
    resumed = str(tmp_path / "resumed")
    shutil.copytree(os.path.join(trained, "checkpoints"), os.path.join(resumed, "checkpoints"))
    with open(os.path.join(resumed, "checkpoints", "latest"), "w") as f:
        f.write("step_00000004.ckpt\n")
    for name in os.listdir(os.path.join(resumed, "checkpoints")):
        if name.startswith("step_") and name > "step_00000004.ckpt":
            os.remove(os.path.join(resumed, "checkpoints", name))
    assert run_mindformer.main(TRAIN_ARGS + ["--output_dir", resumed, "--resume"]) == 0
    after = read_metrics(os.path.join(resumed, "metrics.jsonl"), "train")
    assert [r["step"] for r in after] == list(range(5, 13))
    for r in after:
        for key in ("loss", "loss_contrastive", "loss_align"):
            assert abs(r[key] - reference[r["step"]][key]) <= 1e-6, (r["step"], key)


def test_second_family_evaluates_serves_and_reloads(trained, tmp_path, capsys):
    weights = os.path.join(trained, "mindclip_model.safetensors")
    out = str(tmp_path / "eval")
    assert run_mindformer.main(["--config", DEMO, "--run_mode", "eval", "--model.name", "null",
                                "--model.pretrained", weights, "--output_dir", out]) == 0
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["task"] == "zero_shot_image_classification" and metrics["num_samples"] == 355
    assert 0.0 <= metrics["top1"] <= 100.0
    assert metrics["retrieval"]["task"] == "image_text_retrieval"
    assert "text_to_image_R@1" in metrics["retrieval"]

    # A pipeline from the file alone builds the registered family's model ...
    classify = mindclip.pipeline("zero_shot_image_classification", model=weights,
                                 candidate_labels=["zero", "one", "two"])
    assert classify.model.family == "clip_align_test"
    from mindclip.data.classification import read_digits

    image = read_digits("test").images[0]
    result = classify(image)
    # ... and scores as the model's own encoders do (computed here independently).
    model = classify.model
    from mindclip.data.transforms import image_transform

    img = ms.Tensor(image_transform(model.image_size)(image)[None])
    img_f = model.encode_image(img, normalize=True).asnumpy()
    tokens = mindclip.get_tokenizer(model)([f"a photo of a {c}." for c in ("zero", "one", "two")])
    txt_f = model.encode_text(ms.Tensor(tokens), normalize=True).asnumpy()
    logits = np.exp(model.logit_scale.asnumpy()) * img_f @ txt_f.T
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    expected = {c: float(p) for c, p in zip(("zero", "one", "two"), probs[0])}
    assert [r["label"] for r in result] == sorted(expected, key=expected.get, reverse=True)
    for r in result:
        assert abs(r["score"] - expected[r["label"]]) < 1e-5

    # save -> reload is bit-exact and keeps the family
    trainer = mindclip.Trainer(config={"model": {"name": None, "pretrained": weights},
                                       "output_dir": str(tmp_path)})
    saved = trainer.save_model(str(tmp_path / "again.safetensors"))
    again = mindclip.create_model(pretrained=saved)
    assert again.family == "clip_align_test"
    for k, p in trainer.model.parameters_dict().items():
        np.testing.assert_array_equal(p.asnumpy(), again.parameters_dict()[k].asnumpy(), err_msg=k)

    # a CLIP model refuses the other family's weights
    clip_model = mindclip.create_model("ViT-Tiny-8")
    with pytest.raises(ValueError, match="holds a 'clip_align_test' model"):
        load_pretrained(clip_model, saved)


def _mindclip_modules():
    out = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "mindclip")):
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out.append(rel[:-len(".__init__")] if rel.endswith(".__init__") else rel)
    return sorted(out)


def test_no_import_cycle_in_mindclip():
    """Statically: no cycle in the import graph (every import, function-level ones too).
    Dynamically: each module imports first in a fresh interpreter (forked from one that has
    loaded only mindspore and numpy, so no mindclip module is imported before it)."""
    modules = _mindclip_modules()
    graph = {}
    for name in modules:
        path = os.path.join(ROOT, *name.split(".")) + ("/__init__.py" if os.path.isdir(
            os.path.join(ROOT, *name.split("."))) else ".py")
        pkg = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    deps.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    # depth-first search for a back edge
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(w):] + [w]))
            if w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in modules:
        if v not in state:
            visit(v)

    script = (
        "import os, sys, importlib\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "import numpy, mindspore\n"
        "failed = []\n"
        f"for name in {modules!r}:\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except BaseException as exc:\n"
        "            print(name, type(exc).__name__, exc, flush=True)\n"
        "            os._exit(1)\n"
        "        os._exit(0)\n"
        "    if os.waitpid(pid, 0)[1] != 0:\n"
        "        failed.append(name)\n"
        "print('FAILED', failed)\n"
        "sys.exit(1 if failed else 0)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
