"""The latent light teacher: the decomposer's light read through W directions, and netL trained toward it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from stylegan_disentangle.directions.light_teacher_sets import light_teacher_from_sets, light_teacher_from_spec
from stylegan_disentangle.errors import NotFittedError, StyleGANDisentangleError
from stylegan_disentangle.labels.decomposer import Unsup3DDecomposer
from stylegan_disentangle.labels.decomposer.labeler import DecomposerLabeler
from stylegan_disentangle.labels.decomposer.light_teacher import LIGHT_LABELS, LatentLightTeacher, light_labels
from stylegan_disentangle.labels.decomposer.renderer import light_from_angles

TINY = dict(nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=32)


def _planted(n: int = 500, dim: int = 12, seed: int = 0):
    """w, unit directions, and readings = a + b * <w - mean, d> + a part that the projection does not explain."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, dim)) + 3.0
    dirs = {k: rng.normal(size=dim) for k in LIGHT_LABELS}
    truth = {"light_ambient": (0.3, 0.01), "light_diffuse": (0.6, -0.02), "light_azimuth": (2.0, 15.0),
             "light_elevation": (-10.0, 7.0)}
    readings = {}
    for k, (a, b) in truth.items():
        d = dirs[k] / np.linalg.norm(dirs[k])
        p = (w - w.mean(0)) @ d
        noise = rng.normal(size=n)
        pc = p - p.mean()
        noise -= noise.mean() + pc * (pc @ noise) / (pc @ pc)  # exactly uncorrelated with the projection
        noise *= pc.std() / noise.std()  # and as spread as it
        readings[k] = a + b * p + 0.5 * abs(b) * noise
    return w, dirs, readings, truth


def test_fit_recovers_each_labels_line_and_predicts_it_in_numpy_and_torch():
    w, dirs, readings, truth = _planted()
    teacher = LatentLightTeacher(dirs).fit(w, readings)
    assert teacher.names_ == list(LIGHT_LABELS)
    for i, k in enumerate(teacher.names_):
        a, b = truth[k]
        assert teacher.slope_[i] == pytest.approx(b, rel=1e-9)
        assert teacher.intercept_[i] == pytest.approx(a, abs=1e-9 * max(1, abs(a)))
        assert teacher.agreement_[i] == pytest.approx(np.sign(b) / np.sqrt(1.25), rel=1e-9)  # noise: half the spread
    pred_np = teacher.predict(w)
    pred_t = teacher.predict(torch.from_numpy(w).float())
    for k in LIGHT_LABELS:
        assert isinstance(pred_t[k], torch.Tensor)
        np.testing.assert_allclose(pred_t[k].numpy(), pred_np[k], rtol=1e-5, atol=1e-4 * np.abs(pred_np[k]).max())
    # a [N, num_ws, w_dim] latent with every layer the same w reads as w
    same = teacher.predict(np.repeat(w[:, None], 3, 1))["light_ambient"]
    np.testing.assert_array_equal(same, pred_np["light_ambient"])


def test_the_loss_is_zero_at_the_teachers_reading_and_trains_the_light():
    w, dirs, readings, _ = _planted(n=64)
    teacher = LatentLightTeacher(dirs).fit(w, readings)
    wt = torch.from_numpy(w).float()
    t = teacher.predict(wt)
    light = light_from_angles(t["light_ambient"], t["light_diffuse"], t["light_azimuth"], t["light_elevation"])
    assert float(teacher.loss(light, wt)) < 1e-8
    read = light_labels(light)
    for k in LIGHT_LABELS:  # light_labels inverts light_from_angles
        torch.testing.assert_close(read[k], t[k], rtol=1e-4, atol=1e-4)
    moved = light.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = teacher.loss(moved + torch.tensor([0.01, 0.01, 0.05, -0.05]), wt)
        loss.backward()
    assert float(loss) > 0 and torch.all(moved.grad.abs().sum(0) > 0)


