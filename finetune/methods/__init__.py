"""METHODS: the closed registry of adaptation methods (name -> Method).

Adding a method is one entry here plus its module (config class + Method subclass): the recipe
schema's union, the option tables, `compare`'s learning rates, the model card, `merge`'s
messages, the guards and the tests all read this registry. Importing this package must not
import torch: `finetune validate` asks the methods which families/tasks they serve.
"""

from __future__ import annotations

from finetune.methods.adalora import AdaLoraMethod
from finetune.methods.base import GROUPS, Method, MethodContext
from finetune.methods.bitfit import BitFitMethod
from finetune.methods.bottleneck import HoulsbyMethod, PfeifferMethod
from finetune.methods.fourier import FourierFTMethod
from finetune.methods.full import FullMethod
from finetune.methods.lycoris import LoHaMethod, LoKrMethod
from finetune.methods.norms import LNTuningMethod
from finetune.methods.orthogonal import BOFTMethod, HRAMethod, OFTMethod
from finetune.methods.peft_methods import (
    DoraMethod,
    IA3Method,
    LoraMethod,
    PrefixMethod,
    PromptMethod,
    RsLoraMethod,
)
from finetune.methods.prompt_learning import PTuningMethod
from finetune.methods.shared_bases import RandLoraMethod, VBLoraMethod, VeraMethod
from finetune.methods.zero_shot import NoneMethod

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        FullMethod(),
        LoraMethod(),
        DoraMethod(),
        RsLoraMethod(),
        IA3Method(),
        PrefixMethod(),
        PromptMethod(),
        HoulsbyMethod(),
        PfeifferMethod(),
        BitFitMethod(),
        LoHaMethod(),
        LoKrMethod(),
        VeraMethod(),
        AdaLoraMethod(),
        RandLoraMethod(),
        VBLoraMethod(),
        FourierFTMethod(),
        OFTMethod(),
        BOFTMethod(),
        HRAMethod(),
        LNTuningMethod(),
        PTuningMethod(),
        NoneMethod(),
    )
}


def mergeable_names() -> list[str]:
    """Methods whose weights fold into the base model (for `merge`'s messages and the docs)."""
    return [name for name, method in METHODS.items() if method.mergeable]


def group_names(group: str) -> list[str]:
    """The registered methods of one group (`compare --methods lora-family`), in order."""
    return [name for name, method in METHODS.items() if method.group == group]


__all__ = ["GROUPS", "METHODS", "Method", "MethodContext", "group_names", "mergeable_names"]
