"""Hostile and broken files: refused with a CheckpointError naming the file; nothing in them ever runs."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
import threading
import zipfile

import pytest
import torch

from stylegan_disentangle.checkpoints import load_network_pkl, save_network_pkl
from stylegan_disentangle.checkpoints.writer import _OfficialLayoutPickler, _PersistentObject, describe_module
from stylegan_disentangle.errors import CheckpointError
from tests.helpers import tiny_networks


class _Reduce:
    """Pickles as func(*args)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _write(path, obj, protocol=4):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def _payloads(marker):
    touch = f"touch {marker}"
    return {
        "os.system": _Reduce(os.system, touch),
        "builtins.eval": _Reduce(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": _Reduce(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": _Reduce(subprocess.Popen, ["touch", str(marker)]),
        "builtins.getattr": _Reduce(builtins.getattr, _Reduce(builtins.__import__, "os"), "system"),
        "builtins.open": _Reduce(builtins.open, str(marker), "w"),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen",
                                  "builtins.getattr", "builtins.open"])
def test_forbidden_global_is_refused_and_never_called(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[name]
    path = _write(tmp_path / "evil.pkl", {"G_ema": payload})
    with pytest.raises(CheckpointError, match=r"evil\.pkl: refusing to load global"):
        load_network_pkl(path)
    assert not marker.exists()


def test_forbidden_global_inside_a_valid_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    nets = tiny_networks("skip16")
    top = {k: describe_module(v) if isinstance(v, torch.nn.Module) else v for k, v in nets.items()}
    top["training_set_kwargs"] = {"hook": _Reduce(os.system, f"touch {marker}")}
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        _OfficialLayoutPickler(f, protocol=4).dump(top)
    with pytest.raises(CheckpointError, match="posix.system|os.system"):
        load_network_pkl(path)
    assert not marker.exists()


def test_embedded_module_source_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    nets = tiny_networks("skip16")
    evil_src = f"import os\nos.system('touch {marker}')\n"
    top = {k: describe_module(v) if isinstance(v, torch.nn.Module) else v for k, v in nets.items()}
    for key in ("G", "D", "G_ema"):
        top[key].meta["module_src"] = evil_src
    path = tmp_path / "src.pkl"
    with open(path, "wb") as f:
        _OfficialLayoutPickler(f, protocol=4).dump(top)
    loaded = load_network_pkl(path)
    assert not marker.exists()
    z = torch.randn([2, 8])
    assert torch.equal(loaded["G_ema"](z, None, noise_mode="const"), nets["G_ema"](z, None, noise_mode="const"))


def test_hostile_tensor_storage_bytes_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    inner = pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2)
    path = _write(tmp_path / "storage.pkl", {"G_ema": _Reduce(torch.storage._load_from_bytes, inner)})
    with pytest.raises(CheckpointError, match=r"storage\.pkl"):
        load_network_pkl(path)
    assert not marker.exists()


def test_codecs_encode_only_allows_latin1(tmp_path):
    import _codecs

    path = _write(tmp_path / "codec.pkl", {"G_ema": _Reduce(_codecs.encode, "x", "utf-8")}, protocol=2)
    with pytest.raises(CheckpointError, match="encoding"):
        load_network_pkl(path)


# --- broken files -------------------------------------------------------------------------------------------

@pytest.fixture
def good_pickle(tmp_path):
    path = tmp_path / "good.pkl"
    save_network_pkl(path, tiny_networks("skip16"))
    return path


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_file(tmp_path, good_pickle, fraction):
    data = good_pickle.read_bytes()
    path = tmp_path / "truncated.pkl"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=r"truncated\.pkl: (truncated|corrupt)"):
        load_network_pkl(path)


def test_random_bytes(tmp_path):
    gen = torch.Generator().manual_seed(0)
    noise = bytes(torch.randint(0, 256, [4096], generator=gen, dtype=torch.uint8).tolist())
    (tmp_path / "noise.pkl").write_bytes(noise)
    (tmp_path / "noise2.pkl").write_bytes(b"\x80\x04" + noise)
    with pytest.raises(CheckpointError, match=r"noise\.pkl"):
        load_network_pkl(tmp_path / "noise.pkl")
    with pytest.raises(CheckpointError, match=r"noise2\.pkl: corrupt"):
        load_network_pkl(tmp_path / "noise2.pkl")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pkl: the file is empty"):
        load_network_pkl(tmp_path / "empty.pkl")


def test_text_file(tmp_path):
    (tmp_path / "notes.pkl").write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.pkl: not a pickle file"):
        load_network_pkl(tmp_path / "notes.pkl")


def test_torch_save_archive(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match=r"weights\.pt: this is a zip archive \(torch\.save format\)"):
        load_network_pkl(path)


