"""Every pair command refuses a W-space model file of another kind, by name, and each model class refuses to load
one."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from stylegan_disentangle.cli import main
from stylegan_disentangle.latents import generator_fingerprint
from stylegan_disentangle.models import (
    AppearanceStructureAE,
    AttributeExchangeModel,
    FactorMapper,
    IdentityPoseModel,
    ModelFileError,
)
from stylegan_disentangle.synthetic.checkpoint import load_synthetic


@pytest.mark.parametrize("command, cls, needed", [("recombine", IdentityPoseModel, "an identity-pose model"),
                                                  ("swap-attributes", AttributeExchangeModel,
                                                   "an attribute-exchange model"),
                                                  ("map-factors", FactorMapper, "a factor-mapper model")])
def test_a_command_refuses_a_model_of_another_kind(tmp_path, command, cls, needed):
    G, _ = load_synthetic()
    AppearanceStructureAE(G.num_ws, G.w_dim, app_dim=4, struct_dim=2, hidden=0,
                          generator_sha256=generator_fingerprint(G)).save(tmp_path / "ae.pt")
    res = CliRunner().invoke(main, [command, str(tmp_path / "ae.pt"), "synthetic", "--outdir", str(tmp_path / "o")])
    assert res.exit_code != 0 and needed in res.output and "appearance-structure" in res.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(ModelFileError):
        cls.load(tmp_path / "ae.pt", G)


@pytest.mark.parametrize("command", ["transfer-structure", "transfer-motion"])
def test_the_transfer_commands_refuse_a_model_of_another_kind(tmp_path, command):
    G, _ = load_synthetic()
    FactorMapper(G.num_ws, G.w_dim, {"pose": ["yaw"]}, noise_dim=2, hidden=0, readout_hidden=0,
                 generator_sha256=generator_fingerprint(G)).save(tmp_path / "fm.pt")
    np.save(tmp_path / "clip.npy", np.zeros([3, G.num_ws, G.w_dim], np.float32))
    extra = ["--source-clip", str(tmp_path / "clip.npy")] if command == "transfer-motion" else []
    res = CliRunner().invoke(main, [command, str(tmp_path / "fm.pt"), "synthetic", *extra, "--outdir",
                                    str(tmp_path / "o")])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"a factor-mapper model; {command} needs an appearance-structure model" in res.output
    assert not (tmp_path / "o").exists()


def test_info_names_a_damaged_model_file_as_one(tmp_path):
    G, _ = load_synthetic()
    AppearanceStructureAE(G.num_ws, G.w_dim, app_dim=4, struct_dim=2, hidden=0,
                          generator_sha256=generator_fingerprint(G)).save(tmp_path / "ae.pt")
    data = (tmp_path / "ae.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    res = CliRunner().invoke(main, ["info", str(tmp_path / "cut.pt")])
    assert res.exit_code == 1 and "cut.pt: not a readable model file" in res.output, res.output
    assert "zip archive" not in res.output.split("model file")[0]