def test_save_load_round_trip_and_bad_files(tmp_path):
    w, dirs, readings, _ = _planted()
    teacher = LatentLightTeacher({k: dirs[k] for k in ("light_elevation", "light_ambient")}).fit(w, readings)
    assert teacher.names_ == ["light_ambient", "light_elevation"]  # LIGHT_LABELS order
    teacher.save(tmp_path / "t.npz")
    back = LatentLightTeacher.load(tmp_path / "t.npz")
    assert back.names_ == teacher.names_ and back.fingerprint() == teacher.fingerprint()
    for k in ("directions_", "w_mean_", "intercept_", "slope_", "reading_std_", "agreement_"):
        np.testing.assert_array_equal(getattr(back, k), getattr(teacher, k))
    np.testing.assert_array_equal(back.predict(w)["light_elevation"], teacher.predict(w)["light_elevation"])
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(StyleGANDisentangleError, match="bad.npz: not a saved light teacher"):
        LatentLightTeacher.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", names=np.array(["x"]))
    with pytest.raises(StyleGANDisentangleError, match="other.npz: not a saved light teacher"):
        LatentLightTeacher.load(tmp_path / "other.npz")


def test_bad_directions_readings_and_unfitted_use_are_refused():
    w, dirs, readings, _ = _planted()
    with pytest.raises(NotFittedError, match="not fitted"):
        LatentLightTeacher(dirs).predict(w)
    with pytest.raises(StyleGANDisentangleError, match="must name some of"):
        LatentLightTeacher({"yaw": dirs["light_ambient"]}).fit(w, readings)
    with pytest.raises(StyleGANDisentangleError, match="non-zero"):
        LatentLightTeacher({"light_ambient": np.zeros(12)}).fit(w, readings)
    with pytest.raises(StyleGANDisentangleError, match="w has 5 columns"):
        LatentLightTeacher(dirs).fit(w[:, :5], readings)
    with pytest.raises(StyleGANDisentangleError, match="missing \\['light_elevation'\\]"):
        LatentLightTeacher(dirs).fit(w, {k: v for k, v in readings.items() if k != "light_elevation"})
    with pytest.raises(StyleGANDisentangleError, match="finite"):
        LatentLightTeacher(dirs).fit(w, {**readings, "light_ambient": np.full(len(w), np.nan)})
    with pytest.raises(StyleGANDisentangleError, match="does not vary"):
        LatentLightTeacher(dirs).fit(w, {**readings, "light_ambient": np.ones(len(w))})


def test_light_teacher_from_sets_takes_the_light_directions_and_names_what_is_missing(tmp_path):
    from stylegan_disentangle.directions import DirectionSet

    rng = np.random.default_rng(3)

    def unit(k):
        v = rng.normal(size=(k, 8))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    names = ["yaw", *LIGHT_LABELS]
    DirectionSet(names, unit(5), method="3d-coupled").save(tmp_path / "directions")
    teacher = light_teacher_from_sets(tmp_path)  # the find-directions folder
    assert sorted(teacher.directions) == sorted(LIGHT_LABELS)
    DirectionSet(["yaw", "light_ambient"], unit(2), method="3d-coupled").save(tmp_path / "few")
    with pytest.raises(StyleGANDisentangleError, match="few.*lacks|needs the directions"):
        light_teacher_from_sets(tmp_path / "few.npz")


def test_several_direction_sets_teach_the_mean_of_their_unit_directions(tmp_path):
    """Two sets with the same light directions up to scale and a known angle: the teacher's direction bisects them,
    whatever their lengths; one set alone is taught as it is (its fingerprint unchanged)."""
    from stylegan_disentangle.directions import DirectionSet

    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    a, b = q[:4], q[4:]  # orthonormal rows: a[k] and b[k] are perpendicular
    DirectionSet(list(LIGHT_LABELS), a.astype(np.float32), method="3d-coupled").save(tmp_path / "one")
    twisted = np.cos(0.6) * a + np.sin(0.6) * b  # each row turned by 0.6 rad toward b
    DirectionSet(list(LIGHT_LABELS), twisted.astype(np.float32), method="3d-coupled").save(tmp_path / "two")
    mean = light_teacher_from_sets([tmp_path / "one", str(tmp_path / "two.npz")])
    names, rows = mean._check_directions()
    expected = np.cos(0.3) * a + np.sin(0.3) * b  # the bisector, unit length
    np.testing.assert_allclose(rows, expected[[LIGHT_LABELS.index(n) for n in names]], atol=1e-6)  # float32 files
    single = light_teacher_from_sets(tmp_path / "one")
    assert single.fingerprint() == light_teacher_from_sets([tmp_path / "one"]).fingerprint()
    assert single.fingerprint() != mean.fingerprint()
    # the command lines' spelling: comma-separated, empty items (a trailing comma) ignored
    spec = f"{tmp_path / 'one'},{tmp_path / 'two.npz'},"
    assert light_teacher_from_spec(spec).fingerprint() == mean.fingerprint()
    assert light_teacher_from_spec(str(tmp_path / "one")).fingerprint() == single.fingerprint()
    DirectionSet(list(LIGHT_LABELS), q[:4, :6] / np.linalg.norm(q[:4, :6], axis=1, keepdims=True),
                 method="3d-coupled").save(tmp_path / "short")
    with pytest.raises(StyleGANDisentangleError, match="short.*not as long"):
        light_teacher_from_sets([tmp_path / "one", tmp_path / "short"])
    with pytest.raises(StyleGANDisentangleError, match="no direction set"):
        light_teacher_from_sets([])
    with pytest.raises(StyleGANDisentangleError, match="no direction set"):
        light_teacher_from_spec(",")


