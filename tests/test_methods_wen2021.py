"""wen2021: the loss against a plain loop of the paper's formulas, the published-code flag against
a plain loop of the released code's formulas, closed forms, gradients, and the re-weighting
schedule on hand-made hardness values."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.params import Wen2021Section
from pipeline.train.methods.wen2021 import IdentityReweighting, Wen2021, local_alignment


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * z for x, z in zip(a, b, strict=True))


def _unit(a: list[float]) -> list[float]:
    n = math.sqrt(_dot(a, a))
    return [x / n for x in a]


def _ce(w_cls: list[list[float]], x: list[float], label: int) -> float:
    logits = [_dot(row, x) for row in w_cls]
    return -logits[label] + math.log(sum(math.exp(z) for z in logits))


def _local(anchor: list[list[float]], other: list[list[float]], i: int) -> float:
    s = [_dot(anchor[i], _unit(o)) for o in other]
    return math.log(
        1 + sum(math.exp((0 if j == i else 1) * (s[j] - s[i])) for j in range(len(s))) + 3.4
    )


def plain_loop_wen(
    face: list[list[float]],
    voice: list[list[float]],
    w_cls: list[list[float]],
    y: list[int],
    weights: list[float],
) -> float:
    """The paper: mean_i w_{y_i} (CE_f,i + CE_v,i + ½ (l_i(v→f) + l_i(f→v)))."""
    b = len(face)
    total = 0.0
    for i in range(b):
        term = (
            _ce(w_cls, face[i], y[i])
            + _ce(w_cls, voice[i], y[i])
            + 0.5 * (_local(voice, face, i) + _local(face, voice, i))
        )
        total += weights[y[i]] * term
    return total / b


def plain_loop_wen_released(
    face: list[list[float]],
    voice: list[list[float]],
    w_cls: list[list[float]],
    y: list[int],
    weights: list[float],
) -> float:
    """The released code, term by term: each identity classifier's cross-entropy is averaged over
    the batch and then multiplied by the batch's weights and averaged again (a scalar times a
    vector, then the mean); the local term is multiplied sample by sample by the weights and
    averaged; a batch whose weights sum below 1e-3 gets weights + 1."""
    b = len(face)
    w = [weights[c] for c in y]
    if sum(w) < 1e-3:
        w = [x + 1 for x in w]
    loss = 0.0
    for x in (face, voice):
        ce_mean = sum(_ce(w_cls, x[i], y[i]) for i in range(b)) / b
        loss += sum(ce_mean * w[i] for i in range(b)) / b
    local = [0.5 * _local(voice, face, i) + 0.5 * _local(face, voice, i) for i in range(b)]
    loss += sum(local[i] * w[i] for i in range(b)) / b
    return loss


PARAMS = Wen2021Section(
    published_code=False,
    reweight_epochs=1,
    warmup_steps=500,
    every_steps=100,
    initial_hardness=100.0,
)


def _setup(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Wen2021]:
    g = torch.Generator().manual_seed(seed)
    face = torch.randn(6, 4, generator=g, dtype=torch.float64)
    voice = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 3])
    model = Wen2021(PARAMS, num_identities=4, dim=4).double()
    model.freeze(torch.tensor([1.5, 0.5, 2.0, 0.0]))
    return face, voice, y, model


def test_loss_matches_the_plain_loop() -> None:
    face, voice, y, model = _setup()
    got = model.loss_terms(face, voice, y)["loss"].item()
    want = plain_loop_wen(
        face.tolist(),
        voice.tolist(),
        model.classifier.weight.tolist(),
        y.tolist(),
        model.weights.tolist(),
    )
    assert got == pytest.approx(want, rel=1e-10)


PUBLISHED = Wen2021Section(
    published_code=True,
    reweight_epochs=1,
    warmup_steps=500,
    every_steps=100,
    initial_hardness=100.0,
)


def _loops(model: Wen2021, face: torch.Tensor, voice: torch.Tensor, y: torch.Tensor) -> float:
    loop = plain_loop_wen_released if model.params.published_code else plain_loop_wen
    return loop(
        face.tolist(),
        voice.tolist(),
        model.classifier.weight.tolist(),
        y.tolist(),
        model.weights.tolist(),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_published_code_matches_the_released_formulas(seed: int) -> None:
    face, voice, y, model = _setup(seed)
    model.params = PUBLISHED
    got = model.loss_terms(face, voice, y)["loss"]
    want = torch.tensor(_loops(model, face, voice, y), dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0.0)


def test_published_code_batch_of_switched_off_identities_gets_weights_plus_one() -> None:
    face, voice, _, model = _setup()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    model.freeze(torch.tensor([0.0, 0.0, 0.0, 4.0]))  # every identity of the batch off
    assert model.loss_terms(face, voice, y)["loss"].item() == 0.0  # paper: no signal
    model.params = PUBLISHED
    got = model.loss_terms(face, voice, y)["loss"]
    torch.testing.assert_close(
        got, torch.tensor(_loops(model, face, voice, y), dtype=torch.float64), rtol=1e-10, atol=0.0
    )
    t = model.per_sample(face, voice, y)  # weights 0 + 1: the unweighted batch means
    unweighted = t["ce_face"].mean() + t["ce_voice"].mean() + t["local"].mean()
    torch.testing.assert_close(got, unweighted)


def test_published_code_flag_changes_the_loss_only_with_uneven_weights() -> None:
    face, voice, y, model = _setup()
    paper = model.loss_terms(face, voice, y)["loss"].item()
    assert paper == pytest.approx(_loops(model, face, voice, y), rel=1e-10)  # flag off: the paper
    model.params = PUBLISHED
    released = model.loss_terms(face, voice, y)["loss"].item()
    assert released != pytest.approx(paper, rel=1e-3)
    # The released local term is weighted per sample: not the old batch-mean quirk either.
    t = model.per_sample(face, voice, y)
    batch_mean = (
        (t["ce_face"] + t["ce_voice"] + t["local"]).mean() * model.weights[y].mean()
    ).item()
    assert released != pytest.approx(batch_mean, rel=1e-3)
    model.freeze(torch.ones(4))  # equal weights: both modes are the plain mean
    model.params = PARAMS
    even = model.loss_terms(face, voice, y)["loss"]
    model.params = PUBLISHED
    torch.testing.assert_close(model.loss_terms(face, voice, y)["loss"], even)


def test_published_code_gradient_check() -> None:
    face, voice, y, model = _setup(1)
    model.params = PUBLISHED
    f = face.clone().requires_grad_(True)
    v = voice.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: model.loss_terms(a, b, y)["loss"], (f, v))


def test_local_alignment_closed_form() -> None:
    # Identical rows: every S_ij − S_ii = 0, so l = log(5.4 + (B − 1)).
    x = torch.ones(3, 2, dtype=torch.float64)
    assert local_alignment(x, x).tolist() == pytest.approx([math.log(5.4 + 2)] * 3)
    # Far apart orthogonal pairs: off-diagonal terms vanish, l -> log 5.4.
    e = 50 * torch.eye(3, dtype=torch.float64)
    assert local_alignment(e, e).tolist() == pytest.approx([math.log(5.4)] * 3, abs=1e-12)


def test_gradient_check() -> None:
    face, voice, y, model = _setup(1)
    f = face.clone().requires_grad_(True)
    v = voice.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: model.loss_terms(a, b, y)["loss"], (f, v))


def test_reweighting_schedule_on_hand_made_hardness() -> None:
    rw = IdentityReweighting(num_identities=100, warmup=500, every=100)
    assert torch.equal(rw.weights(), torch.ones(100))  # before the warm-up ends
    # Hardness increasing with identity index: identity 0 is the easiest.
    rw.hardness = torch.arange(100, dtype=torch.float32)
    assert not rw.step(499) and not rw.step(550)
    assert rw.step(500)
    on = rw.raw > 0
    assert on.sum() == 50 and on[:50].all()
    assert rw.weights().mean().item() == pytest.approx(1.0)
    assert rw.step(600)  # × 0.99 and the next 2.4 % (2 identities: 50, 51) switched on
    assert (
        (rw.raw > 0).sum() == 52 and rw.raw[0].item() == pytest.approx(0.99) and rw.raw[51] == 1.0
    )
    for s in range(700, 5000, 100):
        rw.step(s)
    assert (rw.raw > 0).sum() == 90  # stops at 90 %: the 10 hardest stay at 0
    assert (rw.raw[90:] == 0).all()


def test_hardness_is_an_ema_of_the_summed_ce() -> None:
    rw = IdentityReweighting(num_identities=3, warmup=0, every=1, initial_hardness=10.0)
    rw.observe(torch.tensor([1, 1]), torch.tensor([2.0, 4.0]))
    assert rw.hardness[1].item() == pytest.approx(0.9 * (0.9 * 10 + 0.2) + 0.4)
    assert rw.hardness[0].item() == 10.0


def test_training_mode_runs_the_schedule_and_main_phase_freezes_it() -> None:
    model = Wen2021(
        Wen2021Section(
            published_code=False,
            reweight_epochs=1,
            warmup_steps=2,
            every_steps=1,
            initial_hardness=100.0,
        ),
        4,
        3,
    )
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1, 2, 3])
    model.train()
    out = {}
    for _ in range(3):
        out = model.loss_terms(torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), y)
    assert out["identities_on"].item() == pytest.approx(0.5)  # first re-weighting at step 2
    assert model.weights.mean().item() == pytest.approx(1.0)
    state = model.state_dict()
    assert int(state["schedule.state"][0]) == 3  # checkpointed with the model
    frozen = model.weights.clone()
    model.freeze(frozen)
    model.loss_terms(torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), y)
    assert torch.equal(model.weights, frozen) and int(model.schedule.state[0]) == 3


# The ablation switches (wen2021.global_alignment / local_alignment / reweighting).


def _switched(**kw: object) -> Wen2021Section:
    return PARAMS.model_copy(update=kw)


def _plain_parts(
    face: torch.Tensor, voice: torch.Tensor, y: torch.Tensor, model: Wen2021, ce: bool, local: bool
) -> float:
    """The paper's loss with only the switched-on parts, written as a plain loop."""
    f, v, w_cls = face.tolist(), voice.tolist(), model.classifier.weight.tolist()
    total = 0.0
    for i in range(len(f)):
        term = 0.0
        if ce:
            term += _ce(w_cls, f[i], int(y[i])) + _ce(w_cls, v[i], int(y[i]))
        if local:
            term += 0.5 * (_local(v, f, i) + _local(f, v, i))
        total += model.weights.tolist()[int(y[i])] * term
    return total / len(f)