@pytest.mark.parametrize("top", [[1, 2, 3], 42, "G_ema", (1, 2, 3)])
def test_wrong_top_level_type(tmp_path, top):
    path = _write(tmp_path / "wrong.pkl", top)
    with pytest.raises(CheckpointError, match=r"wrong\.pkl: expected a dict"):
        load_network_pkl(path)


def test_missing_g_ema(tmp_path, good_pickle):
    nets = tiny_networks("skip16")
    top = {"G": describe_module(nets["G"]), "D": describe_module(nets["D"])}
    path = tmp_path / "no_ema.pkl"
    with open(path, "wb") as f:
        _OfficialLayoutPickler(f, protocol=4).dump(top)
    with pytest.raises(CheckpointError, match=r"no_ema\.pkl: the pickle has no 'G_ema'"):
        load_network_pkl(path)


def test_network_of_the_wrong_kind(tmp_path):
    nets = tiny_networks("skip16")
    path = tmp_path / "swapped.pkl"
    with open(path, "wb") as f:
        _OfficialLayoutPickler(f, protocol=4).dump({"G_ema": describe_module(nets["D"])})
    with pytest.raises(CheckpointError, match="G_ema is a Discriminator"):
        load_network_pkl(path)


def test_stylegan3_generator_is_reported_as_unsupported(tmp_path):
    nets = tiny_networks("skip16")
    G = describe_module(nets["G_ema"])
    synthesis = G.meta["state"]["_modules"]["synthesis"]
    synthesis.meta["state"]["_modules"]["input"] = _PersistentObject(dict(
        type="class", version=6, module_src="", class_name="SynthesisInput",
        state={"_parameters": {}, "_buffers": {}, "_modules": {}, "_init_kwargs": {}}))
    path = tmp_path / "sg3_alias_free.pkl"
    with open(path, "wb") as f:
        _OfficialLayoutPickler(f, protocol=4).dump({"G_ema": G})
    with pytest.raises(CheckpointError, match="SynthesisInput.*StyleGAN3 alias-free"):
        load_network_pkl(path)


