"""Every pair command refuses a W-space model file of another kind, by name, and each model class refuses to load
one."""

from __future__ import annotations

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


@pytest.mark.parametrize("command, cls, needed", [("recombine", IdentityPoseModel, "identity-pose model"),
                                                  ("swap-attributes", AttributeExchangeModel,
                                                   "attribute-exchange model"),
                                                  ("map-factors", FactorMapper, "factor-mapper model")])
def test_a_command_refuses_a_model_of_another_kind(tmp_path, command, cls, needed):
    G, _ = load_synthetic()
    AppearanceStructureAE(G.num_ws, G.w_dim, app_dim=4, struct_dim=2, hidden=0,
                          generator_sha256=generator_fingerprint(G)).save(tmp_path / "ae.pt")
    res = CliRunner().invoke(main, [command, str(tmp_path / "ae.pt"), "synthetic", "--outdir", str(tmp_path / "o")])
    assert res.exit_code != 0 and needed in res.output and "appearance-structure" in res.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(ModelFileError):
        cls.load(tmp_path / "ae.pt", G)