@pytest.mark.parametrize(("glob", "loc"), [(True, False), (False, True)])
def test_each_part_switched_off_leaves_the_others(glob: bool, loc: bool) -> None:
    face, voice, y, model = _setup()
    model.params = _switched(global_alignment=glob, local_alignment=loc)
    got = model.loss_terms(face, voice, y)["loss"].item()
    assert got == pytest.approx(_plain_parts(face, voice, y, model, glob, loc), rel=1e-10)
    assert got != pytest.approx(_plain_parts(face, voice, y, model, True, True), rel=1e-3)


def test_global_and_reweighting_off_is_the_local_only_n_pair_method() -> None:
    g = torch.Generator().manual_seed(4)
    face = torch.randn(6, 4, generator=g, dtype=torch.float64)
    voice = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 3])
    model = Wen2021(_switched(global_alignment=False, reweighting=False), 4, 4).double().train()
    for _ in range(3):  # training steps: with re-weighting off the weights never move
        got = model.loss_terms(face, voice, y)["loss"].item()
    assert torch.equal(model.weights, torch.ones(4, dtype=torch.float64))
    f, v = face.tolist(), voice.tolist()
    n_pair = sum(0.5 * (_local(v, f, i) + _local(f, v, i)) for i in range(6)) / 6
    assert got == pytest.approx(n_pair, rel=1e-10)


