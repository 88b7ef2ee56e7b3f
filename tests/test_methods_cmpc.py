"""cmpc: the loss against a plain loop of the paper's equations, the published-code flag against a
plain loop of the released code's formulas, the cid special case, recalibration weights and
concentrations on hand-made inputs, the memory bank, gradients and the flag's cluster reset."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pipeline.params import CidSection, CmpcSection
from pipeline.train.methods.cid import CID
from pipeline.train.methods.clusters import Clustering, MemoryBank, concentration, kmeans
from pipeline.train.methods.cmpc import CMPC, recalibration_weights
from pipeline.train.methods.registry import train_method

CPU = torch.device("cpu")


def params(**kw: object) -> CmpcSection:
    base: dict[str, object] = dict(
        tau=0.3, clusters=(2, 3), start_epoch=1, every_epochs=1, memory_momentum=0.5,
        delta=-1.0, kappa=0.1, phi_mean=0.2, kmeans_iters=10, prototypes=True,
        recalibration=True, published_code=False,
    )  # fmt: skip
    base.update(kw)
    return CmpcSection(**base)  # type: ignore[arg-type]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def unit(a: list[float]) -> list[float]:
    n = math.sqrt(dot(a, a))
    return [x / n for x in a]


def plain_weights(rho: list[float], delta: float, kappa: float) -> list[float]:
    """Straight from the formula: sort ρ, Gaussian density at each sorted value, running sum,
    divided by the total."""
    b = len(rho)
    mean = sum(rho) / b
    std = math.sqrt(sum((r - mean) ** 2 for r in rho) / b)
    mu, sigma = mean + delta * std, std * math.sqrt(kappa)
    order = sorted(range(b), key=lambda i: rho[i])
    dens = [
        math.exp(-0.5 * ((rho[i] - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        for i in order
    ]
    total = sum(dens)
    w = [0.0] * b
    run = 0.0
    for i, d in zip(order, dens, strict=True):
        run += d
        w[i] = run / total
    return w


def plain_loop_cmpc(
    model: CMPC, face: list[list[float]], voice: list[list[float]], video: list[int]
) -> float:
    p = model.params
    b, r_count = len(face), len(p.granularities)
    f = [unit(x) for x in face]
    v = [unit(x) for x in voice]

    def proto(m: str, r: int, j: int) -> tuple[list[float], float]:
        cent, phi, assign = model.clusters(m, r)
        k = int(assign[video[j]])
        return cent[k].tolist(), float(phi[k])

    def inst(a: list[list[float]], o: list[list[float]], i: int) -> float:
        logits = [dot(a[i], o[j]) / p.tau for j in range(b)]
        return -logits[i] + math.log(sum(math.exp(z) for z in logits))

    def proto_term(a: list[list[float]], other: str, i: int) -> float:
        total = 0.0
        for r in range(r_count):
            logits = []
            for j in range(b):
                c, phi = proto(other, r, j)
                logits.append(dot(a[i], c) / phi)
            total += -logits[i] + math.log(sum(math.exp(z) for z in logits))
        return total / r_count

    rho = []
    for i in range(b):
        s = dot(v[i], f[i])
        for r in range(r_count):
            s -= dot(proto("voice", r, i)[0], proto("face", r, i)[0])
        rho.append(s)
    w = plain_weights(rho, p.delta, p.kappa)
    loss_vf = sum(w[i] * (inst(v, f, i) + proto_term(v, "face", i)) for i in range(b)) / sum(w)
    loss_fv = sum(w[i] * (inst(f, v, i) + proto_term(f, "voice", i)) for i in range(b)) / sum(w)
    return 0.5 * (loss_vf + loss_fv)


def plain_loop_cmpc_released(
    model: CMPC, face: list[list[float]], voice: list[list[float]], video: list[int]
) -> float:
    """The released code's loss, step by step: logits rearranged as [positive, negatives j ≠ i
    in order]; in the prototype term column c divided by the φ of batch item c's prototype and
    the running sum over granularities divided by 4 (the entries of its clustering-result dict)
    after each one; ρ from un-normalised centroids (the means of each cluster's memory rows);
    both directions summed."""
    p = model.params
    b, r_count = len(face), len(p.clusters)
    f = [unit(x) for x in face]
    v = [unit(x) for x in voice]
    memory = {
        "face": model.memory_face.memory.tolist(),
        "voice": model.memory_voice.memory.tolist(),
    }

    def rearranged(row: list[float], i: int) -> list[float]:
        return [row[i]] + [row[j] for j in range(b) if j != i]

    def ce_first(logits: list[float]) -> float:
        return -logits[0] + math.log(sum(math.exp(z) for z in logits))

    def inst(a: list[list[float]], o: list[list[float]], i: int) -> float:
        row = rearranged([dot(a[i], o[j]) for j in range(b)], i)
        return ce_first([z / p.tau for z in row])

    def proto_term(a: list[list[float]], other: str, i: int) -> float:
        total = 0.0
        for r in range(r_count):
            cent, phi, assign = model.clusters(other, r)
            ks = [int(assign[video[j]]) for j in range(b)]
            row = rearranged([dot(a[i], unit(cent[ks[j]].tolist())) for j in range(b)], i)
            logits = [row[c] / float(phi[ks[c]]) for c in range(b)]
            total += ce_first(logits)
            total /= 4
        return total

    def member_mean(m: str, r: int, item: int) -> list[float]:
        assign = model.clusters(m, r)[2].tolist()
        rows = [memory[m][n] for n in range(len(assign)) if assign[n] == assign[item]]
        return [sum(col) / len(rows) for col in zip(*rows, strict=True)]

    rho = []
    for i in range(b):
        s = dot(v[i], f[i])
        for r in range(r_count):
            s -= dot(member_mean("voice", r, video[i]), member_mean("face", r, video[i]))
        rho.append(s)
    w = plain_weights(rho, p.delta, p.kappa)
    loss_vf = sum(w[i] * (inst(v, f, i) + proto_term(v, "face", i)) for i in range(b)) / sum(w)
    loss_fv = sum(w[i] * (inst(f, v, i) + proto_term(f, "voice", i)) for i in range(b)) / sum(w)
    return loss_vf + loss_fv


def clustered_model(seed: int = 0, **kw: object) -> CMPC:
    """A model over 8 videos whose memories were filled at random and clustered."""
    model = CMPC(params(**kw), num_videos=8, dim=4, seed=seed).double()
    g = torch.Generator().manual_seed(seed + 7)
    model.memory_face.memory.copy_(
        torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=1)
    )
    model.memory_voice.memory.copy_(
        torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=1)
    )
    model.refresh()
    return model


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    face = torch.randn(6, 4, generator=g, dtype=torch.float64)
    voice = torch.randn(6, 4, generator=g, dtype=torch.float64)
    return face, voice, torch.tensor([0, 3, 5, 5, 7, 1])


def test_loss_matches_the_plain_loop() -> None:
    model = clustered_model()
    model.eval()  # no memory update, so the loop sees the same clusters
    face, voice, video = batch()
    got = model.loss_terms(face, voice, video)["loss"].item()
    assert got == pytest.approx(
        plain_loop_cmpc(model, face.tolist(), voice.tolist(), video.tolist()), rel=1e-9
    )


def test_parts_switched_off_is_cid() -> None:
    face, voice, video = batch()
    cid = CID(CidSection(tau=0.3))(face, voice)["loss"]
    off = clustered_model(prototypes=False, recalibration=False)
    assert off.loss_terms(face, voice, video)["loss"].item() == cid.item()  # one code path
    # Before the first clustering too, with every part on.
    fresh = CMPC(params(), num_videos=8, dim=4, seed=0).double()
    assert fresh.loss_terms(face, voice, video)["loss"].item() == pytest.approx(
        cid.item(), rel=1e-12
    )


def test_recalibration_weights_on_hand_made_rho() -> None:
    rho = torch.tensor([0.9, -0.5, 0.1, 0.8, 0.85, 0.7], dtype=torch.float64)
    w = recalibration_weights(rho, -1.0, 0.1)
    assert w.tolist() == pytest.approx(plain_weights(rho.tolist(), -1.0, 0.1), rel=1e-12)
    order = torch.argsort(rho)
    assert torch.all(torch.diff(w[order]) >= 0)  # monotone in ρ
    assert w.max().item() == pytest.approx(1.0)  # the largest ρ takes all the mass
    assert w[1].item() < 0.05 < 0.5 < w[3].item()  # the outlier far below the mean: ~ 0
    # Closed form: two values, μ = mean − std lands exactly on the lower one; the lower gets
    # e^0 / (e^0 + e^{−½ (2 std / (std √κ))²}) = 1 / (1 + e^{−2/κ}).
    w2 = recalibration_weights(torch.tensor([0.0, 2.0], dtype=torch.float64), -1.0, 0.1)
    assert w2.tolist() == pytest.approx([1 / (1 + math.exp(-2 / 0.1)), 1.0])
    assert recalibration_weights(torch.full((4,), 0.3), -1.0, 0.1).tolist() == [1.0] * 4


def test_concentration_on_hand_made_clusters() -> None:
    # Clusters: 0 has 3 members at distances 1, 2, 3; 1 has 2 at 0.5, 0.5; 2 is a singleton;
    # 3 has 4 members at distance 2.
    assign = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    dist = torch.tensor([1.0, 2.0, 3.0, 0.5, 0.5, 9.0, 2.0, 2.0, 2.0, 2.0])
    c = Clustering(torch.zeros(4, 2), assign, dist**2)
    raw = [2.0 / math.log(13), 0.5 / math.log(12), 0.0, 2.0 / math.log(14)]
    raw[2] = max(raw)  # the singleton takes the largest
    lo, hi = (
        torch.tensor(raw, dtype=torch.float64)
        .quantile(torch.tensor([0.1, 0.9], dtype=torch.float64))
        .tolist()
    )
    clipped = [min(max(x, lo), hi) for x in raw]
    want = [0.2 * x / (sum(clipped) / 4) for x in clipped]
    got = concentration(c, 4, 0.2)
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    assert got.mean().item() == pytest.approx(0.2)


def test_memory_bank_update_averages_duplicates() -> None:
    bank = MemoryBank(3, 2, momentum=0.5, seed=0)
    bank.memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    z = torch.tensor([[0.0, 2.0], [0.0, 1.0], [2.0, 0.0]])  # rows 0, 0, 1
    bank.update(torch.tensor([0, 0, 1]), z)
    s = 1 / math.sqrt(2)
    assert bank.memory.tolist() == [pytest.approx([s, s]), pytest.approx([s, s]), [1.0, 0.0]]


def test_kmeans_is_deterministic_and_finds_separated_blobs() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4)[:3] * 5
    x = torch.cat([c + 0.1 * torch.randn(20, 4, generator=g) for c in centres])
    a, b = kmeans(x, 3, seed=1, iters=20), kmeans(x, 3, seed=1, iters=20)
    assert torch.equal(a.assign, b.assign) and torch.equal(a.centroids, b.centroids)
    groups = {tuple(sorted(set(a.assign[i * 20 : (i + 1) * 20].tolist()))) for i in range(3)}
    assert len(groups) == 3 and all(len(gr) == 1 for gr in groups)
    assert torch.allclose(a.centroids.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="clusters"):
        kmeans(x, 61, seed=1, iters=5)


def test_gradient_check() -> None:
    # The recalibration weights are constants to the gradient (computed on detached embeddings,
    # as in the paper's code), so the numerical check runs with them off.
    model = clustered_model(recalibration=False)
    model.eval()
    face, voice, video = batch()
    face.requires_grad_(True)
    voice.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda f, v: model.loss_terms(f, v, video)["loss"], (face, voice)
    )


def test_published_code_flag_drops_clusters_after_one_batch() -> None:
    face, voice, video = batch()
    for flag, second_batch_uses_clusters in ((False, True), (True, False)):
        model = clustered_model(published_code=flag)
        model.train()
        first = model.loss_terms(face, voice, video)
        second = model.loss_terms(face, voice, video)
        assert first["prototype"].item() > 0
        assert (second["prototype"].item() > 0) is second_batch_uses_clusters
        model.on_epoch_start(epoch=1)  # a refresh brings them back for one batch
        assert model.loss_terms(face, voice, video)["prototype"].item() > 0


def test_refresh_schedule_and_validation() -> None:
    model = CMPC(params(start_epoch=3, every_epochs=2), num_videos=8, dim=4, seed=0)
    for epoch in range(8):
        model.on_epoch_start(epoch=epoch)
    assert int(model.refreshes) == 3  # epochs 3, 5, 7
    with pytest.raises(ValueError, match="cannot exceed"):
        CMPC(params(clusters=(2, 9)), num_videos=8, dim=4, seed=0)
    with pytest.raises(ValueError, match="greater than 0"):
        params(tau=0.0)
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        params(clusters=(1, 3))


def test_refresh_clusters_each_memory_by_the_formulas() -> None:
    """The refreshed buffers, re-derived from the memory alone: each centroid is the normalised
    mean of its members (k-means converges on 8 rows), each row sits in its nearest cluster, and
    φ follows the formula from the members' distances to their cluster mean."""
    model = clustered_model()
    for m, bank in (("face", model.memory_face), ("voice", model.memory_voice)):
        x = bank.memory
        for r, k in enumerate(model.params.clusters):
            cent, phi, assign = model.clusters(m, r)
            raw = []
            for c in range(k):
                members = x[assign == c]
                assert len(members), "faiss left a cluster empty"
                mean = members.mean(0)
                assert torch.allclose(cent[c], mean / mean.norm(), atol=1e-5)
                d = (members - mean).norm(dim=1)
                raw.append(
                    float(d.mean()) / math.log(len(members) + 10) if len(members) > 1 else None
                )
            means = torch.stack([x[assign == c].mean(0) for c in range(k)])
            assert torch.equal(torch.cdist(x, means).argmin(1), assign)
            top = max(v for v in raw if v is not None)
            full = torch.tensor([top if v is None else v for v in raw], dtype=torch.float64)
            lo, hi = full.quantile(torch.tensor([0.1, 0.9], dtype=torch.float64)).tolist()
            clipped = full.clamp(lo, hi)
            assert phi.tolist() == pytest.approx(
                (0.2 * clipped / clipped.mean()).tolist(), rel=1e-4
            )


@pytest.mark.parametrize("clusters", [(2, 3), (3,), (2, 3, 4)])
def test_published_code_matches_the_released_formulas(clusters: tuple[int, ...]) -> None:
    model = clustered_model(published_code=True, clusters=clusters)
    model.eval()
    face, voice, video = batch()
    got = model.loss_terms(face, voice, video)["loss"]
    want = plain_loop_cmpc_released(model, face.tolist(), voice.tolist(), video.tolist())
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=0.0)
    # The un-normalised centroids the released ρ uses are shorter than the unit prototypes.
    for m in ("face", "voice"):
        for r in range(len(clusters)):
            assert (model.member_means(m, r).norm(dim=1) < 1 - 1e-6).any()