def _tiny() -> Unsup3DDecomposer:
    torch.manual_seed(0)
    return Unsup3DDecomposer(image_size=32, **TINY).eval()


def _teacher_for(G, seed: int = 0) -> LatentLightTeacher:
    rng = np.random.default_rng(seed)
    return LatentLightTeacher({k: rng.normal(size=G.w_dim) for k in ("light_azimuth", "light_elevation")})


def test_the_decomposers_teacher_mark_is_in_its_config_only_when_set():
    """The mark changes no output; configs of untaught decomposers (and their fingerprints) stay as they were."""
    assert "light_teacher" not in Unsup3DDecomposer(image_size=32, **TINY).get_config()
    marked = Unsup3DDecomposer(image_size=32, light_teacher="ab" * 32, **TINY)
    assert marked.get_config()["light_teacher"] == "ab" * 32
    assert Unsup3DDecomposer(**marked.get_config()).light_teacher == "ab" * 32
    with pytest.raises(StyleGANDisentangleError, match="fingerprint"):
        Unsup3DDecomposer(image_size=32, light_teacher=1, **TINY)
    # the labeler says which 3D-coupled rule fits its readings (find-directions and the benches ask it)
    assert DecomposerLabeler(marked).taught_light
    assert not DecomposerLabeler(Unsup3DDecomposer(image_size=32, **TINY)).taught_light


def test_training_with_a_teacher_fits_it_on_inits_readings_lowers_its_loss_and_resumes(tmp_path):
    from stylegan_disentangle.labels.decomposer import trainer as tr
    from stylegan_disentangle.synthetic.checkpoint import load_synthetic

    G = load_synthetic()[0]
    init = _tiny()
    netV_before = {k: v.clone() for k, v in init.netV.state_dict().items()}
    kwargs = dict(batch_size=16, lr=3e-3, log_every=1, preview_every=100, progress=False, train_nets=["netL"],
                  teacher_samples=64, lam_rerender=0.0, lam_jitter=0.0)
    teacher = _teacher_for(G)
    dec = tr.train_decomposer(G, tmp_path / "run", steps=30, init=init, light_teacher=teacher, **kwargs)
    assert hasattr(teacher, "slope_") and (tmp_path / "run" / "light_teacher.npz").is_file()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    first, last = np.mean([r["teacher"] for r in log[:5]]), np.mean([r["teacher"] for r in log[-5:]])
    assert last < 0.6 * first, (first, last)
    assert all(torch.equal(v, dec.netV.state_dict()[k]) for k, v in netV_before.items())  # only netL trained
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert state["config"]["light_teacher"]["directions_sha256"] == teacher.fingerprint()
    # the decomposer says whose readings netL learned (find-directions chooses its light conditions by it), also
    # read back from the checkpoint
    from stylegan_disentangle.labels.decomposer.labeler import load_decomposer

    assert dec.light_teacher == teacher.fingerprint()
    assert load_decomposer(tmp_path / "run" / "checkpoint.pth").light_teacher == teacher.fingerprint()
    # continuing without a teacher keeps the mark while netL is frozen, and drops it once netL learns again
    more = dict(kwargs, train_nets=["netA"], steps=2)
    assert tr.train_decomposer(G, tmp_path / "a", init=dec, **more).light_teacher == teacher.fingerprint()
    assert tr.train_decomposer(G, tmp_path / "l", init=dec, **dict(more, train_nets=["netL"])).light_teacher is None
    # a resume reads the saved teacher (the one passed in is not refitted) and other directions are refused
    saved = LatentLightTeacher.load(tmp_path / "run" / "light_teacher.npz")
    tr.train_decomposer(G, tmp_path / "run", steps=31, init=_tiny(), light_teacher=_teacher_for(G), **kwargs)
    np.testing.assert_array_equal(LatentLightTeacher.load(tmp_path / "run" / "light_teacher.npz").slope_, saved.slope_)
    with pytest.raises(StyleGANDisentangleError, match="other settings"):
        tr.train_decomposer(G, tmp_path / "run", steps=32, init=_tiny(), light_teacher=_teacher_for(G, seed=1),
                            **kwargs)