def test_global_off_keeps_a_detached_hardness_probe_while_reweighting() -> None:
    """The identity classifier still measures hardness, but no gradient of it reaches the
    embeddings: their gradient is the (weighted) local term's alone."""
    face, voice, y, model = _setup()
    model.params = _switched(global_alignment=False)
    model.reweighting = True
    model.train()
    f = face.clone().requires_grad_(True)
    v = voice.clone().requires_grad_(True)
    out = model.loss_terms(f, v, y)
    out["loss"].backward()
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0
    f2 = face.clone().requires_grad_(True)
    v2 = voice.clone().requires_grad_(True)
    w = model.weights[y]
    (w * 0.5 * (local_alignment(v2, f2) + local_alignment(f2, v2))).mean().backward()
    assert torch.allclose(f.grad, f2.grad) and torch.allclose(v.grad, v2.grad)
    assert out["identity_ce"].item() > 0  # the probe's cross-entropy is still measured


def test_published_code_respects_the_switches() -> None:
    face, voice, y, model = _setup()
    model.params = PUBLISHED.model_copy(update={"local_alignment": False})
    w = model.weights[y]
    t = model.per_sample(face, voice, y)
    want = (t["ce_face"].mean() * w.mean() + t["ce_voice"].mean() * w.mean()).item()
    assert model.loss_terms(face, voice, y)["loss"].item() == pytest.approx(want, rel=1e-12)


def test_no_alignment_at_all_is_refused() -> None:
    with pytest.raises(ValueError, match="both off"):
        Wen2021Section.model_validate(
            {**PARAMS.model_dump(), "global_alignment": False, "local_alignment": False}
        )