def test_mismatched_state_dict_is_reported(tmp_path):
    nets = tiny_networks("skip16")
    G = describe_module(nets["G_ema"])
    del G.meta["state"]["_modules"]["mapping"].meta["state"]["_buffers"]["w_avg"]
    path = tmp_path / "partial.pkl"
    with open(path, "wb") as f:
        _OfficialLayoutPickler(f, protocol=4).dump({"G_ema": G})
    with pytest.raises(CheckpointError, match=r"partial\.pkl: G_ema: state dict .* missing \['mapping.w_avg'\]"):
        load_network_pkl(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_network_pkl(tmp_path / "nope" / "missing.pkl")
    with pytest.raises(CheckpointError, match="not a file"):
        load_network_pkl(tmp_path)


def test_nan_latents_give_a_clear_error(good_pickle):
    from stylegan_disentangle.errors import LatentError

    G = load_network_pkl(good_pickle)["G_ema"]
    z = torch.randn([2, G.z_dim])
    z[1, 3] = float("nan")
    with pytest.raises(LatentError, match="z contains NaN"):
        G(z, None)
    with pytest.raises(LatentError, match=rf"ws must have shape \[N, {G.num_ws}, {G.w_dim}\]"):
        G.synthesis(torch.zeros([2, G.num_ws + 1, G.w_dim]))
    with pytest.raises(LatentError, match="z must have shape"):
        G(torch.zeros([2, G.z_dim + 1]), None)


def test_restricted_unpickler_rejects_persistent_ids():
    from stylegan_disentangle.checkpoints.unpickler import restricted_load

    buf = io.BytesIO()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if obj == "secret" else None

    P(buf, protocol=2).dump(["secret"])
    buf.seek(0)
    with pytest.raises(CheckpointError, match="persistent id"):
        restricted_load(buf)


def test_fast_path_skips_only_the_value_check(good_pickle):
    from stylegan_disentangle.errors import LatentError
    from stylegan_disentangle.networks.checks import fast_path

    G = load_network_pkl(good_pickle)["G_ema"]
    ws = torch.full([1, G.num_ws, G.w_dim], float("nan"))
    with fast_path():
        assert torch.isnan(G.synthesis(ws, noise_mode="const")).all()
        with pytest.raises(LatentError, match="must have shape"):
            G.synthesis(ws[:, :1])
    with pytest.raises(LatentError, match="NaN"):
        G.synthesis(ws)


def _dump(path, top):
    with open(path, "wb") as f:
        _OfficialLayoutPickler(f, protocol=4).dump(top)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_name(tmp_path, value):
    nets = tiny_networks("skip16")
    G = describe_module(nets["G_ema"])
    bias = G.meta["state"]["_modules"]["mapping"].meta["state"]["_modules"]["fc0"].meta["state"]["_parameters"]["bias"]
    bias.data[1] = value
    path = _dump(tmp_path / "damaged.pkl", {"G_ema": G})
    with pytest.raises(CheckpointError, match=r"damaged\.pkl: G_ema: mapping\.fc0\.bias holds 1 NaN or inf value"):
        load_network_pkl(path)


def test_non_finite_truncation_is_a_latent_error(good_pickle):
    from stylegan_disentangle.errors import LatentError

    G = load_network_pkl(good_pickle)["G_ema"]
    with pytest.raises(LatentError, match="truncation_psi must be a finite number"):
        G(torch.randn([1, G.z_dim]), None, truncation_psi=float("nan"))


def test_a_shape_attribute_that_contradicts_the_constructor_is_refused(tmp_path):
    nets = tiny_networks("skip16")
    G = describe_module(nets["G_ema"])
    G.meta["state"]["img_resolution"] = 64  # the constructor's arguments build a 16 px network
    path = _dump(tmp_path / "edited.pkl", {"G_ema": G})
    with pytest.raises(CheckpointError, match=r"edited\.pkl: G_ema: <top>\.img_resolution is stored as 64"):
        load_network_pkl(path)


@pytest.mark.parametrize("entry, value", [("_init_kwargs", None), ("_modules", None), ("_parameters", [1, 2])])
def test_malformed_module_state_is_refused_by_name(tmp_path, entry, value):
    nets = tiny_networks("skip16")
    G = describe_module(nets["G_ema"])
    module = G if entry == "_init_kwargs" else G.meta["state"]["_modules"]["mapping"]  # (only the top's are used)
    module.meta["state"][entry] = value
    path = _dump(tmp_path / "malformed.pkl", {"G_ema": G})
    with pytest.raises(CheckpointError, match=rf"malformed\.pkl.*{entry}"):
        load_network_pkl(path)


def test_unknown_activation_in_the_arguments_is_refused_by_name(tmp_path):
    nets = tiny_networks("skip16")
    G = describe_module(nets["G_ema"])
    kwargs = G.meta["state"]["_init_kwargs"]
    kwargs["mapping_kwargs"] = {**kwargs.get("mapping_kwargs", {}), "activation": "foo"}
    path = _dump(tmp_path / "args.pkl", {"G_ema": G})
    with pytest.raises(CheckpointError, match=r"args\.pkl: G_ema: cannot build Generator"):
        load_network_pkl(path)


def test_save_refuses_what_it_could_not_load_again(tmp_path):
    nets = tiny_networks("skip16")
    for data, what in (({"G_ema": "text"}, "G_ema must be a Generator"), ({"G_ema": nets["D"]}, "G_ema must be a"),
                       ({"G_ema": nets["G_ema"], "D": nets["G_ema"]}, "D must be a Discriminator")):
        with pytest.raises(CheckpointError, match=what):
            save_network_pkl(tmp_path / "x.pkl", data)
    (tmp_path / "folder.pkl").mkdir()
    with pytest.raises(CheckpointError, match=r"folder\.pkl: cannot write"):
        save_network_pkl(tmp_path / "folder.pkl", nets)
    with pytest.raises(CheckpointError, match=r"x\.pkl: cannot write the network pickle"):
        save_network_pkl(tmp_path / "x.pkl", {**nets, "extra": threading.Lock()})
    assert not (tmp_path / "x.pkl").exists()


def test_legacy_torch_save_file_is_named_as_such(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"G_ema": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"legacy\.pt: this is a file written by torch\.save"):
        load_network_pkl(path)


def test_damaged_storage_record_is_a_corrupt_file(tmp_path, monkeypatch):
    """torch's storage loader asserts on a damaged record; that is a corrupt file too, not a traceback."""
    from stylegan_disentangle.checkpoints import unpickler

    def damaged(data):
        raise AssertionError("storage key '1' not found in deserialized_objects")

    monkeypatch.setattr(unpickler, "_load_storage", damaged)
    path = tmp_path / "flip.pkl"
    save_network_pkl(path, tiny_networks("skip16"))
    with pytest.raises(CheckpointError, match=r"flip\.pkl: corrupt network pickle \(AssertionError"):
        load_network_pkl(path)


def test_a_conditional_discriminator_checks_its_labels_against_the_images():
    from stylegan_disentangle.errors import LatentError

    nets = tiny_networks("resnet_cond16")
    G, D = nets["G_ema"], nets["D"]
    c = torch.eye(G.c_dim)[[0, 1, 2, 0]]
    img = G(torch.randn([4, G.z_dim]), c, noise_mode="const")
    assert D(img, c).shape == (4, 1)
    for bad_img, bad_c, words in ((img, c[:1], r"c must have shape \[4, 3\]"), (img[:2], c[:3], r"\[2, 3\]"),
                                  (img.numpy(), c, "img must be a torch.Tensor"), (img, None, "conditional")):
        with pytest.raises(LatentError, match=words):
            D(bad_img, bad_c)
