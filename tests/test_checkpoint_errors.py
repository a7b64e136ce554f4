"""Bad checkpoints and wrong architectures fail loudly, naming what is wrong."""
import os
import pickle
import struct
import types

import numpy as np
import pytest
import torch

from conftest import build_openclip
from mindclip import create_model, get_model_config
from mindclip.convert import convert_checkpoint, save_converted
from mindclip.convert.cli import main as convert_cli
from mindclip.models.config import CLIPConfig
from mindclip.models.weights_io import CHECKSUM_KEY, read_weights, write_weights


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_openclip):
    d = tmp_path_factory.mktemp("tiny")
    torch.save(tiny_openclip.state_dict(), d / "tiny.pt")
    tensors, cfg = convert_checkpoint(str(d / "tiny.pt"), model_name="ViT-Tiny-8")
    return save_converted(tensors, cfg, str(d / "tiny.safetensors")), str(d / "tiny.pt")


def test_gelu_checkpoint_into_quickgelu_model_is_refused(tiny_file):
    with pytest.raises(ValueError, match="quick_gelu: False vs True"):
        create_model("ViT-Tiny-8-quickgelu", pretrained=tiny_file[0])


def test_wrong_size_is_refused_with_names(tiny_file):
    with pytest.raises(ValueError, match="different architecture"):
        create_model("RN-Tiny", pretrained=tiny_file[0])


def test_missing_and_misshaped_weights_named(tmp_path, tiny_file):
    tensors, _ = read_weights(tiny_file[0])
    del tensors["visual.ln_post.gamma"]
    tensors["text.text_projection"] = tensors["text.text_projection"][:, :16]
    tensors["visual.extra"] = np.zeros(3, np.float32)
    bad = str(tmp_path / "bad.ckpt")
    write_weights(bad, tensors)  # no architecture metadata: only names/shapes can catch it
    with pytest.raises(ValueError) as err:
        create_model("ViT-Tiny-8", pretrained=bad)
    msg = str(err.value)
    assert "missing (1): visual.ln_post.gamma" in msg
    assert "unexpected (1): visual.extra" in msg
    assert "text.text_projection: checkpoint (64, 16) vs model (64, 32)" in msg


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_ckpt_reads_with_fewer_free_pages_than_its_size(tmp_path, tiny_file, monkeypatch, dtype):
    # Page cache is not "free": after a few GB of reads a machine with 20 GB available reports
    # a few hundred MB free, and ms.load_checkpoint refused a ViT-B/32 .ckpt on exactly that.
    import mindspore as ms

    tensors, metadata = read_weights(tiny_file[0])
    path = str(tmp_path / f"tiny_{dtype}.ckpt")
    write_weights(path, tensors, dtype, metadata)
    real_sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_AVPHYS_PAGES" else real_sysconf(name))
    with pytest.raises(Exception, match="exceeds current available memory"):
        ms.load_checkpoint(path)  # the refusal this reader avoids, so the patch is in force
    back, back_meta = read_weights(path)
    assert {k: back_meta[k] for k in metadata if k != CHECKSUM_KEY} == {
        k: v for k, v in metadata.items() if k != CHECKSUM_KEY}
    assert sorted(back) == sorted(tensors)
    for name, arr in tensors.items():
        want = arr.astype(np.float32)
        if dtype == "bf16":  # bf16 keeps 8 bits of mantissa: relative error below 2**-8
            np.testing.assert_allclose(back[name], want, rtol=2 ** -8, atol=0)
        else:
            np.testing.assert_array_equal(back[name], want)
    create_model("ViT-Tiny-8", pretrained=path)


def test_missing_file_explains_conversion(tmp_path):
    with pytest.raises(FileNotFoundError, match="convert_weight.py"):
        create_model("ViT-Tiny-8", pretrained=str(tmp_path / "nope.ckpt"))
    with pytest.raises(FileNotFoundError, match="no .ckpt or .safetensors"):
        create_model("ViT-Tiny-8", pretrained=str(tmp_path))


def test_unknown_model_and_config_keys():
    with pytest.raises(ValueError, match="available: .*ViT-B-32"):
        create_model("ViT-Q-99")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['patch'\].*valid keys are: .*patch_size"):
        CLIPConfig.from_dict({"embed_dim": 8, "vision_cfg": {"patch": 4}})


def test_activation_must_be_stated_for_plain_state_dict(tmp_path):
    ref = build_openclip("RN-Tiny")
    torch.save(ref.state_dict(), tmp_path / "rn.pt")
    code = convert_cli(["--torch_path", str(tmp_path / "rn.pt"),
                        "--mindspore_path", str(tmp_path / "o.ckpt")])
    assert code == 2
    assert not os.path.exists(tmp_path / "o.ckpt")
    with pytest.raises(ValueError, match="QuickGELU .* Pass --model NAME"):
        convert_checkpoint(str(tmp_path / "rn.pt"))