def test_the_teacher_alone_trains_netL():
    """With a teacher the photometric loss renders a detached light, so netL's gradient is the teacher's."""
    from stylegan_disentangle.labels.decomposer.reconstruction import reconstruct, reconstruction_loss

    dec = _tiny().train()
    img = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.enable_grad():
        out = reconstruct(dec, img, detach_light=True)
        reconstruction_loss(out, 0.5)["total"].backward()
    assert all(p.grad is None for p in dec.netL.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.netA.parameters())


@pytest.mark.parametrize("change, words", [
    (dict(light_from_rerender=True), "pass one"),
    (dict(train_nets=["netA"]), "leaves out"),
    (dict(lam_teacher=0.0), "lam_teacher must be > 0"),
    (dict(init=None), "pass init"),
])
def test_bad_teacher_settings_are_refused_saying_why(tmp_path, change, words):
    from stylegan_disentangle.labels.decomposer import trainer as tr
    from stylegan_disentangle.synthetic.checkpoint import load_synthetic

    G = load_synthetic()[0]
    kwargs = {"init": _tiny(), "light_teacher": _teacher_for(G), "progress": False, **change}
    with pytest.raises(StyleGANDisentangleError, match=words):
        tr.train_decomposer(G, tmp_path / "bad", steps=1, **kwargs)
    assert not (tmp_path / "bad").exists()


def test_the_teacher_reads_the_w_an_image_bank_keeps_and_refuses_a_bank_without_it(tmp_path):
    from stylegan_disentangle.labels.decomposer import trainer as tr
    from stylegan_disentangle.synthetic.checkpoint import load_synthetic

    G = load_synthetic()[0]
    teacher = _teacher_for(G)
    kwargs = dict(batch_size=8, log_every=1, progress=False, train_nets=["netL"], teacher_samples=64,
                  lam_rerender=0.0, lam_jitter=0.0, bank_size=16)
    seen = []
    real_loss = LatentLightTeacher.loss

    def spy(self, light, w):
        seen.append(w.clone())
        return real_loss(self, light, w)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LatentLightTeacher, "loss", spy)
        tr.train_decomposer(G, tmp_path / "run", steps=2, init=_tiny(), light_teacher=teacher, **kwargs)
    bank = np.load(tmp_path / "run" / "bank" / "ws.npy")
    # each step's teacher read the bank rows of its batch: the same draw as the trainer's
    for step, w in enumerate(seen):
        idx = np.sort(torch.randint(0, 16, [8], generator=tr._step_generator(0, step)).numpy())
        np.testing.assert_array_equal(w.numpy(), bank[idx])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(np.isfinite(r["teacher"]) for r in log)
    # a bank built before banks kept w: still a bank for training without a teacher, refused with one
    old = tmp_path / "old"
    tr.train_decomposer(G, old, steps=1, init=_tiny(), **dict(kwargs, train_nets=None))
    (old / "bank" / "ws.npy").unlink()
    meta = json.loads((old / "bank" / "bank.json").read_text())
    del meta["ws"]
    (old / "bank" / "bank.json").write_text(json.dumps(meta))
    tr.train_decomposer(G, old, steps=2, init=_tiny(), **dict(kwargs, train_nets=None))
    shutil.copytree(old / "bank", tmp_path / "taught" / "bank")
    with pytest.raises(StyleGANDisentangleError, match="built before banks kept each image's w"):
        tr.train_decomposer(G, tmp_path / "taught", steps=1, init=_tiny(), light_teacher=_teacher_for(G), **kwargs)