def test_published_code_prototype_term_closed_form() -> None:
    """With every φ equal the rearranged columns do not matter, so the released prototype term is
    the paper's per-granularity terms l_r folded as ((l_1 / 4) + l_2) / 4."""
    model = clustered_model(published_code=True)
    _, voice, video = batch()
    a = torch.nn.functional.normalize(voice, dim=1)
    per_r = []
    for r in range(2):
        cent, phi, assign = model.clusters("face", r)
        phi.fill_(0.25)
        k = assign[video]
        per_r.append(
            torch.nn.functional.cross_entropy(
                a @ cent[k].T / 0.25, torch.arange(6), reduction="none"
            )
        )
    got = model.prototype_contrast(voice, "face", video)
    torch.testing.assert_close(got, (per_r[0] / 4 + per_r[1]) / 4)


def test_published_code_flag_changes_the_loss() -> None:
    face, voice, video = batch()
    paper, released = clustered_model(), clustered_model(published_code=True)
    paper.eval()
    released.eval()
    for name in ("face", "voice"):  # one clustering for both modes
        for r in range(2):
            for got, want in zip(released.clusters(name, r), paper.clusters(name, r), strict=True):
                assert torch.equal(got, want)
    lp = paper.loss_terms(face, voice, video)["loss"].item()
    lr = released.loss_terms(face, voice, video)["loss"].item()
    assert lp == pytest.approx(
        plain_loop_cmpc(paper, face.tolist(), voice.tolist(), video.tolist()), rel=1e-9
    )  # flag off: the paper, unchanged
    assert lr != pytest.approx(lp, rel=1e-3) and lr != pytest.approx(2 * lp, rel=1e-3)
    # Each part on its own differs too: prototypes only (the /4, the φ columns, the sum) and
    # recalibration only (the un-normalised centroids in ρ, the sum).
    for kw in (dict(recalibration=False), dict(prototypes=False)):
        p_off, p_on = clustered_model(**kw), clustered_model(published_code=True, **kw)
        a = p_off.loss_terms(face, voice, video)["loss"].item()
        b = p_on.loss_terms(face, voice, video)["loss"].item()
        assert b != pytest.approx(2 * a, rel=1e-4)
    # Before the first clustering the released loss is the sum of both directions: 2 × cid.
    fresh = CMPC(params(published_code=True), num_videos=8, dim=4, seed=0).double()
    cid = CID(CidSection(tau=0.3))(face, voice)["loss"]
    torch.testing.assert_close(fresh.loss_terms(face, voice, video)["loss"], 2 * cid)


