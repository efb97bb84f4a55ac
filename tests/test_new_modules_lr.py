"""`train.new_modules_lr`: newly initialised modules get their own rate, for every method, with
the decay rule kept (decay / no-decay x backbone / new)."""

from __future__ import annotations

import pytest
import torch

from finetune.recipe.sections import TrainConfig
from finetune.train.optim import build_optimizer, new_modules_lr, param_groups


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.classifier = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(torch.relu(self.encoder(x))))


def groups_by_name(model, cfg, new):
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        ({names[id(p)] for p in g["params"]}, g["lr"], g["weight_decay"])
        for g in param_groups(model, cfg, new)
    ]


def test_head_group_gets_new_modules_lr_and_keeps_decay_rule():
    cfg = TrainConfig(lr=5e-5, new_modules_lr=3e-3, weight_decay=0.01)
    groups = groups_by_name(Tiny(), cfg, ["classifier"])
    assert ({"classifier.weight"}, 3e-3, 0.01) in groups
    assert ({"classifier.bias"}, 3e-3, 0.0) in groups
    assert ({"encoder.weight"}, 5e-5, 0.01) in groups
    assert ({"encoder.bias", "norm.weight", "norm.bias"}, 5e-5, 0.0) in groups
    # the optimizer starts from these rates (the scheduler scales each group's own)
    optimizer = build_optimizer(Tiny(), cfg, ["classifier"])
    assert sorted(g["lr"] for g in optimizer.param_groups) == [5e-5, 5e-5, 3e-3, 3e-3]


def test_default_is_max_of_lr_and_3e3():
    assert new_modules_lr(TrainConfig(lr=5e-5)) == 3e-3
    assert new_modules_lr(TrainConfig(lr=3e-2)) == 3e-2  # prompt tuning's rate is kept
    assert new_modules_lr(TrainConfig(lr=5e-5, new_modules_lr=5e-5)) == 5e-5  # off


def test_peft_modules_to_save_copy_is_matched_by_new_modules():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        Tiny(), LoraConfig(r=2, target_modules=["encoder"], modules_to_save=["classifier"])
    )
    cfg = TrainConfig(lr=2e-3, new_modules_lr=1e-2)
    groups = groups_by_name(model, cfg, ["classifier"])
    new = [names for names, lr, _ in groups if lr == 1e-2]
    assert new and all("modules_to_save" in n for names in new for n in names)
    backbone = [n for names, lr, _ in groups if lr == 2e-3 for n in names]
    assert backbone and all("lora_" in n for n in backbone)


@pytest.mark.parametrize("head_lr, faster", [(1e-2, True), (None, False)])
def test_head_learns_faster_with_its_own_rate(head_lr, faster):
    """The same data and steps: the head moves ~lr_head/lr further (Adam's steps scale with lr)."""

    def head_shift(cfg: TrainConfig) -> float:
        model = Tiny()
        start = model.classifier.weight.detach().clone()
        optimizer = build_optimizer(model, cfg, ["classifier"])
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            x = torch.randn(16, 8, generator=gen)
            y = torch.randint(0, 4, (16,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return float((model.classifier.weight.detach() - start).abs().mean())

    off = head_shift(TrainConfig(lr=1e-4, new_modules_lr=1e-4))
    shift = head_shift(TrainConfig(lr=1e-4, new_modules_lr=head_lr or 1e-4))
    assert (shift > 20 * off) is faster
