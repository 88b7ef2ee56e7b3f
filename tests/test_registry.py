"""The method registry: training through it equals calling the method classes directly, bit for
bit; an unknown name is refused with the known ones; a method added the README's way trains."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline.params import CidSection, Params, TrainParams, load_params
from pipeline.train.loop import Encoders, TrainConfig, train
from pipeline.train.methods import bipseudo
from pipeline.train.methods.bipseudo import BiPseudo
from pipeline.train.methods.cid import CID
from pipeline.train.methods.cmpc import CMPC
from pipeline.train.methods.common import info_nce_loss
from pipeline.train.methods.registry import (
    METHODS,
    Method,
    MethodSetupError,
    UnknownMethodError,
    lookup,
    train_method,
)
from pipeline.train.methods.wen2021 import Wen2021
from pipeline.train.pairs import PairData
from tests.test_train import toy_match_accuracy, toy_pairs

ROOT = Path(__file__).resolve().parents[1]
SEED = 7


def small_params() -> Params:
    """params.yaml with a toy-sized training, clustering from epoch 1 and a re-weighting
    schedule that switches identities off within wen2021's first phase."""
    p = load_params(ROOT / "params.yaml")
    t = p.train.model_copy(
        update=dict(
            epochs=2, batch_size=16, lr=3e-3, weight_decay=0.0, embed_dim=16,
            face_encoder="face_cnn", voice_encoder="voice_cnn", face_size_px=16, voice_frames=24,
        )
    )  # fmt: skip
    small = dict(clusters=[4, 8], start_epoch=1, every_epochs=1, kmeans_iters=10)
    return p.model_copy(
        update=dict(
            train=t,
            cmpc=p.cmpc.model_copy(update=small),
            bipseudo=p.bipseudo.model_copy(update=small),
            wen2021=p.wen2021.model_copy(
                update=dict(reweight_epochs=2, warmup_steps=2, every_steps=1)
            ),
        )
    )


def direct(
    name: str, params: Params, data: PairData, state: Path
) -> tuple[Encoders, list[dict[str, float]], dict[str, float]]:
    """The methods called by hand, as the training stage did before the registry."""
    t, dev = params.train, torch.device("cpu")

    def make() -> torch.nn.Module:
        torch.manual_seed(SEED)
        if name == "cid":
            return CID(params.cid)
        if name == "wen2021":
            return Wen2021(params.wen2021, len(data.identities), t.embed_dim)
        if name == "cmpc":
            return CMPC(params.cmpc, len(data.videos), t.embed_dim, SEED)
        return BiPseudo(params.bipseudo, len(data), t.embed_dim, SEED)

    method = make()
    cfg = TrainConfig(
        t.epochs, t.batch_size, t.lr, t.weight_decay, t.embed_dim, t.face_encoder,
        t.voice_encoder, t.voice_frames, SEED,
        head=bipseudo.head(params.bipseudo) if name == "bipseudo" else "none",
    )  # fmt: skip
    section = getattr(params, name)
    if isinstance(method, Wen2021):
        rw = replace(cfg, epochs=params.wen2021.reweight_epochs)
        train(data, method, section, rw, state / "reweight", dev)
        weights = method.weights.detach().clone()
        kept = round(float((weights > 0).float().mean()), 4)
        main = make()
        assert isinstance(main, Wen2021)
        main.freeze(weights)
        enc, hist = train(data, main, (section, weights.tolist()), cfg, state / "main", dev)
        return enc, hist, {"identities_kept": kept}
    enc, hist = train(data, method, section, cfg, state / "main", dev)
    return enc, hist, {}


@pytest.mark.parametrize("name", ["cid", "wen2021", "cmpc", "bipseudo"])
def test_the_registry_trains_each_method_as_a_direct_call(name: str, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    params, data = small_params(), toy_pairs()
    cfg, (enc, hist, extra) = train_method(
        name, params, data, SEED, tmp_path / "registry", torch.device("cpu")
    )
    enc2, hist2, extra2 = direct(name, params, data, tmp_path / "direct")
    assert hist == hist2 and extra == extra2
    assert cfg.head == ("shared_residual" if name == "bipseudo" else "none")
    for k, val in enc2.state_dict().items():
        assert torch.equal(val, enc.state_dict()[k]), k
    phases = sorted(p.name for p in (tmp_path / "registry").iterdir())
    assert phases == (["main", "reweight"] if name == "wen2021" else ["main"])
    if name == "wen2021":
        assert 0 < extra["identities_kept"] < 1  # the first phase switched identities off


def test_another_seed_trains_other_weights(tmp_path: Path) -> None:
    """The seed reaches initialisation and batches: what makes seeds a dimension worth having."""
    torch.set_num_threads(1)
    params, data = small_params(), toy_pairs()
    dev = torch.device("cpu")
    _, (a, hist_a, _) = train_method("cid", params, data, SEED, tmp_path / "a", dev)
    _, (b, hist_b, _) = train_method("cid", params, data, SEED + 1, tmp_path / "b", dev)
    assert hist_a != hist_b
    assert any(not torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_every_method_of_params_has_an_entry_and_a_section() -> None:
    params = load_params(ROOT / "params.yaml")
    assert {m.name for m in METHODS} >= set(params.methods)
    for m in METHODS:
        assert getattr(params, m.section) is not None


def test_an_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(UnknownMethodError, match="unknown method 'nope'; known methods: cid, "):
        lookup("nope")


def test_a_section_that_does_not_fit_the_data_is_a_setup_error(tmp_path: Path) -> None:
    params = small_params()
    params = params.model_copy(update={"cmpc": params.cmpc.model_copy(update={"clusters": [99]})})
    with pytest.raises(MethodSetupError, match="cannot exceed"):
        train_method("cmpc", params, toy_pairs(), SEED, tmp_path, torch.device("cpu"))


# A method added the README's way: a loss module with a builder, a params section, one entry.


class Cid2Section(CidSection):
    """The new method's section (in pipeline/params.py, with a field of ``Params``)."""


class Cid2(torch.nn.Module):
    def __init__(self, params: Cid2Section) -> None:
        super().__init__()
        self.params = params

    def forward(self, face: torch.Tensor, voice: torch.Tensor, batch: object) -> dict:
        loss = info_nce_loss(face, voice, self.params.tau)
        return {"loss": loss, "instance": loss.detach()}


def build_cid2(params: Cid2Section, train: TrainParams, data: PairData, seed: int) -> Cid2:
    return Cid2(params)


class ParamsWithCid2(Params):
    cid2: Cid2Section


def test_a_method_added_the_readme_way_trains(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    base = small_params()
    params = ParamsWithCid2.model_validate({**base.model_dump(), "cid2": {"tau": 0.2}})
    methods = [*METHODS, Method("cid2", "cid2", SimpleNamespace(build=build_cid2))]
    data = toy_pairs()
    _, (enc, hist, extra) = train_method(
        "cid2", params, data, SEED, tmp_path, torch.device("cpu"), methods=methods
    )
    assert isinstance(enc, Encoders) and len(hist) == base.train.epochs and extra == {}
    assert (tmp_path / "main" / "checkpoint.pt").is_file()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    # ... and is scored the way the evaluation scores every method (trials and metric functions).
    acc = toy_match_accuracy(enc, data, 500, SEED)
    assert acc is not None and 0.0 <= acc <= 1.0
    with pytest.raises(UnknownMethodError):
        lookup("cid2")  # registered for this call only