def test_train_decomposer_cli_takes_a_find_directions_folder_as_its_light_teacher(tmp_path):
    from stylegan_disentangle.directions import DirectionSet
    from stylegan_disentangle.synthetic.checkpoint import load_synthetic
    from tests.three_d_helpers import cli

    G = load_synthetic()[0]
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(5, G.w_dim))
    DirectionSet(["yaw", *LIGHT_LABELS], (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32),
                 method="3d-coupled").save(tmp_path / "dirs" / "directions")
    _tiny().save(tmp_path / "init.pth")
    args = ["train-decomposer", "synthetic", "--steps", "1", "--batch-size", "2", "--init", str(tmp_path / "init.pth"),
            "--quiet"]
    result = cli([*args, "--light-teacher", str(tmp_path / "dirs"), "--outdir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    teacher = LatentLightTeacher.load(tmp_path / "run" / "light_teacher.npz")
    assert state["config"]["light_teacher"]["directions_sha256"] == teacher.fingerprint()
    assert teacher.names_ == list(LIGHT_LABELS)
    # several runs, comma-separated: taught the mean of their directions
    DirectionSet(LIGHT_LABELS, (vectors[1:] / np.linalg.norm(vectors[1:], axis=1, keepdims=True)).astype(np.float32)
                 [::-1].copy(), method="3d-coupled").save(tmp_path / "other" / "directions")
    both = f"{tmp_path / 'dirs'},{tmp_path / 'other'}"
    result = cli([*args, "--light-teacher", both, "--outdir", str(tmp_path / "mean")])
    assert result.exit_code == 0, result.output
    mean = light_teacher_from_sets([tmp_path / "dirs", tmp_path / "other"])
    assert LatentLightTeacher.load(tmp_path / "mean" / "light_teacher.npz").fingerprint() == mean.fingerprint()
    assert mean.fingerprint() != teacher.fingerprint()
    DirectionSet(["yaw"], (vectors[:1] / np.linalg.norm(vectors[0])).astype(np.float32),
                 method="3d-coupled").save(tmp_path / "yaw_only")
    result = cli([*args, "--light-teacher", str(tmp_path / "yaw_only.npz"), "--outdir", str(tmp_path / "bad")])
    assert result.exit_code == 1 and "needs the directions" in result.output and "yaw_only" in result.output
    assert not (tmp_path / "bad").exists()


def test_train_decomposer_refuses_a_teacher_set_of_another_network_before_any_work(tmp_path):
    from stylegan_disentangle.directions import DirectionSet
    from tests.three_d_helpers import cli

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(4, 64))  # the shipped generator's W is 128 wide
    DirectionSet(list(LIGHT_LABELS), (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32),
                 method="3d-coupled").save(tmp_path / "narrow")
    _tiny().save(tmp_path / "init.pth")
    args = ["train-decomposer", "synthetic", "--steps", "1", "--batch-size", "2", "--init", str(tmp_path / "init.pth"),
            "--quiet", "--outdir", str(tmp_path / "run")]
    result = cli([*args, "--light-teacher", str(tmp_path / "narrow")])
    assert result.exit_code == 1 and "narrow" in result.output and "found on another network" in result.output
    assert not (tmp_path / "run").exists()
    weight_alone = cli([*args, "--teacher-weight", "5"])
    assert weight_alone.exit_code == 2 and "--light-teacher" in weight_alone.output


def test_the_teacher_reads_ws_as_their_w():
    rng = np.random.default_rng(6)
    w = rng.normal(size=(20, 8))
    rows = rng.normal(size=(len(LIGHT_LABELS), 8))
    teacher = LatentLightTeacher(dict(zip(LIGHT_LABELS, rows))).fit(w, {n: w @ r for n, r in zip(LIGHT_LABELS, rows)})
    ws = torch.as_tensor(w, dtype=torch.float32)[:, None].repeat(1, 3, 1)
    for name, value in teacher.predict(ws).items():
        assert value.shape == (20,) and np.allclose(value.numpy(), teacher.predict(w)[name], atol=1e-4), name
