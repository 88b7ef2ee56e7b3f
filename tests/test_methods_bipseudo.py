"""bipseudo: the loss against a plain loop from the paper's Section 3 (as reconstructed in the
module's docstring), the shared residual head, pseudo-labels, closed forms and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.params import BipseudoSection
from pipeline.train.encoders import SharedResidual
from pipeline.train.loop import Encoders, TrainConfig
from pipeline.train.methods.bipseudo import BiPseudo


def params(**kw: object) -> BipseudoSection:
    base: dict[str, object] = dict(
        tau=0.3, proto_tau=0.2, clusters=(2, 3), start_epoch=1, every_epochs=1,
        memory_momentum=0.5, kmeans_iters=10, weight_pseudo=1.0, weight_pull=0.5, weight_push=0.7,
    )  # fmt: skip
    base.update(kw)
    return BipseudoSection(**base)  # type: ignore[arg-type]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def unit(a: list[float]) -> list[float]:
    n = math.sqrt(dot(a, a))
    return [x / n for x in a]


def ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(z) for z in logits))


def plain_loop_bipseudo(
    model: BiPseudo, face: list[list[float]], voice: list[list[float]], clips: list[int]
) -> float:
    p = model.params
    b = len(face)
    f = [unit(x) for x in face]
    v = [unit(x) for x in voice]
    pull = sum(1 - dot(f[i], v[i]) for i in range(b)) / b
    push = 0.0
    for a, o in ((v, f), (f, v)):
        for i in range(b):
            push += ce([dot(a[i], o[j]) / p.tau for j in range(b)], i)
    push /= 2 * b
    pseudo = 0.0
    for i in range(b):
        per_r = 0.0
        for r in range(len(p.clusters)):
            cv, yv = model.pseudo("voice", r)
            cf, yf = model.pseudo("face", r)
            ce_f = ce([dot(f[i], c) / p.proto_tau for c in cv.tolist()], int(yv[clips[i]]))
            ce_v = ce([dot(v[i], c) / p.proto_tau for c in cf.tolist()], int(yf[clips[i]]))
            per_r += 0.5 * (ce_f + ce_v)
        pseudo += per_r / len(p.clusters)
    pseudo /= b
    return p.weight_pseudo * pseudo + p.weight_pull * pull + p.weight_push * push


def clustered(**kw: object) -> BiPseudo:
    model = BiPseudo(params(**kw), num_clips=10, dim=4, seed=0).double()
    g = torch.Generator().manual_seed(3)
    for bank in (model.memory_face, model.memory_voice):
        bank.memory.copy_(torch.nn.functional.normalize(torch.randn(10, 4, generator=g), dim=1))
    model.refresh()
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    face = torch.randn(5, 4, generator=g, dtype=torch.float64)
    voice = torch.randn(5, 4, generator=g, dtype=torch.float64)
    return face, voice, torch.tensor([0, 2, 4, 7, 9])


def test_loss_matches_the_plain_loop() -> None:
    model = clustered()
    model.eval()
    face, voice, clips = batch()
    got = model.loss_terms(face, voice, clips)["loss"].item()
    want = plain_loop_bipseudo(model, face.tolist(), voice.tolist(), clips.tolist())
    assert got == pytest.approx(want, rel=1e-9)


def test_voice_clusters_supervise_faces_and_vice_versa() -> None:
    model = clustered()
    _, yv = model.pseudo("voice", 0)
    _, yf = model.pseudo("face", 0)
    assert not torch.equal(yv, yf)  # the two modalities' memories cluster differently here
    _, voice, clips = batch()
    # Put each face exactly on its voice-cluster centroid: the face half of L_pseudo is then at
    # its minimum for that geometry; swapping the roles makes it worse.
    cv, _ = model.pseudo("voice", 0)
    on_voice = model.pseudo_label_loss(cv[yv[clips]], voice, clips)
    cf, _ = model.pseudo("face", 0)
    on_face = model.pseudo_label_loss(cf[yf[clips]], voice, clips)
    assert on_voice.mean() < on_face.mean()


def test_closed_form_before_clustering() -> None:
    # No clusters yet: loss = w_pull·L_pull + w_push·L_push. Identical orthogonal pairs give
    # L_pull = 0 and L_push = −log(e^{1/τ} / (e^{1/τ} + B − 1)).
    model = BiPseudo(params(), num_clips=10, dim=4, seed=0).double()
    eye = torch.eye(4, dtype=torch.float64)
    terms = model.loss_terms(eye, eye, torch.arange(4))
    push = -math.log(math.exp(1 / 0.3) / (math.exp(1 / 0.3) + 3))
    assert terms["pseudo"].item() == 0.0 and terms["pull"].item() == pytest.approx(0.0, abs=1e-12)
    assert terms["loss"].item() == pytest.approx(0.7 * push)


def test_gradient_check() -> None:
    model = clustered()
    model.eval()
    face, voice, clips = batch()
    face.requires_grad_(True)
    voice.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda f, v: model.loss_terms(f, v, clips)["loss"], (face, voice)
    )


def test_shared_residual_head_is_one_module_for_both_modalities() -> None:
    cfg = TrainConfig(1, 4, 1e-3, 0.0, 8, "face_cnn", "voice_cnn", 20, 0, head="shared_residual")
    enc = Encoders(cfg).eval()
    assert isinstance(enc.head, SharedResidual)
    z = torch.randn(3, 8)
    with torch.no_grad():
        enc.head.alpha.fill_(0.0)  # α = 0: the block is the identity before normalisation
    assert torch.allclose(enc.head(z, "voice"), torch.nn.functional.normalize(z, dim=1))
    f = enc.embed_face(torch.rand(2, 3, 32, 32))
    v = enc.embed_voice(torch.randn(2, 16, 40))
    assert torch.allclose(f.norm(dim=1), torch.ones(2)) and torch.allclose(
        v.norm(dim=1), torch.ones(2)
    )
    # One parameter set: a gradient through the voice branch reaches the same α the face uses.
    enc.train()
    face_stats = enc.head.bn["face"].running_mean.clone()
    enc.embed_voice(torch.randn(4, 16, 40)).sum().backward()
    assert enc.head.alpha.grad is not None and enc.head.alpha.grad.abs().sum() > 0
    # ... but each modality keeps its own BatchNorm statistics.
    assert torch.equal(enc.head.bn["face"].running_mean, face_stats)
    assert not torch.equal(enc.head.bn["voice"].running_mean, face_stats)


def test_schedule_and_validation() -> None:
    model = BiPseudo(params(start_epoch=2, every_epochs=3), num_clips=10, dim=4, seed=0)
    for epoch in range(9):
        model.on_epoch_start(epoch=epoch)
    assert int(model.refreshes) == 3  # epochs 2, 5, 8
    with pytest.raises(ValueError, match="cannot exceed"):
        BiPseudo(params(clusters=(11,)), num_clips=10, dim=4, seed=0)
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        params(weight_pull=-1.0)
    with pytest.raises(ValueError, match="greater than 0"):
        params(proto_tau=0.0)
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        params(clusters=(1,))
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        params(start_epoch=0)


# The ablation switches (bipseudo.shared_residual / pseudo_labels / pull / push).


@pytest.mark.parametrize("off", ["pseudo_labels", "pull", "push"])
def test_a_term_switched_off_leaves_the_loss_whatever_its_weight(off: str) -> None:
    full = clustered().eval()
    model = clustered(**{off: False}).eval()
    face, voice, clips = batch()
    weight = {"pseudo_labels": "weight_pseudo", "pull": "weight_pull", "push": "weight_push"}[off]
    # the plain loop of the full loss with that term's weight at 0
    zeroed = clustered(**{weight: 0.0}).eval()
    want = plain_loop_bipseudo(zeroed, face.tolist(), voice.tolist(), clips.tolist())
    got = model.loss_terms(face, voice, clips)["loss"].item()
    assert got == pytest.approx(want, rel=1e-9)
    assert got != pytest.approx(full.loss_terms(face, voice, clips)["loss"].item(), rel=1e-6)


def test_pseudo_labels_off_runs_no_kmeans() -> None:
    model = BiPseudo(params(pseudo_labels=False), num_clips=10, dim=4, seed=0)
    for epoch in range(4):
        model.on_epoch_start(epoch=epoch)
    assert int(model.refreshes) == 0


def test_only_push_without_the_shared_head_is_in_batch_contrast() -> None:
    from pipeline.params import CidSection
    from pipeline.train.methods import bipseudo
    from pipeline.train.methods.cid import CID

    p = params(shared_residual=False, pseudo_labels=False, pull=False)
    assert bipseudo.head(p) == "none" and bipseudo.head(params()) == "shared_residual"
    model = BiPseudo(p, num_clips=10, dim=4, seed=0).double()
    face, voice, clips = batch()
    cid = CID(CidSection(tau=p.tau))(face, voice)["loss"].item()
    assert model.loss_terms(face, voice, clips)["loss"].item() == pytest.approx(
        0.7 * cid, rel=1e-12
    )  # weight_push 0.7 times cid's loss


def test_every_term_off_is_refused() -> None:
    with pytest.raises(ValueError, match="no loss"):
        params(pseudo_labels=False, pull=False, push=False)
    with pytest.raises(ValueError, match="no loss"):
        params(push=False, pull=False, weight_pseudo=0.0)