def test_torchscript_needs_explicit_permission(tmp_path, tiny_openclip):
    images, tokens = torch.randn(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long)
    tokens[0, :2] = torch.tensor([49406, 49407])
    path = str(tmp_path / "openai.pt")
    torch.jit.save(torch.jit.trace(tiny_openclip, (images, tokens), check_trace=False), path)
    with pytest.raises(PermissionError, match="--allow_torchscript"):
        convert_checkpoint(path, model_name="ViT-Tiny-8")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = ""


def test_malicious_pickle_is_not_executed(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    path = str(tmp_path / "evil.pt")
    with open(path, "wb") as f:
        pickle.dump({"token_embedding.weight": _Payload()}, f)
    torch.save({"token_embedding.weight": torch.zeros(2), "x": _Payload()}, str(tmp_path / "evil2.pt"))
    for p in (path, str(tmp_path / "evil2.pt")):
        with pytest.raises(ValueError, match="weights_only=True"):
            convert_checkpoint(p, model_name="ViT-Tiny-8")
    assert not os.path.exists(MARKER)


def test_conversion_verifies_against_named_model(tmp_path, tiny_file):
    with pytest.raises(ValueError, match="wrong shape"):
        convert_checkpoint(tiny_file[1], model_name="ViT-B-32")


def test_writes_are_atomic(tmp_path, tiny_file, monkeypatch):
    import mindclip.models.weights_io as wio

    tensors, _ = read_weights(tiny_file[0])
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"previous good file")

    def boom(*a, **k):
        raise OSError("disk full")

    # weights_io's own reference only: patching the process-wide struct module would also
    # break pytest-xdist's channel to this worker
    monkeypatch.setattr(wio, "struct", types.SimpleNamespace(pack=boom, unpack=struct.unpack))
    with pytest.raises(OSError):
        write_weights(str(target), tensors)
    assert target.read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]


def test_aliases_resolve_to_openai_architectures():
    assert get_model_config("clip_vit_b_32") == get_model_config("ViT-B-32-quickgelu")
    assert get_model_config("clip_vit_l_14@336").vision_cfg.image_size == 336


def test_loaded_parameters_share_no_memory_when_a_file_ties_names(tiny_file, monkeypatch):
    """Parameters take the arrays read from a file as their memory (no copy); one array under
    two names (an adapter's tied weights) or a view into a larger array gets a copy of its
    own, since training updates parameters in place."""
    import mindspore as ms

    from mindclip import factory

    tensors, metadata = read_weights(tiny_file[0])
    first, second = ("visual.transformer.resblocks.0.ln_1.gamma", "visual.transformer.resblocks.0.ln_2.gamma")
    tensors[second] = tensors[first]
    whole = np.concatenate([tensors["visual.proj"], tensors["visual.proj"]])
    tensors["visual.proj"] = whole[:len(whole) // 2]
    before = {name: tensors[name].copy() for name in (first, "visual.proj")}
    monkeypatch.setattr(factory, "read_weights", lambda path: (tensors, metadata))
    params = create_model(pretrained=tiny_file[0]).parameters_dict()
    for name in (first, "visual.proj"):
        ms.ops.assign_add(params[name], ms.Tensor(np.ones(params[name].shape, np.float32)))
        np.testing.assert_array_equal(params[name].asnumpy(), before[name] + 1)
    np.testing.assert_array_equal(params[second].asnumpy(), before[first])
    np.testing.assert_array_equal(whole[:len(whole) // 2], before["visual.proj"])


def test_a_checkpoints_architecture_is_read_without_its_tensors(tiny_file, monkeypatch):
    """create_model(pretrained=path) without a name and get_tokenizer(path) read the
    architecture from the file's header; the tensors are read once, by the load."""
    from mindclip import factory, get_tokenizer
    from mindclip.models.weights_io import LazyTensor

    loads = []
    real = LazyTensor.load
    monkeypatch.setattr(LazyTensor, "load", lambda self: loads.append(self.offset) or real(self))
    family, config = factory.read_checkpoint_config(tiny_file[0])
    assert (family.name, config.to_dict()) == ("clip", get_model_config("ViT-Tiny-8").to_dict())
    assert get_tokenizer(tiny_file[0]) is not None and loads == []
    model = create_model(pretrained=tiny_file[0])
    assert len(loads) == len(set(loads)) == len(model.parameters_dict())
