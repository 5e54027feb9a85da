"""3D-coupled sparse linear semantics (Zheng et al., CVPR 2021): named global and localized directions, no labels.

A 3D decomposer (Unsup3D style, a labeler in `labels.decomposer`) splits each generated face into view, light and
canonical depth / albedo maps. This estimator turns those *unsupervised* semantics into W directions:

- **global semantics**: regression `semantic ~ w` (`LinearDirections(method='ridge')`: the ridge from streamed
  moments, refitted with the Huber loss by default) for every scalar semantic (yaw, pitch, roll, tx, ty,
  light_azimuth, ...); one direction each, named like the label.
- **localized semantics**: each canonical map (depth `[N, R, R]`, albedo `[N, 3, R, R]`) minus its per-pixel median
  baseline, scaled to unit RMS per sample, is decomposed by sparse dictionary learning (`_map_atoms`, by
  `_dictionary.learn_dictionary`: `min 1/2 ||Y - C A||^2 + code_alpha |C|_1`, unit atoms) into atoms A (spatial
  patterns) and sparse codes C; then sparse regression `code_k ~ w` (`SparseDirections(method='lasso')`, or ridge)
  gives one direction per atom, and the atom's magnitude map (`|A_k|`, channels combined) is its **footprint**.
  By default (`atom_scope='parts'`) the atoms are learned inside each face part separately, on that part's pixels
  scaled to unit RMS, so the nose, eyes, mouth and brows get atoms of their own instead of being mixed into the
  skin's (`atom_scope='map'`: one dictionary over the whole map, the paper's form).
- **naming**: a localized direction is called `<map>_<part>`: after the part its atom was learned in, or (whole-map
  atoms) after the part that holds most of its footprint mass; the parts are the generator's part masks when the
  caller has them (the synthetic world does), else a fixed template of regions of the canonical (frontal, centred)
  face (`canonical_regions`); `_left` / `_right` (image sides) is added when over `side_fraction` of the mass lies
  on one side; repeated names get `_2`, `_3`, ...

- **the generator's metric** (optional, `fit(..., w_metric=M)`, what `find-directions` passes): M is the mean Gram
  of the generator's image Jacobian with respect to w (`analysis.sensitivity.image_sensitivity`). A semantic read off
  the image depends on w only through the image, yet a regression on a finite bank also fits what the decomposer's
  *errors* correlate with, and on the synthetic checkpoint that sits mostly along directions of W that barely change
  the image. With M, every regression (global and code) is the generalized ridge
  `||y - w b||^2 + metric_alpha * N * b^T M^+ b` (M scaled to a largest eigenvalue of 1): the coefficients' prior
  covariance is M, so the directions stay where the generator draws something. On the synthetic checkpoint
  (20k samples) it moves light azimuth from 0.90-0.93 to 0.99 and yaw from 0.96 to 0.995 |cos| to the truth, and
  the small parts' spans up by 0.06-0.30 (BENCHMARKS.md, issue 11, eighteenth session). The premise is a label
  read off the image: labels that are exact functions of w (an oracle's) should be fitted without it, since the prior
  pulls directions that change the image little (the synthetic world's nose, eyes, smile) toward ones it draws more
  strongly (exact labels: nose span 0.98 -> 0.85, smile 0.93 -> 0.77; nineteenth session).

- **the white-light prior** (optional, `fit(..., w_chroma=K)` with `w_metric`, what `find-directions` passes): K is
  the Gram of the generator's log-chromaticity Jacobian (`analysis.sensitivity.sensitivities`). White light scales
  a pixel's colour channels alike, so the light regressions (`light_labels`) are also penalised by
  `chroma_alpha * N * b^T K b`, which keeps them off the directions that change colours (a decomposer reads hair
  colour partly as ambient: ambient 0.83-0.85 -> 0.90-0.92 |cos| on the synthetic checkpoint).
- **conditional light elevation** (`conditions='auto'`): the elevation direction is held against the ambient,
  diffuse and azimuth readings' directions (InterFaceGAN's conditional edit: its component in their span removed),
  because Unsup3D's symmetric model lets a decomposer's elevation reading take in the ambient, and against the
  directions of the colour of the decomposer's albedo at the top of the canonical face, because it reads bright
  hair above the face as light from above (see `conditions`); and the ambient direction held against the pitch's,
  which a decomposer with a light mask reads into the ambient (the masked rows show more or less of the head as it
  pitches). Then the ambient is *softly* held against the view, the light's azimuth and elevation and the face's
  width as the decomposer's depth draws it, and the elevation against the face's height there
  (`soft_conditions`): the overlap with each shrunk, not removed. Last, once the localized directions are found,
  the elevation is softly held against the eyes' albedo directions, which its reading takes in (`part_conditions`).

The decomposition of images happens upstream (the bank's `decomposer3d` labeler); `fit` takes the labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import LatentError
from ..labels.decomposer.light_teacher import LIGHT_LABELS  # the decomposer's light readings
from ._base import DirectionFinder, _to_numpy, as_w, blas_limit, canonical_sign, check_fitted
from ._conditions import (
    AUTO_CONDITIONS,
    DEPTH_HEIGHT,
    DEPTH_WIDTH,
    SOFT_AUTO_CONDITIONS,
    TAUGHT_AUTO_CONDITIONS,
    TOP_ALBEDO_COLOUR,
    conditioned,
    depth_readings,
    depth_spread,
    resolve_conditions,
    resolve_part_conditions,
    soft_conditioned,
    top_albedo_chroma,
)
from ._footprint_names import canonical_regions, footprint_name, resize_masks, side_suffix
from ._map_atoms import map_atoms, part_atoms, rms
from ._metric import combined_root, from_metric_coords, metric_root, to_metric_coords
from .linear import _LOSSES, LinearDirections, _seed
from .sparse import NoDirectionError, SparseDirections

__all__ = ["AUTO_CONDITIONS", "DEPTH_HEIGHT", "DEPTH_WIDTH", "SOFT_AUTO_CONDITIONS", "TAUGHT_AUTO_CONDITIONS",
           "TOP_ALBEDO_COLOUR", "ThreeDCoupledDirections", "canonical_regions", "footprint_name"]

_ATOM_METHODS = ("dictionary", "sparse_pca")
_REGRESSIONS = ("auto", "lasso", "ridge")
_ALBEDO_SOURCES = ("auto", "image", "net")
IMAGE_ALBEDO = "image_albedo"  # the decomposer3d labeler's albedo read off the image (`albedo_source`)
_MIN_CODE_ROWS = 5  # an atom enters the code regression only when at least this many rows use it


class ThreeDCoupledDirections(DirectionFinder):
    """Named global (view, light) and localized (depth / albedo atoms) directions from 3D-decomposer semantics.

    Parameters
    ----------
    global_labels : sequence of str or None
        Scalar semantics regressed on w (default: every 1-D label given to `fit`; constant ones are skipped and
        listed in `dropped_`).
    map_labels : sequence of str
        Map labels decomposed into atoms (`[N, R, R]` or `[N, C, R, R]`), in this order; missing ones are skipped.
    albedo_source : {'auto', 'image', 'net'}
        What the 'albedo' atoms are learned from: 'image', the labels' `image_albedo` (the decomposer3d labeler's
        albedo read off the image through the decomposer's own depth, view and light,
        `labels.decomposer.reconstruction.image_albedo`); 'net', the `albedo` map itself (netA's output); 'auto'
        (default), 'image' when the labels have one. The directions are named `albedo_<part>` either way, and the
        top-albedo-colour condition reads `albedo` whenever it is given (the reading the taught rule was chosen
        with). netA's albedo hardly follows the eyes, brows and nose (its response to eye spacing has cos 0.08 with
        the world's); the image's albedo does, and on the shipped decomposer it raises those parts' spans (eyes
        0.47-0.50 -> 0.85-0.87; BENCHMARKS.md, issue 11, thirty-first session).
    n_atoms : int
        Atoms per part (`atom_scope='parts'`) or per map (`'map'`; `'map+parts'`: that many of each).
    atom_scope : {'parts', 'map', 'map+parts'}
        Learn the atoms separately inside each part (default: `n_atoms` per part, footprints confined to the
        part, each part's pixels scaled to unit RMS first, so that small parts such as the nose or the brows get
        atoms of their own instead of being mixed into the skin's), over the whole map (footprints wherever the data
        puts them; named afterwards by the part holding most of their mass), or both: whole-map atoms, then part
        atoms on what they leave unexplained. On the synthetic world's exact decomposition, 'parts' puts the true
        direction of every identity / expression factor within the span of its part's directions at projection
        norm >= 0.92 on two seeds (the whole map: 0 for the nose, eyes, mouth and brows); BENCHMARKS.md, issue 11.
    skip_parts : sequence of str
        Parts that get no atoms with `atom_scope='parts'` (default: the background).
    part_core : float
        With `atom_scope='parts'`, a pixel belongs to a part where the part's (mean) mask is at least this value.
        The default 0.2 takes in the pixels a part covers on a fair share of faces (on the mean mask a part that
        moves from face to face is faint: the synthetic world's brows reach 0.5 on 2 pixels of 32x32, 0.2 on 14),
        and lets neighbouring parts overlap.
    code_alpha : float
        Sparsity of the codes (`learn_dictionary`'s alpha on maps, or parts, scaled to unit RMS per sample; the
        figures of `atom_scope='map'` before the thirteenth session used 0.1) or of the atoms
        (`atom_method='sparse_pca'`).
    atom_method : {'dictionary', 'sparse_pca'}
        Sparse codes on free atoms (the paper's sparse representation), or sparse atoms (SparsePCA).
    code_regression : {'auto', 'lasso', 'ridge'}
        Regression of each atom's code on w: sparse (Lasso on unit-std codes, `alpha`) or ridge (`ridge_alpha`, or
        the metric's generalized ridge). 'auto' (default): ridge when `fit` gets a `w_metric`, else Lasso. A Lasso
        does not combine with a metric (its L1 would act on the metric's coordinates, which mean nothing).
    alpha : float
        L1 strength of the Lasso code regression (sklearn's objective, codes scaled to unit std).
    ridge_alpha : float or 'auto'
        Ridge penalty of the global regression (and of the codes with `code_regression='ridge'`). 'auto'
        (default) chooses it per label by generalized cross-validation (`LinearDirections(alpha='auto')`): the
        decomposer's labels are noisy, and the chosen penalty (about 10-30 on the synthetic checkpoint's 20k
        codes, against the fixed 1.0 used before) moves the yaw and light-azimuth directions 0.005-0.01 closer to
        the truth there (BENCHMARKS.md, issue 11, eleventh session).
    metric_alpha : float
        Strength per row of the metric prior when `fit` gets a `w_metric` (the penalty is `metric_alpha * N` on
        `b^T M^+ b`, M scaled to a largest eigenvalue of 1); it replaces `ridge_alpha`. The default 1e-3 sits in a
        flat optimum: 3e-4 to 3e-3 give the same global directions within 0.003 |cos| on the synthetic checkpoint.
        Not chosen by cross-validation on purpose: the decomposer's errors are predictable from w, so a predictive
        criterion prefers the weak prior that fits them.
    global_loss : {'huber', 'squared'}
        Loss of the global regression (`LinearDirections(loss=...)`). 'huber' (default) refits the ridge with the
        Huber loss (with `ridge_alpha='auto'` its penalty is chosen again by GCV on the Huber fit's weights, else
        the given one is kept): the decomposer reads most faces closely and a minority badly, and least
        squares lets that minority pull the directions (on the synthetic checkpoint 'huber' moves yaw from 0.940 /
        0.951 to 0.961 / 0.968 and light azimuth from 0.873 / 0.883 to 0.902 / 0.915 |cos| to the truth, seeds
        0 / 1; BENCHMARKS.md, issue 11, twelfth session). 'squared': plain ridge from the streamed moments.
    epsilon : float
        Huber threshold in scales (`global_loss='huber'`).
    dict_max_iter : int
        Iteration limit of the dictionary learning (alternating sweeps of codes and atoms).
    max_samples : int
        Rows used for the code regression (the global ridge streams over all rows; its Huber refit uses at most
        100k of the training rows, `LinearDirections`' default); at least `max(n_atoms, 5)`, since an atom enters the
        regression only when 5 rows use it.
    dict_samples : int or None
        Rows (a seeded subset of those) on which the map centre and the atoms are learned; the codes of all
        `max_samples` rows are then solved on the learned atoms. The atoms of a map with a few hundred pixels are
        settled by a few thousand maps, while the alternating minimisation costs time in proportion to its rows
        (about 4x less on a 20k bank). None: learn on all rows.
    side_fraction : float
        Mass share on one image half that earns a `_left` / `_right` suffix.
    chroma_alpha : float
        Strength per row of the *white-light prior* on the regressions of `light_labels`, when `fit` gets
        `w_chroma` (with `w_metric`): the penalty `chroma_alpha * N * b^T K b` (K, the generator's chroma
        sensitivity, scaled to a largest eigenvalue of 1) is added to the metric's. White light scales a pixel's
        colour channels alike, so a light direction of W should not change the image's chromaticity; a
        decomposer reads hair colour partly as ambient, and the prior pulls the ambient direction off it (on the
        synthetic checkpoint |cos| to the true ambient 0.834 / 0.827 -> 0.899 / 0.891 on two 20k banks, light
        azimuth 0.992 -> 0.990, elevation within 0.01; with the world's exact labels every light direction stays
        within 0.007; 0.5 and more start to cost the azimuth; BENCHMARKS.md, issue 11, twentieth session). 0: off.
    light_labels : sequence of str
        The labels the white-light prior applies to (default `LIGHT_LABELS`: the decomposer's light readings).
    conditions : 'auto', dict or None
        Global directions made *conditional* on others (InterFaceGAN's conditional edit): each named direction loses its
        component in the span of its conditions' directions, so that it moves its own reading while holding theirs.
        'auto' (default): `AUTO_CONDITIONS`, the light elevation held against the ambient, diffuse and azimuth readings
        (those that were fitted) and, when an RGB albedo map is given, against `TOP_ALBEDO_COLOUR`, and the ambient held
        against the pitch (when fitted). Unsup3D's symmetric model sees an elevation change only through the part the
        azimuth makes asymmetric (BENCHMARKS.md, issue 10, sixteenth session), so a decomposer's elevation reading takes
        in ambient and diffuse changes, and its regression direction mixes the ambient's in (on the synthetic checkpoint
        |cos| 0.51 with the true ambient). Held against them it moves from 0.555 / 0.557 to 0.761 / 0.769 |cos| to the
        true elevation (seeds 0 / 1; with the world's exact labels 0.996 -> 0.994). The reading also takes bright hair
        above the face for light from above; `TOP_ALBEDO_COLOUR` is the two leading W directions of the chromaticity of
        the decomposer's own albedo in the top region of the canonical face (`_conditions.TOP_REGION`; white light
        changes no chromaticity), and held against them too the elevation moves from 0.79 / 0.78 to 0.88 / 0.87 |cos|
        (seeds 0 / 1, read through the shipped decomposer's light mask; with the world's exact labels 0.996;
        BENCHMARKS.md, issue 11, twenty-first session). The ambient is held against the pitch: a decomposer that reads
        the light through a mask of the top rows (the shipped synthetic one) sees more or less of the head there as it
        pitches, and its ambient reading takes the pitch in (+0.38, standardized); held, the ambient direction gains
        0.007 on two 20k banks (BENCHMARKS.md, issue 11, twenty-second session), and with exact labels it can lose at
        most the true directions' overlap. The other directions are left as fitted (held against one another they lose:
        the ambient against the diffuse, which is nearly its negative, to 0.05; against the top albedo colour, 0.95 ->
        0.90). A dict `{name: [names]}` sets them (every name a fitted global label or a map reading:
        `TOP_ALBEDO_COLOUR` with an RGB albedo map, `DEPTH_HEIGHT` and `DEPTH_WIDTH` with a depth map); None: directions
        as fitted. `coef_` keeps the regressions.
    taught_light : bool
        The light labels come from a decomposer whose netL learned the light from a `LatentLightTeacher`
        (`Unsup3DDecomposer.light_teacher` is set; `find-directions` passes it). Such a reading takes in no more
        ambient than the teacher's directions did, and those were already held, so 'auto' then holds the elevation
        only against `TOP_ALBEDO_COLOUR` and the roll, and the ambient against the pitch
        (`TAUGHT_AUTO_CONDITIONS`). Held against the other light readings as well, the elevation loses what their
        directions lean toward it: on the synthetic checkpoint, with a once-taught decomposer's readings, |cos|
        0.90 -> 0.93 on a 20k bank (0.900 / 0.888 -> 0.932 / 0.928 on two fresh 20k samples), and 0.75 -> 0.92
        with a decomposer whose nets were all taught twice; the roll, which the readings through the light mask's
        box take in, is worth 0.015-0.024 of that (BENCHMARKS.md, issue 11, twenty-third session). A dict
        `conditions` is used as given. With `fit`'s `label_leaks`, 'auto' leaves out a hold against a label whose
        leak into the held label was measured and removed: the measured share is gone, and the hard hold would also
        take the true directions' overlap (with the shipped decomposer's view leak, the elevation is no longer held
        against the roll: +0.003 |cos| on three 20k banks; BENCHMARKS.md, issue 11, thirty-third session).
    soft_conditions : 'auto', dict or None
        Global directions *softly* held against others, after the hard holds of `conditions`: a named direction
        d becomes `(I + soft_strength B^T B)^-1 d`, B the unit rows of its conditions' directions as they come out
        of the hard holds, i.e. the direction that overlaps them least for its length, between d as fitted
        (strength 0) and the hard hold (strength -> inf). Where a hard hold removes all of a direction's
        component along a noisy estimate of another (its own share included), the soft one shrinks it by
        1 + strength along each orthogonal condition. 'auto' (default): `SOFT_AUTO_CONDITIONS`, the ambient held
        against the view (yaw, pitch, roll, tx, ty, tz) and the light's azimuth and elevation, those that were
        fitted, not against the diffuse (nearly the ambient's negative: held against it the ambient is lost). A
        decomposer's ambient, a brightness, reads small shares of all of them; on the synthetic checkpoint, with
        the shipped decomposer, |cos| to the true ambient 0.938 / 0.924 / 0.936 / 0.932 -> 0.954 / 0.947 / 0.955 /
        0.947 on four 20k banks (seeds 0-3; strength 3 chosen on seeds 0 and 1 among 1-30, flat from 3 to 5;
        the hard hold against the same directions loses, 0.90-0.95), 0.001-0.014 higher on eight banks of the
        older decomposers' directions, and with the world's exact labels 0.9954 -> 0.9950. With a depth map the
        ambient is also held against `DEPTH_WIDTH`, the W direction of the face's width as the decomposer's
        canonical depth draws it (the horizontal spread of the relief; |cos| 0.86-0.88 to the true head width,
        0.08-0.09 to the true ambient): a step along the found ambient moved the true head width by +0.10 std,
        and held so (strength 3, not tuned for it) the ambient goes on to 0.959 / 0.954 / 0.961 / 0.955 on the
        four banks, 0.9948 with exact labels. Held the same way,
        the elevation, the azimuth and the pitch lose (the true elevation's direction is not orthogonal to the
        pitch's; BENCHMARKS.md, issue 11, twenty-sixth session). With a depth map 'auto' also holds the elevation
        softly against `DEPTH_HEIGHT`, the W direction of the face's height as the decomposer's canonical depth
        draws it (the vertical spread of the relief; on the synthetic checkpoint |cos| 0.88-0.90 to the true
        head height): a decomposer's elevation reading takes a taller face for light from below (a step along
        the found elevation moved the true head height by -0.36 std), and held so (the same strength, not tuned
        for it) the elevation goes 0.915 / 0.908 / 0.908 / 0.914 -> 0.932 / 0.923 / 0.928 / 0.929 on the four
        banks, with exact labels 0.9956 -> 0.9918. A dict `{name: [names]}` sets them (fitted global labels,
        or `DEPTH_HEIGHT` and `DEPTH_WIDTH` with a depth map); None: none.
    part_conditions : 'auto', dict or None
        Global directions softly held (as `soft_conditions` do) against *localized* directions, after the other
        holds: `{global name: [localized name prefixes]}`, a prefix matching the localized directions named like it
        or like it plus a suffix (`albedo_eyes`: `albedo_eyes`, `albedo_eyes_2`, ...). 'auto' (default):
        `PART_AUTO_CONDITIONS`, the light elevation held against the eyes' albedo directions, when both were found.
        A decomposer's elevation reading takes in the eyes: a step along the found elevation moved the true eye
        spacing +0.38 std where the true elevation moves it +0.19 (BENCHMARKS.md, issue 11, thirty-first session).
        Held so (strength `part_strength`), the elevation direction gains 0.006 / 0.008 / 0.007 |cos| to the truth
        on three 20k banks of the synthetic checkpoint (0.929 / 0.928 / 0.922 -> 0.935 / 0.936 / 0.929; flat over
        strengths 0.1-0.3, chosen on the first two banks; the eyes' depth directions lose instead;
        BENCHMARKS.md, issue 11, thirty-second session). None: no such hold.
    part_strength : float
        The strength of `part_conditions` (default 0.2; 0: no effect). Far weaker than `soft_strength`: the part's
        directions carry the part's own factors, which the true light directions overlap.
    soft_strength : float
        The strength s of `soft_conditions` (default 3; 0: no effect).
    val_fraction : float
        Held-out fraction for `scores_` (R^2); 0 disables.
    random_state : int or None
    chunk_size : int  rows per chunk of the streamed moments.
    blas_threads : int or None  BLAS threads during `fit` (default 1; see `_base.blas_limit`).

    Attributes
    ----------
    directions_ : ndarray [K, w_dim]  unit rows (float32): the global directions, then the localized ones.
    names_ : list[str]  global: the semantic's name ('yaw', 'light_azimuth'); localized: '<map>_<part>[_side]'.
    kinds_ : list[str]  'global' or the map name of each direction.
    footprints_ : ndarray [K, R, R]  float32 footprint of each direction, max 1 (all zero for global directions;
        shape [K, 0, 0] when no map was given).
    atoms_ : dict[str, ndarray [K_map, ...map shape]]  signed atoms (unit norm in the scaled map space).
    atom_index_ : ndarray [K] int  index of each localized direction's atom in `atoms_[kind]` (-1 for global).
    part_names_ : list[str];  part_shares_ : ndarray [K, P]  footprint mass share per part (0 rows for global).
    coef_ : ndarray [K, w_dim]  label (or code) units per unit w;  intercept_ : ndarray [K].
    scores_ : ndarray [K]  held-out R^2 of each regression.
    ridge_alpha_ : dict[str, float]  the ridge penalty of each global direction (the one `ridge_alpha='auto'` chose,
        or `metric_alpha * N` with a metric).
    metric_ : bool  whether the regressions used a `w_metric`.
    global_losses_ : dict[str, str]  the loss each global label was fitted with: `global_loss`, or 'squared' for a
        label that sits at one value on most rows (a rare yes / no), where Huber's scale estimate collapses.
    map_center_, map_scale_ : dict[str, ndarray / float]  baseline map and RMS scale removed before the atoms.
    dropped_ : list[str]  constant global labels and atoms with no code / no coefficients.
    albedo_source_ : str or None  'image' or 'net': the albedo the 'albedo' atoms were learned from
        (`albedo_source`); None when `map_labels` has no 'albedo'.
    conditioned_on_ : dict[str, list[str]]  the conditions applied (see `conditions`).
    soft_conditioned_on_ : dict[str, list[str]]  the soft conditions applied (see `soft_conditions`).
    part_conditioned_on_ : dict[str, list[str]]  the localized directions each global one was softly held
        against (see `part_conditions`).
    label_leaks_ : dict[str, dict[str, float]]  the leaks removed from the labels before the fit (`fit`'s
        `label_leaks`; empty when none).
    top_albedo_colour_directions_ : ndarray [2, w_dim] or None  the W directions `TOP_ALBEDO_COLOUR` names
        (orthonormal; None without an RGB albedo map).
    depth_height_direction_, depth_width_direction_ : ndarray [1, w_dim] or None  the unit W directions
        `DEPTH_HEIGHT` and `DEPTH_WIDTH` name (None unless a condition used them).
    chroma_labels_ : list[str]  the global labels fitted with the white-light prior (empty without `w_chroma`).
    mean_ : ndarray [w_dim];  std_ : ndarray [K]  std of W along each direction;  n_samples_fit_ : int.

    Examples
    --------
    >>> bank = LatentBank.create(G, "bank", 20000, labelers=[decomposer_labeler("synthetic")])
    >>> est = ThreeDCoupledDirections(n_atoms=8, random_state=0).fit(bank.w, bank.labels)
    >>> est.names_            # ['yaw', 'pitch', ..., 'depth_nose', 'albedo_mouth', ...]
    >>> ds = est.to_direction_set()   # ds.extras['footprint'] [K, R, R]
    """

    _method = "3d-coupled"

    def __init__(
        self,
        global_labels: Sequence[str] | None = None,
        map_labels: Sequence[str] = ("depth", "albedo"),
        albedo_source: str = "auto",
        n_atoms: int = 6,
        atom_scope: str = "parts",
        skip_parts: Sequence[str] = ("background",),
        part_core: float = 0.2,
        code_alpha: float = 0.03,
        atom_method: str = "dictionary",
        code_regression: str = "auto",
        alpha: float = 1e-3,
        ridge_alpha: float | str = "auto",
        metric_alpha: float = 1e-3,
        global_loss: str = "huber",
        epsilon: float = 1.35,
        dict_max_iter: int = 100,
        max_samples: int = 20_000,
        dict_samples: int | None = 5_000,
        side_fraction: float = 0.7,
        conditions: Mapping[str, Sequence[str]] | str | None = "auto",
        taught_light: bool = False,
        soft_conditions: Mapping[str, Sequence[str]] | str | None = "auto",
        soft_strength: float = 3.0,
        part_conditions: Mapping[str, Sequence[str]] | str | None = "auto",
        part_strength: float = 0.2,
        chroma_alpha: float = 0.2,
        light_labels: Sequence[str] = LIGHT_LABELS,
        val_fraction: float = 0.1,
        random_state: int | None = None,
        chunk_size: int = 65536,
        blas_threads: int | None = 1,
    ) -> None:
        self.global_labels = global_labels
        self.map_labels = map_labels
        self.albedo_source = albedo_source
        self.n_atoms = n_atoms
        self.atom_scope = atom_scope
        self.skip_parts = skip_parts
        self.part_core = part_core
        self.code_alpha = code_alpha
        self.atom_method = atom_method
        self.code_regression = code_regression
        self.alpha = alpha
        self.ridge_alpha = ridge_alpha
        self.metric_alpha = metric_alpha
        self.global_loss = global_loss
        self.epsilon = epsilon
        self.dict_max_iter = dict_max_iter
        self.max_samples = max_samples
        self.dict_samples = dict_samples
        self.side_fraction = side_fraction
        self.conditions = conditions
        self.taught_light = taught_light
        self.soft_conditions = soft_conditions
        self.soft_strength = soft_strength
        self.part_conditions = part_conditions
        self.part_strength = part_strength
        self.chroma_alpha = chroma_alpha
        self.light_labels = light_labels
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.blas_threads = blas_threads

    # ------------------------------------------------------------------ fit
    def fit(self, w: Any, labels: Mapping[str, Any], part_masks: Any = None,
            part_names: Sequence[str] | None = None, w_metric: Any = None,
            w_chroma: Any = None, label_leaks: Mapping[str, Mapping[str, float]] | None = None
            ) -> ThreeDCoupledDirections:
        """Fit on `w` `[N, w_dim]` and decomposer labels (dict name -> `[N]` scalars or `[N, ...]` maps).

        `part_masks`: optional canonical-frame part masks, a dict name -> `[R, R]` or an array `[P, R, R]` with
        `part_names` (e.g. the synthetic world's mean `canonical_masks`); default: `canonical_regions`.
        `w_metric`: optional `[w_dim, w_dim]` PSD matrix, the generator's image sensitivity
        (`analysis.sensitivity.image_sensitivity(G, w[:16])`), used as the prior covariance of every regression's
        coefficients (see the module docstring and `metric_alpha`).
        `w_chroma`: optional `[w_dim, w_dim]` PSD matrix, the generator's chroma sensitivity
        (`analysis.sensitivity.sensitivities`); with `w_metric` it adds the white-light prior `chroma_alpha` to the
        regressions of `light_labels`.
        `label_leaks`: optional {label: {other label: slope}}, how much of other scalar labels a label's reader is
        known to take in, measured by intervention rather than fitted here (e.g. the decomposer's light readings on
        its rotation readings, measured on its own re-renders: `DecomposerLabeler.view_leak`). Each such label has
        ``sum slope * (other - its mean)`` subtracted before every regression and condition (`label_leaks_`).
        """
        with blas_limit(self.blas_threads):
            return self._fit(w, labels, part_masks, part_names, w_metric, w_chroma, label_leaks)

    def _check_params(self) -> None:
        if self.albedo_source not in _ALBEDO_SOURCES:
            raise ValueError(f"albedo_source must be one of {_ALBEDO_SOURCES}, got {self.albedo_source!r}")
        if self.atom_method not in _ATOM_METHODS:
            raise ValueError(f"atom_method must be one of {_ATOM_METHODS}, got {self.atom_method!r}")
        if self.code_regression not in _REGRESSIONS:
            raise ValueError(f"code_regression must be one of {_REGRESSIONS}, got {self.code_regression!r}")
        _check_number("part_core", self.part_core, 0.0, "in (0, 1] (the share of faces a part pixel must be in)",
                      open_low=True, high=1.0, open_high=False)
        if self.global_loss not in _LOSSES:
            raise ValueError(f"global_loss must be one of {_LOSSES}, got {self.global_loss!r}")
        if self.atom_scope not in ("map", "parts", "map+parts"):
            raise ValueError(f"atom_scope must be 'map', 'parts' or 'map+parts', got {self.atom_scope!r}")
        _check_int("n_atoms", self.n_atoms, 1)
        n_atoms = int(self.n_atoms)
        if self.dict_samples is not None:
            _check_int("dict_samples", self.dict_samples, n_atoms, f"None or an integer >= n_atoms ({n_atoms})")
        # an atom's code regression keeps only atoms used on >= 5 rows (`_fit_map`): fewer rows can fit no atom
        low = max(n_atoms, _MIN_CODE_ROWS)
        _check_int("max_samples", self.max_samples, low,
                   f"an integer >= max(n_atoms, {_MIN_CODE_ROWS}) = {low} (the atoms and the code regression are "
                   f"fitted on these rows; an atom needs >= {_MIN_CODE_ROWS} rows that use it)")
        _check_int("dict_max_iter", self.dict_max_iter, 1)
        _check_int("chunk_size", self.chunk_size, 1)
        _check_number("code_alpha", self.code_alpha, 0.0, ">= 0 (the L1 penalty of the codes; 0: no sparsity)")
        _check_number("alpha", self.alpha, 0.0, "> 0 (the Lasso's L1 strength; code_regression='ridge' for none)",
                      open_low=True)
        if not (isinstance(self.ridge_alpha, str) and self.ridge_alpha == "auto"):
            _check_number("ridge_alpha", self.ridge_alpha, 0.0, "a number >= 0 or 'auto'")
        _check_number("metric_alpha", self.metric_alpha, 0.0, "> 0 (the strength per row of the metric prior)",
                      open_low=True)
        _check_number("epsilon", self.epsilon, 1.0, ">= 1 (the Huber threshold in scales)")
        _check_number("val_fraction", self.val_fraction, 0.0, "in [0, 1)", high=1.0)
        _check_number("side_fraction", self.side_fraction, 0.5, "in (0.5, 1]", open_low=True, high=1.0,
                      open_high=False)
        for key in ("conditions", "soft_conditions", "part_conditions"):
            value = getattr(self, key)
            if not (value is None or value == "auto" or (isinstance(value, Mapping) and all(
                    isinstance(k, str) and isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v)
                    for k, v in value.items()))):
                raise ValueError(f"{key} must be 'auto', None or a dict name -> list of names, got {value!r}")
        _check_number("soft_strength", self.soft_strength, 0.0, ">= 0 (0: the soft holds do nothing)")
        _check_number("part_strength", self.part_strength, 0.0, ">= 0 (0: the part holds do nothing)")
        _check_number("chroma_alpha", self.chroma_alpha, 0.0, ">= 0 (0: no white-light prior)")
        for key in ("map_labels", "global_labels", "skip_parts", "light_labels"):
            value = getattr(self, key)
            if isinstance(value, str) or (value is None and key != "global_labels") or not (
                    value is None or isinstance(value, (list, tuple))):
                raise ValueError(f"{key} must be a sequence of names, got {value!r}")

    def _fit(self, w: Any, labels: Mapping[str, Any], part_masks: Any, part_names: Sequence[str] | None,
             w_metric: Any, w_chroma: Any = None, label_leaks: Mapping[str, Mapping[str, float]] | None = None):
        self._check_params()
        w = as_w(w)
        if w_chroma is not None and w_metric is None:
            raise ValueError("w_chroma (the white-light prior) is added to the metric's prior: pass w_metric too")
        if w_metric is not None and self.code_regression == "lasso":
            raise ValueError("code_regression='lasso' does not combine with a w_metric (its L1 would act on the "
                             "metric's coordinates); use code_regression='auto' or 'ridge'")
        self.albedo_source_ = self._resolve_albedo_source(labels)
        map_labels = [IMAGE_ALBEDO if k == "albedo" and self.albedo_source_ == "image" else k for k in self.map_labels]
        arrays, wanted, maps, dropped = _check_labels(labels, w.shape[0], self.global_labels, map_labels)
        self.label_leaks_ = _remove_label_leaks(arrays, label_leaks)
        # the image's albedo stands in for netA's among the maps (its directions are still albedo_<part>), while
        # the conditions keep reading netA's albedo when it is given
        map_arrays = dict(arrays)
        if IMAGE_ALBEDO in maps:
            map_arrays["albedo"] = arrays[IMAGE_ALBEDO]
            maps = ["albedo" if k == IMAGE_ALBEDO else k for k in maps]

        # with a metric every regression runs on w_fit = (w - mean) S and maps its coefficients back by S
        root = None if w_metric is None else metric_root(w_metric, w.shape[1])
        w_mean, w_cov = _mean_cov(w, self.chunk_size)  # one pass: the metric's centre here, `std_` at the end
        w_fit = w if root is None else to_metric_coords(w, w_mean, root, int(self.chunk_size))
        chroma = None if w_chroma is None or not float(self.chroma_alpha) > 0 else w_chroma
        resolution = max((map_arrays[k].shape[-1] for k in maps), default=0)
        if part_masks is None:
            p_names, p_masks = canonical_regions(max(resolution, 1))
        else:
            p_names, p_masks = _parse_part_masks(part_masks, part_names)
        self.part_names_ = list(p_names)

        blocks = [self._fit_global(w, w_fit, root, w_mean, chroma, arrays, wanted, maps, resolution, len(p_names)),
                  *self._fit_maps(w_fit, root, w_mean, map_arrays, maps, dropped, resolution, p_names, p_masks)]
        blocks = [b for b in blocks if b is not None]
        if not blocks:
            raise ValueError(f"no direction was found: dropped {dropped}")
        self.names_ = _unique([nm for b in blocks for nm in b.names])
        self.kinds_ = [b.kind for b in blocks for _ in b.names]
        # the global directions softly held against localized ones (`part_conditions`), once both are known
        self.part_conditioned_on_ = resolve_part_conditions(self.part_conditions, self.names_, self.kinds_)
        directions = soft_conditioned(np.concatenate([b.directions for b in blocks]), self.names_,
                                      self.part_conditioned_on_, float(self.part_strength))
        self.directions_ = directions.astype(np.float32)
        self.directions_ /= np.linalg.norm(self.directions_, axis=1, keepdims=True)
        self.coef_ = np.concatenate([b.coef for b in blocks])
        self.intercept_ = np.concatenate([b.intercept for b in blocks])
        self.scores_ = np.concatenate([b.scores for b in blocks])
        self.footprints_ = np.concatenate([b.footprints for b in blocks]).astype(np.float32)
        self.part_shares_ = np.concatenate([b.part_shares for b in blocks])
        self.atom_index_ = np.concatenate([b.atom_index for b in blocks]).astype(np.int64)
        self.dropped_ = dropped
        self.metric_ = root is not None
        self.mean_ = w_mean
        d64 = self.directions_.astype(np.float64)
        self.std_ = np.sqrt(np.maximum(np.einsum("kd,de,ke->k", d64, w_cov, d64), 0.0))
        self.n_samples_fit_ = w.shape[0]
        return self

    def _fit_global(self, w: np.ndarray, w_fit: np.ndarray, root: np.ndarray | None, w_mean: np.ndarray,
                    chroma: Any, arrays: dict[str, np.ndarray], wanted: list[str], maps: list[str], resolution: int,
                    n_parts: int) -> _Block | None:
        """The global directions: one regression of each scalar label in `wanted` on w (grouped by loss and
        prior), held against their conditions, then softly against their soft conditions; None when there is no
        scalar label. Sets the global fitted attributes (`ridge_alpha_`, `global_losses_`, `conditioned_on_`,
        `soft_conditioned_on_`, `chroma_labels_`, `top_albedo_colour_directions_`, `depth_height_direction_`,
        `depth_width_direction_`)."""
        self.ridge_alpha_, self.global_losses_, self.conditioned_on_, self.soft_conditioned_on_ = {}, {}, {}, {}
        self.top_albedo_colour_directions_ = self.depth_height_direction_ = self.depth_width_direction_ = None
        self.chroma_labels_ = []
        if not wanted:
            return None
        # Huber's scale is a median of absolute residuals: for a label that sits at one value on most rows (a
        # rare yes/no, a clipped label) it collapses to 0 and the fit with it; such labels get the squared loss
        losses = {k: (self.global_loss if _mode_share(arrays[k]) <= 0.5 else "squared") for k in wanted}
        alpha = self.ridge_alpha if root is None else float(self.metric_alpha) * w.shape[0]
        # the light labels get the white-light prior on top of the metric (their own coordinates)
        light_root = None if chroma is None else combined_root(root, chroma, float(self.chroma_alpha) /
                                                                float(self.metric_alpha))
        light_set = set(self.light_labels)
        light = {k: light_root is not None and k in light_set for k in wanted}
        self.chroma_labels_ = [k for k in wanted if light[k]]
        w_light = (to_metric_coords(w, w_mean, light_root, int(self.chunk_size)) if self.chroma_labels_
                   else None)
        per_label: dict[str, tuple] = {}
        for loss, is_light in dict.fromkeys((losses[k], light[k]) for k in wanted):
            group_root, group_w = (light_root, w_light) if is_light else (root, w_fit)
            lin = LinearDirections(method="ridge", alpha=alpha, loss=loss, epsilon=self.epsilon,
                                   val_fraction=self.val_fraction, random_state=self.random_state,
                                   chunk_size=self.chunk_size, blas_threads=None).fit(
                group_w, {k: arrays[k] for k in wanted if (losses[k], light[k]) == (loss, is_light)})
            d_g, c_g, b_g = from_metric_coords(lin.coef_, lin.intercept_, group_root, w_mean, lin.names_)
            d_g = lin.directions_ if d_g is None else d_g
            for i, k in enumerate(lin.names_):
                per_label[k] = (d_g[i], c_g[i], b_g[i], lin.scores_[i], lin.alpha_[i])
        order = [k for k in wanted if k in per_label]  # the labels' own order, whatever group fitted them
        d, c, b, sc, al = (np.stack([per_label[k][j] for k in order]) for j in range(5))
        extra = self._fit_conditions(order, arrays, maps, w_fit, root, w_mean, alpha)
        held = conditioned(d, order, self.conditioned_on_, extra)
        held = soft_conditioned(held, order, self.soft_conditioned_on_, float(self.soft_strength), extra)
        self.ridge_alpha_ = dict(zip(order, al.tolist()))
        self.global_losses_ = {k: losses[k] for k in order}
        k = len(order)
        return _Block("global", order, held, c, b, sc,
                      np.zeros((k, resolution, resolution), np.float32), np.zeros((k, n_parts)),
                      np.full(k, -1, np.int64))

    def _fit_conditions(self, order: list[str], arrays: dict[str, np.ndarray], maps: list[str], w_fit: np.ndarray,
                        root: np.ndarray | None, w_mean: np.ndarray,
                        alpha: float | str) -> dict[str, np.ndarray | None]:
        """Sets `conditioned_on_` and `soft_conditioned_on_` for the fitted global labels `order`, and the W
        directions of the map readings they use (`top_albedo_colour_directions_`, `depth_height_direction_`,
        `depth_width_direction_`); returns those directions by condition name (None where unused)."""
        top_chroma = None
        albedo = arrays.get("albedo", arrays.get(IMAGE_ALBEDO)) if "albedo" in maps else None
        if albedo is not None and albedo.ndim == 4 and albedo.shape[1] == 3:
            top_chroma = top_albedo_chroma(albedo, int(self.chunk_size))
            if not (np.isfinite(top_chroma).all() and top_chroma.std(axis=0).max() > 1e-6):
                top_chroma = None  # an albedo with no colour to read there (or none at all): no such condition
        spread = None
        if "depth" in maps and (arrays["depth"].ndim == 3 or arrays["depth"].shape[1] == 1):
            spread = depth_spread(arrays["depth"], int(self.chunk_size))
            if not (np.isfinite(spread).all() and spread.std(axis=0).min() > 1e-6):
                spread = None  # a depth with no relief to measure: no such conditions
        self.conditioned_on_ = self._conditions(order, top_chroma is not None, spread is not None)
        self.soft_conditioned_on_ = self._soft_conditions(order, spread is not None)
        used = {c for v in [*self.conditioned_on_.values(), *self.soft_conditioned_on_.values()] for c in v}
        if TOP_ALBEDO_COLOUR in used:
            self.top_albedo_colour_directions_ = self._reading_directions(
                w_fit, root, w_mean, {f"{TOP_ALBEDO_COLOUR}_{c}": top_chroma[:, i] for i, c in enumerate("rgb")},
                alpha, 2)
        if DEPTH_HEIGHT in used:
            self.depth_height_direction_ = self._reading_directions(w_fit, root, w_mean,
                                                                    {DEPTH_HEIGHT: spread[:, 0]}, alpha, 1)
        if DEPTH_WIDTH in used:
            self.depth_width_direction_ = self._reading_directions(w_fit, root, w_mean,
                                                                   {DEPTH_WIDTH: spread[:, 1]}, alpha, 1)
        return {TOP_ALBEDO_COLOUR: self.top_albedo_colour_directions_, DEPTH_HEIGHT: self.depth_height_direction_,
                DEPTH_WIDTH: self.depth_width_direction_}

    def _fit_maps(self, w_fit: np.ndarray, root: np.ndarray | None, w_mean: np.ndarray,
                  arrays: dict[str, np.ndarray], maps: list[str], dropped: list[str], resolution: int,
                  p_names: Sequence[str], p_masks: np.ndarray) -> list[_Block]:
        """The localized directions: one block per map label that gives any (`_fit_map`), in W's coordinates.
        Sets `atoms_`, `map_center_` and `map_scale_`."""
        self.atoms_, self.map_center_, self.map_scale_ = {}, {}, {}
        rows = self._rows(w_fit.shape[0])
        blocks = []
        for key in maps:
            out = self._fit_map(w_fit, rows, key, arrays[key], resolution, p_names, p_masks, dropped,
                                metric=root is not None)
            if out is None:
                continue
            d, c, b, s, fps, sh, idx, local_names = out
            d_w, c, b = from_metric_coords(c, b, root, w_mean, local_names)
            blocks.append(_Block(key, local_names, d if d_w is None else d_w, c, b, s, fps, sh, idx))
        return blocks

    def _conditions(self, fitted: Sequence[str], rgb_albedo: bool = False,
                    depth_map: bool = False) -> dict[str, list[str]]:
        """{direction: its conditions} among the fitted global labels and, with an RGB albedo map,
        `TOP_ALBEDO_COLOUR`, with a depth map, `DEPTH_HEIGHT` and `DEPTH_WIDTH` (see `conditions`)."""
        auto = TAUGHT_AUTO_CONDITIONS if self.taught_light else AUTO_CONDITIONS
        if self.conditions == "auto" and self.label_leaks_:  # a measured, removed leak needs no hold as well
            auto = {k: tuple(c for c in v if c not in self.label_leaks_.get(k, {})) for k, v in auto.items()}
        return resolve_conditions("conditions", self.conditions, auto, fitted, {
            TOP_ALBEDO_COLOUR: (rgb_albedo, "an RGB albedo map"), **depth_readings(depth_map)})

    def _soft_conditions(self, fitted: Sequence[str], depth_map: bool = False) -> dict[str, list[str]]:
        """{direction: the directions it is softly held against} among the fitted global labels and, with a depth
        map, `DEPTH_HEIGHT` and `DEPTH_WIDTH` (see `soft_conditions`)."""
        return resolve_conditions("soft_conditions", self.soft_conditions, SOFT_AUTO_CONDITIONS, fitted,
                                   depth_readings(depth_map))

    def _reading_directions(self, w_fit: np.ndarray, root: np.ndarray | None, w_mean: np.ndarray,
                            readings: dict[str, np.ndarray], alpha: float | str, k: int) -> np.ndarray:
        """The k leading W directions (orthonormal rows) of a condition's readings {name: [N]}, each regressed as
        the global labels without the white-light prior are (the top albedo's three chromaticities sum to 0 over
        the channels, so two directions carry them; the depth height is one)."""
        lin = LinearDirections(method="ridge", alpha=alpha, loss="squared", val_fraction=0.0,
                               random_state=self.random_state, chunk_size=self.chunk_size, blas_threads=None).fit(
            w_fit, readings)
        d, _, _ = from_metric_coords(lin.coef_, lin.intercept_, root, w_mean, lin.names_)
        d = lin.directions_ if d is None else d
        return np.linalg.svd(np.asarray(d, dtype=np.float64), full_matrices=False)[2][:k]

    def _resolve_albedo_source(self, labels: Mapping[str, Any]) -> str | None:
        """'image' or 'net' (see `albedo_source`), None when `map_labels` has no 'albedo'; 'image' asked for with
        no `image_albedo` label is refused."""
        if "albedo" not in self.map_labels:
            return None
        has_image = isinstance(labels, Mapping) and IMAGE_ALBEDO in labels
        if self.albedo_source == "image" and not has_image:
            raise LatentError(f"albedo_source='image' needs an {IMAGE_ALBEDO!r} map label (the decomposer3d "
                              f"labeler gives it with maps=True); labels: {list(labels)}")
        if self.albedo_source == "net":
            return "net"
        return "image" if has_image else "net"

    def _rows(self, n: int) -> np.ndarray:
        m = min(n, int(self.max_samples))
        if m == n:
            return np.arange(n)
        return np.sort(np.random.default_rng(_seed(self.random_state)).choice(n, size=m, replace=False))

    def _dict_rows(self, m: int) -> np.ndarray:
        """Positions (within the `m` fitted rows) on which the atoms are learned."""
        if self.dict_samples is None or int(self.dict_samples) >= m:
            return np.arange(m)
        seed = _seed(self.random_state)
        rng = np.random.default_rng(None if seed is None else [seed, 1])  # a stream apart from `_rows`'
        return np.sort(rng.choice(m, size=int(self.dict_samples), replace=False))

    def _atom_kwargs(self) -> dict:
        """How every map's (or part's) atoms are learned (`_map_atoms.map_atoms`' settings)."""
        return dict(method=self.atom_method, code_alpha=self.code_alpha, max_iter=self.dict_max_iter,
                    seed=_seed(self.random_state))

    def _part_atoms(self, y, learn, shape, p_names, p_masks):
        """`atom_scope='parts'`: `_map_atoms.part_atoms` with this estimator's settings."""
        return part_atoms(y, learn, shape, p_names, p_masks, n_atoms=int(self.n_atoms), part_core=float(self.part_core),
                          skip_parts=self.skip_parts, **self._atom_kwargs())

    def _fit_map(self, w, rows, key, maps, resolution, p_names, p_masks, dropped, metric=False):
        """Atoms of one map label, their codes' regression on w, footprints and names (None if nothing is left).

        With `metric`, `w` is already in the metric's coordinates and the codes get its generalized ridge."""
        shape = maps.shape[1:]
        y = np.asarray(maps[rows], dtype=np.float32).reshape(rows.size, -1)
        if not np.isfinite(y).all():
            source = IMAGE_ALBEDO if key == "albedo" and getattr(self, "albedo_source_", None) == "image" else key
            raise LatentError(f"map label {source!r} contains NaN or inf")
        learn = self._dict_rows(rows.size)
        center = np.median(y[learn], axis=0).astype(np.float32)
        y -= center
        scale = rms(y)
        if not scale > 0:
            dropped.append(key)
            return None
        y /= scale
        if self.atom_scope == "parts":
            atoms, codes, atom_parts = self._part_atoms(y, learn, shape, p_names, p_masks)
            if atoms is None:
                dropped.append(key)
                return None
        else:
            atoms, codes = map_atoms(y, learn, int(self.n_atoms), **self._atom_kwargs())
            atom_parts = [None] * atoms.shape[0]  # named afterwards by where their footprint lies
            if self.atom_scope == "map+parts":
                residual = y - (codes @ atoms).astype(y.dtype)
                p_atoms, p_codes, p_parts = self._part_atoms(residual, learn, shape, p_names, p_masks)
                if p_atoms is not None:
                    atoms, codes = np.concatenate([atoms, p_atoms]), np.concatenate([codes, p_codes], axis=1)
                    atom_parts += p_parts
        k = atoms.shape[0]
        signed = canonical_sign(atoms)
        flip = np.where(np.sum(signed * atoms, axis=1) < 0, -1.0, 1.0)
        atoms, codes = atoms * flip[:, None], codes * flip[None, :]
        self.atoms_[key] = atoms.reshape((k, *shape)).astype(np.float32)
        self.map_center_[key] = center.reshape(shape)
        self.map_scale_[key] = scale

        # an atom coded on only a handful of samples is noise to a regression (and may be constant on its training
        # split): keep atoms used by at least 0.5% of the rows (at least 5)
        min_rows = max(_MIN_CODE_ROWS, int(0.005 * codes.shape[0]))
        used = [i for i in range(k) if np.count_nonzero(codes[:, i] - np.median(codes[:, i])) >= min_rows
                and np.linalg.norm(atoms[i]) > 0]
        dropped += [f"{key}_atom{i}" for i in range(k) if i not in used]
        if not used:
            return None
        reg = self._regress_codes(w[rows], {f"{key}_atom{i}": codes[:, i] for i in used}, dropped, metric)
        if reg is None:
            return None
        idx = np.asarray([int(nm.rsplit("atom", 1)[1]) for nm in reg.names_], dtype=np.int64)
        mag, local_names, shares = self._footprints(key, atoms[idx], [atom_parts[i] for i in idx], shape, resolution,
                                                    p_names, p_masks)
        return (reg.directions_, reg.coef_, reg.intercept_, reg.scores_, mag, shares, idx, local_names)

    def _regress_codes(self, w: np.ndarray, codes: dict[str, np.ndarray], dropped: list[str], metric: bool):
        """The fitted regression of the atoms' `codes` {name: [n]} on `w` [n, w_dim] (Lasso, or ridge under the
        metric), or None when no atom moves with w; the atoms it leaves out are added to `dropped`."""
        if self.code_regression == "lasso" or (self.code_regression == "auto" and not metric):
            reg = SparseDirections(method="lasso", alpha=self.alpha, val_fraction=self.val_fraction,
                                   random_state=self.random_state, chunk_size=self.chunk_size, blas_threads=None)
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # all-zero atoms are reported in dropped_ instead
                try:
                    reg.fit(w, codes)
                except NoDirectionError:  # no atom of this map moves with w: the map gives no direction
                    dropped += list(codes)
                    return None
            dropped += list(reg.dropped_)
            return reg
        alpha = float(self.metric_alpha) * w.shape[0] if metric else self.ridge_alpha
        reg = LinearDirections(method="ridge", alpha=alpha, val_fraction=self.val_fraction,
                               random_state=self.random_state, chunk_size=self.chunk_size, blas_threads=None)
        return reg.fit(w, codes)

    def _footprints(self, key, atoms, atom_parts, shape, resolution, p_names, p_masks):
        """Each atom's footprint (its magnitude map, channels combined, at `resolution`, peak 1) [K, R, R] float32,
        its name `<key>_<part>` (the part it was learned in, else the part holding most of the footprint) and the
        share of the footprint in that part."""
        k = atoms.shape[0]
        mag = np.abs(atoms).reshape(k, -1, shape[-2], shape[-1])
        mag = np.sqrt((mag**2).sum(axis=1))  # channels combined: [K_map, R, R]
        if shape[-1] != resolution:
            mag = resize_masks(mag.astype(np.float32), resolution).astype(np.float64)
        mag /= np.maximum(mag.reshape(k, -1).max(axis=1), 1e-30)[:, None, None]
        local_names, shares = [], []
        for fp, own in zip(mag, atom_parts):
            part, sh = footprint_name(fp, p_names, p_masks, self.side_fraction)
            if own is not None:  # a part atom is named after the part it was learned in
                part = own + side_suffix(fp, self.side_fraction)
            local_names.append(f"{key}_{part}")
            shares.append(sh)
        return mag.astype(np.float32), local_names, np.asarray(shares)

    # ------------------------------------------------------------------ use
    def predict(self, w: Any) -> np.ndarray:
        """Semantics `[N, K]` predicted from `w` `[N, w_dim]` by the fitted regressions (label or code units)."""
        check_fitted(self)
        w = as_w(w, allow_1d=True)
        if w.shape[-1] != self.coef_.shape[1]:
            raise LatentError(f"w has w_dim {w.shape[-1]} but the directions have {self.coef_.shape[1]}")
        return np.asarray(w, dtype=np.float64) @ self.coef_.T + self.intercept_

    def _extras(self) -> dict[str, np.ndarray]:
        check_fitted(self)
        out = super()._extras()
        out["coef"] = self.coef_
        out["score"] = self.scores_
        out["atom_index"] = self.atom_index_
        if self.footprints_.size:
            out["footprint"] = self.footprints_
            out["part_shares"] = self.part_shares_.astype(np.float32)
        return out

    def _info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kinds": list(self.kinds_), "part_names": list(self.part_names_),
                               "map_scale": {k: float(v) for k, v in self.map_scale_.items()},
                               "w_metric": bool(getattr(self, "metric_", False)),
                               "albedo_source": self.albedo_source_}
        if self.dropped_:
            out["dropped"] = list(self.dropped_)
        if getattr(self, "conditioned_on_", None):
            out["conditioned_on"] = {k: list(v) for k, v in self.conditioned_on_.items()}
        if getattr(self, "soft_conditioned_on_", None):
            out["soft_conditioned_on"] = {k: list(v) for k, v in self.soft_conditioned_on_.items()}
            out["soft_strength"] = float(self.soft_strength)
        if getattr(self, "part_conditioned_on_", None):
            out["part_conditioned_on"] = {k: list(v) for k, v in self.part_conditioned_on_.items()}
            out["part_strength"] = float(self.part_strength)
        if getattr(self, "label_leaks_", None):
            out["label_leaks"] = {k: dict(v) for k, v in self.label_leaks_.items()}
        return out


class _Block(NamedTuple):
    """One run of fitted directions of one kind (`global`, or a map label), in W's coordinates."""
    kind: str
    names: list[str]
    directions: np.ndarray  # [K, w_dim]
    coef: np.ndarray  # [K, w_dim]
    intercept: np.ndarray  # [K]
    scores: np.ndarray  # [K]
    footprints: np.ndarray  # [K, R, R] (zeros for global directions)
    part_shares: np.ndarray  # [K, P]
    atom_index: np.ndarray  # [K] (-1 for global directions)


def _remove_label_leaks(arrays: dict[str, np.ndarray],
                        leaks: Mapping[str, Mapping[str, float]] | None) -> dict[str, dict[str, float]]:
    """Replace each scalar label in `leaks`, in `arrays`, by the label less its known share of other scalar labels
    (``y - sum slope * (x - mean x)``: its mean is kept; the caller's arrays are not written); returns the leaks as
    applied."""
    if leaks is None:
        return {}
    if not isinstance(leaks, Mapping):
        raise ValueError(f"label_leaks must be a dict label -> {{other label: slope}}, got {type(leaks).__name__}")
    scalars = sorted(k for k, v in arrays.items() if v.ndim == 1)
    applied: dict[str, dict[str, float]] = {}
    for target, row in leaks.items():
        if not isinstance(row, Mapping):
            raise ValueError(f"label_leaks[{target!r}] must be a dict other label -> slope, got {row!r}")
        unknown = [k for k in [target, *row] if k not in scalars]
        if unknown:
            raise ValueError(f"label_leaks name {unknown}, which are not scalar labels ({scalars})")
        if target in row:
            raise ValueError(f"label_leaks: {target!r} cannot leak into itself")
        slopes = {str(k): float(v) for k, v in row.items()}
        if not all(np.isfinite(v) for v in slopes.values()):
            raise ValueError(f"label_leaks[{target!r}] holds a slope that is not finite: {slopes}")
        applied[str(target)] = slopes
    corrections = {}
    for target, slopes in applied.items():  # all from the labels as given: leaks do not chain
        fix = np.zeros(arrays[target].shape[0])
        for source, slope in slopes.items():
            x = np.asarray(arrays[source], dtype=np.float64)
            if not np.isfinite(x).all():
                raise LatentError(f"label {source!r} (a label_leaks source) contains NaN or inf")
            fix += slope * (x - x.mean())
        corrections[target] = fix
    for target, fix in corrections.items():
        arrays[target] = np.asarray(arrays[target], dtype=np.float64) - fix
    return applied


def _check_labels(labels: Any, n: int, global_labels: Sequence[str] | None,
                  map_labels: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str], list[str], list[str]]:
    """The labels as numpy arrays, the scalar labels to regress (`wanted`), the map labels present (`maps`) and
    the scalar labels dropped because they do not vary; a clear `LatentError` for labels that cannot be fitted."""
    if not isinstance(labels, Mapping):
        raise LatentError(f"labels must be a dict name -> [N] or [N, ...] array (decomposer labels), got "
                          f"{type(labels).__name__}")
    arrays = {}
    for key, value in labels.items():
        arr = _to_numpy(value)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise LatentError(f"label {key!r} has shape {arr.shape}; expected {n} rows like w")
        if arr.dtype.kind == "b":  # a yes/no label: regressed as 0 / 1
            arr = arr.astype(np.float64)
        elif arr.dtype.kind not in "iuf":
            raise LatentError(f"label {key!r} holds {arr.dtype} values; labels must be numbers (or booleans)")
        arrays[str(key)] = arr
    scalars = [k for k, v in arrays.items() if v.ndim == 1]
    wanted = scalars if global_labels is None else [str(k) for k in global_labels]
    missing = [k for k in wanted if k not in arrays or arrays[k].ndim != 1]
    if missing:
        raise LatentError(f"global_labels {missing} are not scalar labels; scalar labels: {scalars}")
    maps = [k for k in map_labels if k in arrays]
    bad = [k for k in maps if arrays[k].ndim not in (3, 4) or arrays[k].shape[-1] != arrays[k].shape[-2]]
    if bad:
        raise LatentError(f"map labels {bad} must be [N, R, R] or [N, C, R, R]; got "
                          f"{[arrays[k].shape for k in bad]}")
    for key in wanted:
        bad_rows = int(np.count_nonzero(~np.isfinite(arrays[key])))
        if bad_rows:
            raise LatentError(f"scalar label {key!r} contains NaN or inf in {bad_rows} of {n} rows; drop those "
                              "rows (with their w) or pass global_labels without it")
    dropped = [k for k in wanted if not np.ptp(arrays[k]) > 0]
    wanted = [k for k in wanted if k not in dropped]
    if not wanted and not maps:
        raise LatentError(f"nothing to fit: no varying scalar labels and none of the map labels "
                          f"{list(map_labels)} among {list(arrays)}")
    return arrays, wanted, maps, dropped


def _parse_part_masks(part_masks: Any, part_names: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    if isinstance(part_masks, Mapping):
        names = [str(k) for k in part_masks]
        arrays = [np.asarray(_to_numpy(v), dtype=np.float32) for v in part_masks.values()]
        shapes = {nm: a.shape for nm, a in zip(names, arrays)}
        if len(set(shapes.values())) > 1:
            raise LatentError(f"part masks must all have one shape [R, R]; got {shapes}")
        masks = np.stack(arrays)
    else:
        masks = np.asarray(_to_numpy(part_masks), dtype=np.float32)
        if part_names is None:
            raise LatentError("part_masks given as an array need part_names (one per mask)")
        names = [str(n) for n in part_names]
    if masks.ndim != 3 or masks.shape[0] != len(names) or masks.shape[1] != masks.shape[2]:
        raise LatentError(f"part masks must be [P, R, R] with P names; got shape {masks.shape} for {len(names)} "
                          "names")
    return names, masks


def _mode_share(values: np.ndarray) -> float:
    """The share of rows holding the label's most frequent value (1 / N for a continuous label)."""
    _, counts = np.unique(values, return_counts=True)
    return float(counts.max()) / len(values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_int(name: str, value: Any, low: int, expected: str | None = None) -> None:
    """ValueError unless `value` is an integer >= `low` (`expected` words the constraint in the message)."""
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value >= low):
        raise ValueError(f"{name} must be {expected or f'an integer >= {low}'}, got {value!r}")


def _check_number(name: str, value: Any, low: float, expected: str, open_low: bool = False,
                  high: float | None = None, open_high: bool = True) -> None:
    """ValueError unless `value` is a finite number within the bounds (`expected` words them in the message)."""
    ok = _is_number(value) and np.isfinite(value) and (value > low if open_low else value >= low)
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _unique(names: list[str]) -> list[str]:
    """Append _2, _3, ... to repeated names (first occurrence unchanged)."""
    seen: dict[str, int] = {}
    out = []
    for nm in names:
        seen[nm] = seen.get(nm, 0) + 1
        out.append(nm if seen[nm] == 1 else f"{nm}_{seen[nm]}")
    while len(set(out)) != len(out):  # a suffixed name collided with a real one
        out = _unique(out)
    return out


def _mean_cov(w: np.ndarray, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    from ._moments import compute_moments

    (m,) = compute_moments(w, None, chunk_size=chunk_size, desc="w moments")
    return m.mean, m.cov