def test_single_granularity_clusters_the_middle_k_only() -> None:
    """``multi_granularity: false``: one k-means per modality at the middle K of ``clusters``, and
    the loss is the paper's with R = 1 (the plain loop over that one granularity)."""
    model = clustered_model(clusters=(2, 3, 4), multi_granularity=False)
    assert model.ks == (3,) and model.params.granularities == [3]
    cent, _, assign = model.clusters("face", 0)
    assert cent.shape == (3, 4) and int(assign.max()) <= 2
    assert not hasattr(model, "face_centroids_1")
    model.eval()
    face, voice, video = batch()
    got = model.loss_terms(face, voice, video)["loss"].item()
    assert got == pytest.approx(
        plain_loop_cmpc(model, face.tolist(), voice.tolist(), video.tolist()), rel=1e-9
    )
    multi = clustered_model(clusters=(2, 3, 4)).eval()
    assert multi.ks == (2, 3, 4)
    assert multi.loss_terms(face, voice, video)["loss"].item() != pytest.approx(got, rel=1e-6)


def test_every_addition_off_trains_as_cid(tmp_path: Path) -> None:
    """CMPC with prototypes, recalibration off (whatever the granularities) trains to cid's
    weights bit for bit: the same code path, no k-means run."""
    from tests.test_registry import SEED, small_params
    from tests.test_train import toy_pairs

    torch.set_num_threads(1)
    base = small_params()
    off = base.cmpc.model_copy(
        update=dict(
            prototypes=False, recalibration=False, multi_granularity=False, tau=base.cid.tau
        )
    )
    params = base.model_copy(update={"cmpc": off})
    data = toy_pairs()
    _, (enc_c, hist_c, _) = train_method("cmpc", params, data, SEED, tmp_path / "c", CPU)
    _, (enc_i, hist_i, _) = train_method("cid", params, data, SEED, tmp_path / "i", CPU)
    assert [h["loss"] for h in hist_c] == [h["loss"] for h in hist_i]
    for k, v in enc_i.state_dict().items():
        assert torch.equal(v, enc_c.state_dict()[k]), k
